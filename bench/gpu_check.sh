#!/usr/bin/env bash
# The first minutes on a lent GPU, in one script, for a machine with one CUDA GPU (written for an H100/H200).
# It installs nothing and uses whatever torch and triton are there. In order, each step under a timeout clamped
# to what is left of BUDGET (a step with under MIN_STEP s left is skipped and marked so; one hang costs its own
# timeout, never the run):
#   0. preflight, ~20 s, fail fast: nvidia-smi; torch, triton, the device, the torch APIs the CUDA path needs
#      (bf16 x bf16 -> fp32 GEMM via torch.mm(out_dtype=), addmm into fp32); a one-line Triton kernel JIT-compiled
#      and launched (Triton needs a C compiler and Python headers at its first launch); the TF32 override
#      variables (TORCH_ALLOW_TF32_CUBLAS_OVERRIDE, NVIDIA_TF32_OVERRIDE) as this machine sets them;
#   1. the GPU tests: tests/test_fused_kd.py on the GPU (the Triton kernel against the reference, fp32 pinned
#      to IEEE by tests/conftest.py, and bf16). No CPU-only tests here: they ran before the GPU was lent;
#   2. loss benchmarks, bf16, N=16384: V=128,256 with H_s = H_t = 4,096 and 1,024, and GPT-2's real shape,
#      V=50,257 with H=768 (the fused loss vs the full-logit reference vs the four matmuls alone), one process
#      per case, ~10-15 s each; Liger-Kernel beside them if installed (LIGER=0 skips it);
#   3. the training smoke run (bench/smoke_run.py, ~90 s): train.py under torchrun with one GPU, FSDP then
#      DDP, compile=True, the fused loss and a teacher, checkpoints, a resume, eval.py, a clean exit; peak
#      memory (max_memory_allocated) beside plan.py's estimate. Its tiny data and teacher are made on a CPU
#      beforehand (python bench/smoke_prepare.py bench/smoke_inputs) and carried (the folder is git-ignored:
#      name it in whatever copies the work tree over, e.g. a runner's carry list); made here if missing;
#   4. one training-step benchmark, 1B student / 160M teacher (bench/bench_step.py: MFU and the KD overhead,
#      through train_step.micro_batch_loss, the code train.py runs);
#   5. with SWEEP=1 only: the kernel's launch shape and chunk size on one case.
# Everything lands in one JSON, $OUT/gpu_check_<device>_<date>.json (plus a JSON and a log per step), from which
# `python bench/gpu_report.py THAT.json --readme README.md` writes the README's GPU section.
#
# Knobs (environment): OUT, PYTHON, BUDGET (s, default 420; DRY=1: 900), REPEATS (rounds, default 7), CASES ("V:H ..."),
#   N, SMOKE_INPUTS, SMOKE_COMPILE, SMOKE_MODEL, SMOKE_TIMEOUT, SMOKE=0 / STEP=0 (skip steps 3 / 4), STEP_ARGS (bench_step.py's arguments),
#   TESTS_GPU (pytest targets; empty = none), LIGER=0, SWEEP=1, and
#   DRY=1: the same sequence on this CPU with tiny shapes in fp32 (N=256, CASES="512:32", the smoke run on CPU
#   without compile unless SMOKE_COMPILE=True, bench_step on the tiny config; results in /tmp/nanokd_gpu_check_dry
#   unless OUT is set), to prove the steps, flags and JSON end to end on a machine without a GPU
#   (tests/test_gpu_check.py runs it).
#   python bench/smoke_prepare.py bench/smoke_inputs && bash bench/gpu_check.sh   # on the GPU machine
#   DRY=1 bash bench/gpu_check.sh                                                # anywhere
#
# API notes (what the CUDA path calls, and since when): torch.mm/addmm(..., out_dtype=torch.float32) with out=
# exist from torch 2.8; addmm with an fp32 `self` and bf16 matrices was fixed for torch 2.10 (pytorch PR 167931),
# and fused_kd._accumulate_fp32 probes it and falls back to an fp32-out GEMM plus an add (the summary records
# which). The kernel compiles for sm_80/sm_90 without spills, with 4-wide vector loads at V=50,257
# (tests/test_triton_compile.py).
set -uo pipefail   # no -e: a failing step is recorded and the next one still runs
cd "$(dirname "$0")/.." || exit 2

DRY=${DRY:-0}
SWEEP=${SWEEP:-0}
if [ "$DRY" = 1 ]; then
  OUT=${OUT:-${TMPDIR:-/tmp}/nanokd_gpu_check_dry}
  DEVICE=cpu; DTYPE=float32
  N=${N:-256}; CASES=${CASES-"512:32"}; REPEATS=${REPEATS:-5}
  MIN_STEP=${MIN_STEP:-5}
  SMOKE_COMPILE=${SMOKE_COMPILE:-False}; SMOKE_MODEL=${SMOKE_MODEL:-tiny-64}
  SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-480}   # five Python processes on a CPU, which may be shared
  STEP_ARGS=${STEP_ARGS-"configs/tiny_student.py --device=cpu --batch_size=2 --block_size=32 --rounds=2 --warmup=1"}
else
  OUT=${OUT:-bench/results}
  DEVICE=cuda; DTYPE=bfloat16
  N=${N:-16384}; CASES=${CASES-"128256:4096 128256:1024 50257:768"}; REPEATS=${REPEATS:-7}
  MIN_STEP=${MIN_STEP:-20}
  SMOKE_COMPILE=${SMOKE_COMPILE:-True}; SMOKE_MODEL=${SMOKE_MODEL:-gpt2-20m}
  SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-180}
  STEP_ARGS=${STEP_ARGS-"configs/student_1b_teacher_160m.py --batch_size=8 --compile=True --rounds=5"}
fi
if [ "$DRY" = 1 ]; then BUDGET=${BUDGET:-900}; elif [ "$SWEEP" = 1 ]; then BUDGET=${BUDGET:-720}; else BUDGET=${BUDGET:-420}; fi
RESERVE=10   # seconds kept for the summary
TESTS_GPU=${TESTS_GPU-tests/test_fused_kd.py}
LIGER=${LIGER:-1}
SMOKE=${SMOKE:-1}   # 0: no smoke run
STEP=${STEP:-1}     # 0: no bench_step
mkdir -p "$OUT"

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif command -v python3 >/dev/null 2>&1; then PY=python3
elif command -v python >/dev/null 2>&1; then PY=python
else echo "gpu_check: no python3 or python on PATH (set PYTHON=...)" >&2; exit 2
fi
if command -v timeout >/dev/null 2>&1; then HAVE_TIMEOUT=1; else HAVE_TIMEOUT=0; echo "gpu_check: no timeout(1): steps run unbounded"; fi
tmo() {   # tmo SECONDS CMD...: CMD under timeout(1) where there is one
  local t=$1
  shift
  if [ "$HAVE_TIMEOUT" = 1 ]; then timeout -k 10 "$t" "$@"; else "$@"; fi
}

day=$(date +%F)
tag=dry-cpu
if [ "$DRY" != 1 ]; then
  tag=$(tmo 60 "$PY" -c "import torch, re; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-') if torch.cuda.is_available() else 'no-cuda')" 2>/dev/null || echo unknown)
fi
prefix="$OUT/gpu_check_${tag}_${day}"
STEPS="$prefix.steps.tsv"
: > "$STEPS"

# run_step NAME WANT_S LOG CMD...: runs CMD under a timeout of min(WANT_S, budget left), output to LOG (and the
# terminal); appends "name<TAB>status<TAB>rc<TAB>seconds<TAB>log" to $STEPS. status: ok, failed, timeout, skipped.
run_step() {
  local name=$1 want=$2 log=$3 left t rc t0 status
  shift 3
  left=$(( BUDGET - SECONDS - RESERVE ))
  if [ "$left" -lt "$MIN_STEP" ]; then
    echo "== $name: skipped, ${left}s of the ${BUDGET}s budget left" | tee "$log"
    printf '%s\tskipped\t-\t0\t%s\n' "$name" "$log" >> "$STEPS"
    return 0
  fi
  t=$(( want < left ? want : left ))
  echo "== $name (timeout ${t}s, ${SECONDS}s elapsed)"
  t0=$SECONDS
  tmo "$t" "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" $(( SECONDS - t0 )) "$log" >> "$STEPS"
  echo "== $name: $status (rc $rc, $(( SECONDS - t0 ))s)"
  return 0
}

echo "== gpu_check: DRY=$DRY device=$DEVICE dtype=$DTYPE N=$N cases=[$CASES] repeats=$REPEATS budget=${BUDGET}s out=$OUT python=$PY"
if command -v nvidia-smi >/dev/null 2>&1 && [ "$DRY" != 1 ]; then
  tmo 15 nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu \
    --format=csv > "$prefix.nvidia-smi.csv" 2>&1 || true
  cat "$prefix.nvidia-smi.csv"
fi
# DRY: the Triton launch in the preflight runs in Triton's CPU interpreter
PRE_INTERPRET=0; [ "$DRY" = 1 ] && PRE_INTERPRET=1

# 0. preflight: versions and the APIs the CUDA path calls; exits 1 (recorded) when the device can't run the benchmark
run_step preflight 60 "$prefix.preflight.log" env DEVICE="$DEVICE" PREFLIGHT_JSON="$prefix.preflight.json" \
    TRITON_INTERPRET="$PRE_INTERPRET" "$PY" - <<'EOF'
import json, os, platform, sys
# as this machine sets them, before anything reads them
tf32_env = {k: os.environ.get(k) for k in ("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "NVIDIA_TF32_OVERRIDE")}
import torch
dev = os.environ["DEVICE"]
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "tf32_override_env": tf32_env, "problems": []}
try:
    import triton
    info["triton"] = triton.__version__
except Exception as e:   # noqa: BLE001
    info["triton"] = None
    info["problems"].append(f"triton not importable: {type(e).__name__}: {e}")
try:
    import liger_kernel  # noqa: F401
    from importlib.metadata import version
    info["liger_kernel"] = version("liger-kernel")
except Exception:   # noqa: BLE001
    info["liger_kernel"] = None
info["top_level_OutOfMemoryError"] = hasattr(torch, "OutOfMemoryError")
if dev == "cuda":
    if not torch.cuda.is_available():
        info["problems"].append("no CUDA device: this script is for a GPU machine (DRY=1 runs it on a CPU)")
    else:
        info["device"] = torch.cuda.get_device_name()
        info["capability"] = list(torch.cuda.get_device_capability())
        info["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        a = torch.randn(64, 32, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(32, 48, device="cuda", dtype=torch.bfloat16)
        try:   # fused_kd._to_fp32_logits: the bf16 GEMM writes its fp32 accumulator (torch >= 2.8)
            out = torch.empty(64, 48, device="cuda")
            torch.mm(a, b, out_dtype=torch.float32, out=out)
            ok = torch.allclose(out, a.float() @ b.float(), rtol=1e-3, atol=1e-3)
            info["mm_out_dtype_fp32"] = bool(ok)
            if not ok:
                info["problems"].append("torch.mm(bf16, bf16, out_dtype=float32) gives wrong numbers")
        except (TypeError, RuntimeError) as e:
            info["mm_out_dtype_fp32"] = False
            info["problems"].append(f"torch {torch.__version__} lacks torch.mm(..., out_dtype=torch.float32, out=) "
                                    f"(torch >= 2.8), which fused_kd's bf16 path needs: {type(e).__name__}: {e}")
        sys.path.insert(0, os.getcwd())
        import fused_kd   # its own probe: addmm into an fp32 accumulator, or the fp32-out GEMM + add fallback
        acc = torch.zeros(32, 48, device="cuda")
        try:
            fused_kd._accumulate_fp32(acc, a.t().contiguous(), torch.randn(64, 48, device="cuda", dtype=torch.bfloat16))
            info["addmm_fp32_accumulate"] = fused_kd._addmm_fp32_ok.get(acc.device)
        except Exception as e:   # noqa: BLE001
            info["addmm_fp32_accumulate"] = None
            info["problems"].append(f"fused_kd._accumulate_fp32 failed: {type(e).__name__}: {e}")
        if not info["triton"]:
            info["problems"].append("no triton: the fused loss would run its torch fallback only")
else:
    info["device"] = "cpu (dry run)"
if info["triton"]:   # one tiny kernel, JIT-compiled and launched: a C compiler and Python headers are needed here
    try:
        import triton
        import triton.language as tl

        @triton.jit
        def add_one(p, n, BLOCK: tl.constexpr):
            offs = tl.arange(0, BLOCK)
            tl.store(p + offs, tl.load(p + offs, mask=offs < n) + 1.0, mask=offs < n)
        x = torch.zeros(8, device=dev)
        add_one[(1,)](x, 8, BLOCK=8)
        info["triton_launch"] = bool((x == 1).all())
        if not info["triton_launch"]:
            info["problems"].append("a one-line Triton kernel ran but gave wrong numbers")
    except Exception as e:   # noqa: BLE001
        info["triton_launch"] = False
        info["problems"].append(f"a one-line Triton kernel failed to compile or launch: {type(e).__name__}: {e}")
print(json.dumps(info, indent=1))
json.dump(info, open(os.environ["PREFLIGHT_JSON"], "w"), indent=1)
for p in info["problems"]:
    print(f"PROBLEM: {p}")
sys.exit(1 if info["problems"] else 0)
EOF
preflight_ok=$(awk -F'\t' '$1 == "preflight" {print $2}' "$STEPS")

if [ "$preflight_ok" = ok ]; then
  # 1. the GPU tests (no CPU-only tests in the GPU's minutes)
  stepname() { basename "$1" | sed 's/\.py//; s/[^A-Za-z0-9_.-]/-/g'; }   # tests/a.py::t -> a--t
  have_pytest=1
  "$PY" -c "import pytest" 2>/dev/null || { have_pytest=0; echo "== tests: pytest is not installed here: tests not run"; }
  for t in $TESTS_GPU; do
    b=$(stepname "$t")
    if [ "$have_pytest" = 1 ]; then
      run_step "pytest:$b" 150 "$prefix.$b.log" "$PY" -m pytest -p no:cacheprovider -rs --junitxml="$prefix.$b.xml" "$t"
    else
      printf '%s\tmissing\t-\t0\t-\n' "pytest:$b" >> "$STEPS"
    fi
  done

  # packed rows: compiled FlexAttention block mask vs dense-mask SDPA, and its speed at 8,192 (GPU only; DRY=1 bench/gpu_check_packing.py runs it here)
  [ "$DRY" = 1 ] || run_step packing 120 "$prefix.packing.log" "$PY" bench/gpu_check_packing.py --out "$prefix.packing.json"

  # 2. the loss benchmarks, one process per case (H_s = H_t = H)
  note="bench/gpu_check.sh DRY=$DRY"
  for c in $CASES; do
    V=${c%%:*}; H=${c##*:}
    run_step "bench:V${V}_H${H}" 75 "$prefix.bench_V${V}_H${H}.log" \
      "$PY" bench/bench_loss.py --device="$DEVICE" --dtype="$DTYPE" --N="$N" --V="$V" --H_s="$H" --H_t="$H" \
      --repeats="$REPEATS" --contenders=reference,triton,torch,floor --note="$note" \
      --out="$OUT/loss_${tag}_${day}_V${V}_H${H}.json"
  done

  # 3. the training smoke run: its inputs made on a CPU beforehand, or here if they were not carried
  SMOKE_INPUTS=${SMOKE_INPUTS:-bench/smoke_inputs}
  if [ "$SMOKE" = 1 ]; then
    if [ ! -f "$SMOKE_INPUTS/teacher/ckpt.pt" ]; then
      run_step smoke_prepare 60 "$prefix.smoke_prepare.log" "$PY" bench/smoke_prepare.py "$SMOKE_INPUTS"
    fi
    run_step smoke "$SMOKE_TIMEOUT" "$prefix.smoke.log" "$PY" bench/smoke_run.py --inputs "$SMOKE_INPUTS" --device="$DEVICE" \
      --compile="$SMOKE_COMPILE" --model="$SMOKE_MODEL" --out="$prefix.smoke.json"
  fi

  # 4. one training step, 1B student / 160M teacher: MFU and the KD overhead
  if [ "$STEP" = 1 ]; then
    # shellcheck disable=SC2086  # (STEP_ARGS is a list of words)
    run_step bench_step 150 "$prefix.bench_step.log" "$PY" bench/bench_step.py $STEP_ARGS --out="$prefix.bench_step.json"
  fi

  # Liger, where installed: its own process per case, after everything of ours has its figures
  if [ "$LIGER" != 0 ] && "$PY" -c "import liger_kernel" 2>/dev/null; then
    for c in $CASES; do
      V=${c%%:*}; H=${c##*:}
      run_step "liger:V${V}_H${H}" 90 "$prefix.liger_V${V}_H${H}.log" \
        "$PY" bench/bench_loss.py --device="$DEVICE" --dtype="$DTYPE" --N="$N" --V="$V" --H_s="$H" --H_t="$H" \
        --repeats="$REPEATS" --contenders=liger,floor --note="$note" \
        --out="$OUT/loss_${tag}_${day}_V${V}_H${H}_liger.json"
    done
  else
    echo "== liger: not installed (or LIGER=0): skipped"
  fi

  # 5. SWEEP=1: launch shape and chunk size on the first case (fused and floor only)
  if [ "$SWEEP" = 1 ]; then
    c=${CASES%% *}; V=${c%%:*}; H=${c##*:}; H_S=$H; H_t=$H
    for bv in 1024 2048 4096; do
      for nw in 4 8 16; do
        run_step "sweep:bv${bv}_nw${nw}" 60 "$prefix.sweep_bv${bv}_nw${nw}.log" \
          "$PY" bench/bench_loss.py --device="$DEVICE" --dtype="$DTYPE" --N="$N" --V="$V" --H_s="$H_S" --H_t="$H_t" \
          --contenders=triton,floor --no_memory --repeats="$REPEATS" --block_v=$bv --num_warps=$nw \
          --out="$OUT/sweep_${tag}_${day}_bv${bv}_nw${nw}.json"
      done
    done
    for cs in 512 1024 2048 4096; do
      run_step "sweep:chunk${cs}" 60 "$prefix.sweep_chunk${cs}.log" \
        "$PY" bench/bench_loss.py --device="$DEVICE" --dtype="$DTYPE" --N="$N" --V="$V" --H_s="$H_S" --H_t="$H_t" \
        --contenders=triton,floor --repeats="$REPEATS" --chunk_size=$cs \
        --out="$OUT/sweep_${tag}_${day}_chunk${cs}.json"
    done
  fi
else
  echo "== preflight did not pass, so no tests or benchmark:"
  grep '^PROBLEM' "$prefix.preflight.log" || tail -n 5 "$prefix.preflight.log"
fi

# the summary: everything above, read back from the step table and the JSON files
SUMMARY="$prefix.json"
STEPS="$STEPS" SUMMARY="$SUMMARY" PREFIX="$prefix" OUTDIR="$OUT" TAG="$tag" DAY="$day" CASES="$CASES" N="$N" \
DTYPE="$DTYPE" DRY="$DRY" BUDGET="$BUDGET" ELAPSED="$SECONDS" "$PY" - <<'EOF'
import datetime, json, os, re, subprocess
E = os.environ
steps = []
for line in open(E["STEPS"]):
    name, status, rc, secs, log = line.rstrip("\n").split("\t")
    steps.append({"name": name, "status": status, "rc": None if rc == "-" else int(rc), "seconds": int(secs), "log": log})
by = {s["name"]: s for s in steps}


def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


pre = load(E["PREFIX"] + ".preflight.json") or {}
tests = {}
for s in steps:
    if not s["name"].startswith("pytest:"):
        continue
    t = dict(s)
    text = open(s["log"]).read() if os.path.exists(s["log"]) else ""
    last = [l for l in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", l)]
    t["summary_line"] = last[-1].strip("= ") if last else None
    for k in ("passed", "failed", "skipped", "error", "errors"):
        m = re.search(rf"(\d+) {k}\b", t["summary_line"] or "")
        t[k] = int(m.group(1)) if m else 0
    try:   # the counts from pytest's junit XML where it wrote one (independent of -q levels and plugins)
        import xml.etree.ElementTree as ET
        root = ET.parse(s["log"][:-len(".log")] + ".xml").getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        t.update(failed=n["failures"], errors=n["errors"], error=0, skipped=n["skipped"],
                 passed=n["tests"] - n["failures"] - n["errors"] - n["skipped"])
        t["summary_line"] = t["summary_line"] or (f"{t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped, "
                                                  f"{t['errors']} errors (junit xml)")
    except (OSError, ValueError, AttributeError, ET.ParseError):
        pass
    t["skip_reasons"] = re.findall(r"^SKIPPED \[\d+\] (.*)$", text, flags=re.M)
    t["result"] = {"ok": "passed", "failed": "FAILED", "timeout": "TIMED OUT", "skipped": "not run (budget)",
                   "missing": "not run (no pytest)"}[s["status"]]
    tests[s["name"][len("pytest:"):]] = t

GOAL = 80.0
cases = []
for c in E["CASES"].split():
    V, H = (int(x) for x in c.split(":"))
    path = os.path.join(E["OUTDIR"], f"loss_{E['TAG']}_{E['DAY']}_V{V}_H{H}.json")
    d = load(path)
    case = {"N": int(E["N"]), "V": V, "H_s": H, "H_t": H, "dtype": E["DTYPE"], "json": path,
            "step": by.get(f"bench:V{V}_H{H}", {}).get("status")}
    if d:
        r = d["results"]
        fused = "triton" if "triton" in r else ("torch" if "torch" in r else None)
        f, fl, ref = r.get(fused), r.get("floor"), r.get("reference")
        case.update({
            "fused_impl": fused, "skipped": d.get("skipped"), "failed": d.get("failed"),
            "fused_time_s": f and f["time_median_s"], "floor_time_s": fl and fl["time_median_s"],
            "reference_time_s": ref and ref["time_median_s"],
            "torch_time_s": r.get("torch", {}).get("time_median_s") if fused == "triton" else None,
            # the headline: floor time / fused time, the median of the per-round ratios
            "fused_pct_of_floor": f and f["floor_fraction_median"] and 100 * f["floor_fraction_median"],
            "fused_pct_of_floor_min_max": f and f["floor_fraction_spread"] and
                [100 * f["floor_fraction_spread"]["min"], 100 * f["floor_fraction_spread"]["max"]],
            "torch_pct_of_floor": (r.get("torch") or {}).get("floor_fraction_median") and
                100 * r["torch"]["floor_fraction_median"],
            "fused_pct_of_bf16_peak": f and f["pct_of_bf16_peak"], "floor_pct_of_bf16_peak": fl and fl["pct_of_bf16_peak"],
            "fused_tflops": f and f["tflops"], "floor_tflops": fl and fl["tflops"],
            "fused_memory_fraction_of_reference": f and f["memory_fraction_of_reference"],
            "fused_peak_extra_gib": f and f["peak_extra_bytes"] and f["peak_extra_bytes"] / 2**30,
            "reference_peak_extra_gib": ref and ref["peak_extra_bytes"] and ref["peak_extra_bytes"] / 2**30,
            "addmm_fp32_accumulate": d.get("addmm_fp32_accumulate"),
        })
        case["meets_goal"] = case["fused_pct_of_floor"] is not None and case["fused_pct_of_floor"] >= GOAL
    lg = load(os.path.join(E["OUTDIR"], f"loss_{E['TAG']}_{E['DAY']}_V{V}_H{H}_liger.json"))
    if lg and "liger" in lg["results"]:
        L = lg["results"]["liger"]
        case.update({"liger_time_s": L["time_median_s"], "liger_pct_of_floor": 100 * L["floor_fraction_median"],
                     "liger_peak_extra_gib": L["peak_extra_bytes"] and L["peak_extra_bytes"] / 2**30})
    elif f"liger:V{V}_H{H}" in by:
        case["liger_step"] = by[f"liger:V{V}_H{H}"]["status"]
    cases.append(case)

try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
except OSError:
    commit = None
measured = [c for c in cases if c.get("fused_pct_of_floor") is not None]
summary = {
    "device": pre.get("device"), "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "dry_run": E["DRY"] == "1", "git_commit": commit,
    "python": pre.get("python"), "torch": pre.get("torch"), "cuda": pre.get("cuda"), "triton": pre.get("triton"),
    "liger_kernel": pre.get("liger_kernel"), "capability": pre.get("capability"), "memory_gib": pre.get("memory_gib"),
    "api": {k: pre.get(k) for k in ("mm_out_dtype_fp32", "addmm_fp32_accumulate", "top_level_OutOfMemoryError")},
    "problems": pre.get("problems"), "tf32_override_env": pre.get("tf32_override_env"),
    "triton_launch": pre.get("triton_launch"),
    "budget_s": int(E["BUDGET"]), "elapsed_s": int(E["ELAPSED"]),
    "tests": {k: {kk: v[kk] for kk in ("result", "summary_line", "passed", "failed", "skipped", "error", "errors",
                                        "seconds", "skip_reasons", "log")} for k, v in tests.items()},
    "tests_passed": bool(tests) and all(t["status"] == "ok" for t in tests.values()),
    "goal": f"fused >= {GOAL:.0f}% of the matmul floor (floor time / fused time, median of per-round ratios); "
            "pct_of_bf16_peak (DESIGN.md's 2·N·V·(H_t+3·H_s)/peak form) beside it",
    "cases": cases,
    "all_cases_measured": len(measured) == len(cases),
    "all_cases_meet_goal": bool(measured) and len(measured) == len(cases) and all(c["meets_goal"] for c in measured),
    "smoke": load(E["PREFIX"] + ".smoke.json"),
    "bench_step": load(E["PREFIX"] + ".bench_step.json"),
    "steps": steps,
}
json.dump(summary, open(E["SUMMARY"], "w"), indent=1)
print(f"\n== summary: {summary['device']} | torch {summary['torch']} (CUDA {summary['cuda']}) | triton "
      f"{summary['triton']} | liger {summary['liger_kernel']} | {summary['elapsed_s']}s of {summary['budget_s']}s")
for p in summary["problems"] or []:
    print(f"   problem: {p}")
for k, t in tests.items():
    print(f"   tests {k}: {t['result']} ({t['summary_line']})")


def fmt(x, spec):
    width = int(re.match(r"\d*", spec).group() or 0)
    return format(x, spec) if isinstance(x, (int, float)) else "-".rjust(width)


print(f"   {'V':>7} {'H_t':>5} {'fused s':>8} {'floor s':>8} {'ref s':>7} {'% floor':>8} {'(min-max)':>13} "
      f"{'% peak':>7} {'floor %pk':>9} {'mem/ref':>8} {'liger %fl':>9} goal")
for c in cases:
    mm = c.get("fused_pct_of_floor_min_max")
    mf = c.get("fused_memory_fraction_of_reference")
    print(f"   {c['V']:>7} {c['H_t']:>5} {fmt(c.get('fused_time_s'), '8.4f')} {fmt(c.get('floor_time_s'), '8.4f')} "
          f"{fmt(c.get('reference_time_s'), '7.3f')} {fmt(c.get('fused_pct_of_floor'), '7.1f')}% "
          f"{(f'{mm[0]:.0f}-{mm[1]:.0f}%' if mm else '-'):>13} {fmt(c.get('fused_pct_of_bf16_peak'), '7.1f')} "
          f"{fmt(c.get('floor_pct_of_bf16_peak'), '9.1f')} {(f'1/{1 / mf:.0f}' if mf else '-'):>8} "
          f"{fmt(c.get('liger_pct_of_floor'), '9.1f')} "
          f"{'met' if c.get('meets_goal') else ('MISSED' if 'meets_goal' in c else 'no result (' + str(c['step'] or 'not run') + ')')}")
print(f"wrote {E['SUMMARY']}")
EOF
rc_summary=$?

# exit status: 0 only if the preflight passed, every test file ran and passed, and every case was measured
status=0
awk -F'\t' '$1 ~ /^(preflight|pytest:|bench:|smoke|bench_step)/ && $2 != "ok" {bad=1} END {exit bad}' "$STEPS" || status=1
[ "$rc_summary" = 0 ] || status=1
echo "done in ${SECONDS}s: results in $OUT ($([ $status = 0 ] && echo 'all steps ok' || echo 'SOME STEPS FAILED: see the summary'))"
exit $status
