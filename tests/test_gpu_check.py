"""
bench/gpu_check.sh without a GPU: its DRY=1 mode runs the same steps (preflight with a Triton launch in the
interpreter, pytest files, one loss benchmark process per case, the training smoke run under torchrun, the
bench_step run, the summary) on this CPU with tiny fp32 shapes, so the control flow, the flags it passes and the
JSON it writes (and the README section bench/gpu_report.py makes from it) are checked here before the script
ever meets a GPU.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow   # subprocess, torchrun or compile runs: pytest -m "not slow" leaves them out

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.sh")
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")


def run_script(tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "CASES", "TESTS_GPU", "SMOKE", "STEP")}
    e.update(DRY="1", OUT=str(tmp_path), PYTHON=sys.executable, LIGER="0", **env)
    return subprocess.run(["bash", SCRIPT], env=e, cwd=ROOT, capture_output=True, text=True, timeout=600)


def summary_of(tmp_path):
    (path,) = summary_path(tmp_path)
    return json.loads(path.read_text())


def summary_path(tmp_path):
    # gpu_check_dry-cpu_<date>.json; each step's own JSON has a second suffix (.preflight.json, .smoke.json, ...)
    return [p for p in tmp_path.glob("gpu_check_dry-cpu_*.json") if p.name.count(".") == 1]


@needs_bash
def test_script_parses():
    r = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_flag_passed_to_bench_loss_exists():
    # including the SWEEP=1 flags, which the dry run below does not reach
    text = open(SCRIPT).read().replace("\\\n", " ")
    calls = re.findall(r"bench/bench_loss\.py([^\n]*)", text)
    flags = {f for c in calls for f in re.findall(r"(--[A-Za-z_]+)", c)}
    assert {"--device", "--dtype", "--N", "--V", "--H_s", "--H_t", "--repeats", "--contenders", "--out"} <= flags
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_loss.py"), "--help"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    missing = [f for f in flags if not re.search(rf"{f}\b", r.stdout)]
    assert not missing, f"gpu_check.sh passes flags bench_loss.py does not define: {missing}"


def test_no_bare_python_call():
    # a fresh GPU machine may have only python3: every call goes through $PY (PYTHON, else python3, else python)
    heredoc = False
    for i, line in enumerate(open(SCRIPT), 1):
        if heredoc:   # the Python programs fed to "$PY" - <<'EOF'
            heredoc = line.strip() != "EOF"
            continue
        heredoc = "<<'EOF'" in line
        code = re.sub(r'"[^"$]*"', '""', line.split("#", 1)[0])   # strings without expansions are text
        if "command -v" in code or re.search(r"PY=python3?\b", code):
            continue
        assert not re.search(r"(^|[\s;|&(])python3?\s", code), f"line {i} calls python directly: {line.strip()}"


@needs_bash
def test_dry_run_end_to_end(tmp_path):
    r = run_script(tmp_path, CASES="512:32", N="128", REPEATS="5", SMOKE_INPUTS=str(tmp_path / "smoke_inputs"),
                   # (a cheap pytest target: what is checked is that it runs, is counted and reported)
                   TESTS_GPU="tests/test_gpu_check.py::test_script_parses")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    s = summary_of(tmp_path)
    assert s["dry_run"] and s["torch"] and s["date"] and s["device"] == "cpu (dry run)"
    assert "triton" in s and s["budget_s"] == 900 and 0 < s["elapsed_s"] <= s["budget_s"]
    assert set(s["tf32_override_env"]) == {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "NVIDIA_TF32_OVERRIDE"}
    assert s["triton_launch"] is True   # the one-line kernel, in Triton's interpreter here
    assert {t: v["result"] for t, v in s["tests"].items()} == {"test_gpu_check--test_script_parses": "passed"}
    assert s["tests_passed"] and all(v["passed"] == 1 for v in s["tests"].values())
    names = [st["name"] for st in s["steps"]]
    assert names[0] == "preflight" and all(st["status"] == "ok" for st in s["steps"]), s["steps"]
    assert names[-3:] == ["smoke_prepare", "smoke", "bench_step"], names
    # the smoke run: FSDP trained to 20, resumed to 30, evaluated; DDP trained and evaluated; memory vs plan.py
    smoke = s["smoke"]
    assert smoke["ok"] and [st["name"] for st in smoke["steps"]] == [
        "fsdp train", "fsdp resume", "fsdp eval", "ddp train", "ddp eval"]
    assert smoke["runs"]["fsdp"]["step"] == 30 and smoke["runs"]["ddp"]["step"] == 20
    assert all(r["plan_memory_bytes"] > 0 and r["peak_memory_bytes"] is None for r in smoke["runs"].values())
    # bench_step: every contender timed, through the training step's own loss
    assert set(s["bench_step"]["results"]) == {"student step", "teacher fwd", "KD step (fused)", "KD step (reference)"}
    # the README's GPU section, from this JSON
    (path,) = summary_path(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- gpu_check:begin -->\nold\n<!-- gpu_check:end -->\ntail\n")
    g = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_report.py"), str(path), "--readme", str(readme)],
                       capture_output=True, text=True, cwd=ROOT)
    assert g.returncode == 0, g.stderr
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- gpu_check:end -->\ntail\n") and "DRY RUN" in text
    assert "| 128 × 512 × 32 |" in text and "Training smoke run" in text and "KD overhead ratio" in text
    (case,) = s["cases"]
    assert (case["N"], case["V"], case["H_s"], case["H_t"], case["dtype"]) == (128, 512, 32, 32, "float32")
    assert case["fused_impl"] == "torch"   # no triton contender on a CPU: skipped, with its reason
    assert case["skipped"]["triton"] == "CUDA only" and case["failed"] == {}
    assert case["fused_pct_of_floor"] > 0 and len(case["fused_pct_of_floor_min_max"]) == 2
    assert 0 < case["fused_memory_fraction_of_reference"] and isinstance(case["meets_goal"], bool)
    assert case["fused_pct_of_bf16_peak"] is None   # no bf16 peak on a CPU
    per_case = json.loads(open(case["json"]).read())
    cfg = per_case["config"]
    assert (cfg["N"], cfg["V"], cfg["H_s"], cfg["H_t"], cfg["repeats"], cfg["device"]) == (128, 512, 32, 32, 5, "cpu")
    torch_r = per_case["results"]["torch"]
    assert len(torch_r["floor_fraction_per_round"]) == 5 and torch_r["floor_fraction_spread"]["min"] > 0
    assert per_case["targets"]["torch"]["rounds"] == 5 and "meets_floor_target" in per_case["targets"]["torch"]


@needs_bash
def test_failures_and_budget_are_recorded(tmp_path):
    # a test target that does not exist fails its step (and the script), and the run goes on to the summary
    r = run_script(tmp_path / "a", CASES="", TESTS_GPU="tests/no_such_test_file.py", SMOKE="0", STEP="0")
    assert r.returncode == 1, r.stdout[-3000:]
    s = summary_of(tmp_path / "a")
    assert s["tests"]["no_such_test_file"]["result"] == "FAILED" and not s["tests_passed"]
    # no budget left: every step is skipped and said to be, the summary is still written, the exit is non-zero
    r = run_script(tmp_path / "b", BUDGET="0", CASES="512:32", SMOKE_INPUTS=str(tmp_path / "si"))
    assert r.returncode == 1
    s = summary_of(tmp_path / "b")
    assert s["steps"] and all(st["status"] == "skipped" for st in s["steps"])
    assert s["cases"][0].get("fused_pct_of_floor") is None and not s["all_cases_measured"]
