"""Every shipped config plans cleanly: `python train.py <config> --dry_run=True` for each file under
configs/ (the paper's grid, the GPT-2 family, the tiny and headline configs), and for each distinct kind
of run the grids in configs/grids/ expand to, on the number of GPUs its Slurm settings ask for, so the
batch divides evenly over them. Dry runs build the models on the meta device: no data, no memory.

The dry runs execute train.py itself with the argv a user would type, many per Python process (runpy),
so importing torch is paid once per process rather than once per config."""

import glob
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# argv list in (JSON on stdin), one result per argv out: the exit code and what train.py printed
DRIVER = r"""
import contextlib, io, json, os, runpy, sys
results = []
for argv, world_size in json.load(sys.stdin):
    os.environ["WORLD_SIZE"] = str(world_size)   # the plan's process count
    sys.argv = ["train.py", *argv]
    out = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path("train.py", run_name="__main__")
    except SystemExit as e:
        code = e.code
    results.append({"argv": argv, "code": code, "out": out.getvalue()})
sys.stdout.write(json.dumps(results))
"""


def dry_runs(jobs, processes=2):
    """[(argv, world_size)] -> results, over a few driver processes in parallel."""
    chunks = [jobs[i::processes] for i in range(processes) if jobs[i::processes]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)

    def run(chunk):
        proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(chunk), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    with ThreadPoolExecutor(len(chunks)) as pool:
        return [r for rs in pool.map(run, chunks) for r in rs]


def check(results):
    bad = [f"{' '.join(r['argv'])}: exit {r['code']}\n{r['out'][-1500:]}" for r in results
           if r["code"] not in (0, None) or "plan for" not in r["out"] or "not divisible" in r["out"]]
    assert not bad, "\n\n".join(bad)


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True))
CONFIGS = [os.path.relpath(p, ROOT) for p in CONFIGS if os.sep + "grids" + os.sep not in p]
GRIDS = sorted(glob.glob(os.path.join(ROOT, "configs", "grids", "*.py")))
# values that change what a run computes but not how it is planned; checked directly below
LOSS_KEYS = ("alpha", "temperature", "top_k", "label_smoothing")


def config_jobs():
    # the tiny byte-level configs are single-process CPU runs; everything else plans for one 8-GPU node
    return [([c, "--dry_run=True"], 1 if sweep.exec_file(c).get("tokenizer") == "bytes" else 8) for c in CONFIGS]


def grid_jobs():
    """One dry run per distinct kind of run in every grid: runs that differ only in seed, folders, token budget
    or the loss settings plan alike, so one of each is enough."""
    jobs, seen = [], set()
    for path in GRIDS:
        for run in sweep.expand(sweep.load_grid(path)):
            o = {k: v for k, v in run["overrides"].items()
                 if k not in ("out_dir", "teacher_ckpt", "seed", "train_tokens") + LOSS_KEYS}
            world = 1 if o.get("device") == "cpu" else run["slurm"]["nodes"] * run["slurm"]["gpus_per_node"]
            key = json.dumps([run["config"], o, world, run["overrides"].get("alpha", 0) > 0], sort_keys=True)
            if key not in seen:
                seen.add(key)
                jobs.append(([run["config"], *sweep.train_args(run)[2:-1], "--dry_run=True"], world))
    return jobs


@pytest.fixture(scope="module")
def planned():
    """All dry runs at once (torch is imported once per driver process), split back into configs and grids."""
    cj, gj = config_jobs(), grid_jobs()
    results = dry_runs(cj + gj)
    by_argv = {json.dumps(r["argv"]): r for r in results}
    return [by_argv[json.dumps(a)] for a, _ in cj], [by_argv[json.dumps(a)] for a, _ in gj]


def test_every_config_dry_runs(planned):
    results, _ = planned
    assert any(c.startswith(os.path.join("configs", "paper")) for c in CONFIGS)
    assert any(c.startswith(os.path.join("configs", "gpt2")) for c in CONFIGS)
    check(results)
    assert len(results) == len(CONFIGS)
    # the paper's batch: ~2.1M tokens a step of 8,192-token sequences
    for r in results:
        if "paper" in r["argv"][0]:
            assert "tokens/step 2,097,152 = 8 × " in r["out"] and "context 8192" in r["out"], r["argv"]


def test_every_grid_expands_to_runs_that_dry_run(planned):
    _, results = planned
    assert len(GRIDS) >= 8 and len(results) > 20
    check(results)


@pytest.mark.parametrize("path", GRIDS, ids=os.path.basename)
def test_grid_runs_are_consistent(path):
    from distill_loss import check_kd_args
    runs = sweep.expand(sweep.load_grid(path))
    by_name = {r["name"]: r for r in runs}
    assert runs and len(by_name) == len(runs)
    for r in runs:
        o = r["overrides"]
        check_kd_args(o.get("alpha", 0.0), o.get("temperature", 1.0))  # what train.py checks first
        assert 0 <= o.get("top_k", 0.0) and 0 <= o.get("label_smoothing", 0.0) < 1
        if r["kind"] == "teacher":
            assert r["seed"] == 42, r["name"]  # the paper's teacher seed
        elif r["deps"]:
            teacher = by_name[r["deps"][0]]
            assert o["teacher_ckpt"] == os.path.join(teacher["out_dir"], "ckpt.pt")
            assert o["teacher_model"] == teacher["model"]
            assert 0 < o["alpha"] <= 1
        else:
            assert o["alpha"] == 0 and o["teacher_ckpt"] == ""
