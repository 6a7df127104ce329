#!/usr/bin/env bash
# The first GPU run of fused_kd.py, in one script, for a machine with one CUDA GPU (written for an H100/H200).
# It installs nothing and uses whatever torch and triton are there (checked against torch 2.11 / triton 3.6 by
# reading and by compiling the kernel with triton 3.6, see the API notes at the end of this header):
#   0. preflight: python3 (or $PYTHON, else python), torch, triton, the device, and the torch APIs the CUDA
#      path needs (bf16 x bf16 -> fp32 GEMM via torch.mm(out_dtype=), addmm accumulating into fp32);
#   1. the GPU tests, skip reasons printed (-rs): tests/test_fused_kd.py on the GPU (the Triton kernel
#      compiled, against the reference, fp32 and bf16, training shapes) and, at the same time on the CPU
#      (it uses no GPU), tests/test_triton_compile.py (ahead-of-time sm_80/sm_90 compile, zero spills);
#   2. the headline benchmark, bf16, N=16384, H_s=2048, V in {50304, 128256}, H_t in {1024, 4096}: the fused
#      loss (Triton; and its torch fallback) vs the full-logit reference vs the four matmuls alone (the floor),
#      interleaved rounds, one process per case;
#   3. Liger-Kernel's LigerFusedLinearJSDLoss(beta=0) on the same cases, if liger_kernel is importable (its own
#      process per case: its torch.compile is the slowest, least predictable part);
#   4. with SWEEP=1 only, and only with budget left: the kernel's launch shape and chunk size on one case.
# Results: one JSON per case and a summary JSON (device, date, torch/triton versions, each test file's
# pass/fail, and per case the fused time / floor time as a % of the matmul floor, goal >= 80%, beside % of the
# bf16 peak) plus logs, all in $OUT (default bench/results).
#
# Time, estimated for an H200 (bf16 GEMMs at ~700 TFLOP/s effective, HBM at ~3.5 TB/s effective):
#   0. preflight                       10-20 s (a cold `import torch` on a fresh machine)        timeout 60 s
#   1. test_fused_kd.py on the GPU     30-60 s (Triton JIT of ~20 kernel variants, 4 training-     timeout 150 s
#                                      shape cases at V=128256 with their full-logit references)
#      test_triton_compile.py (CPU)    15-25 s alongside (54 AOT compiles took 17 s on 2 cores)    timeout 150 s
#   2. per case: python + torch import ~5 s, inputs drawn on the GPU < 1 s, warm-up (the first case JIT-compiles
#      the kernel, ~3-5 s); the floor is 2·N·V·(H_t + 3·H_s) FLOPs = 1.2e13-4.3e13, i.e. 17 / 24 / 43 / 61 ms for
#      (50304, 1024) / (50304, 4096) / (128256, 1024) / (128256, 4096); the fused loss ~1.2-1.7x that; the
#      reference materialises [16384, V] fp32 logits (3.3 / 8.4 GB each) and makes ~15-25 passes over such
#      tensors forward and backward: ~0.1-0.3 s a run. 7 rounds + warm-up + one memory run per contender:
#      ~10-15 s a case, ~60 s for four                                                            timeout 75 s each
#   3. Liger: its first torch.compile ~30-60 s, later cases reuse inductor's on-disk cache          timeout 90 s each
#   Total ~150-250 s. Every step's timeout is also clamped to what is left of BUDGET (default 285 s, leaving the
#   summary's few seconds inside 5 minutes), and a step with under MIN_STEP s left is skipped and marked so: one
#   hang costs its own timeout, never the run.
#
# Knobs (environment): OUT, PYTHON, BUDGET (s), REPEATS (rounds, default 7), CASES ("V:H_t ..."), N, H_S,
#   TESTS_GPU / TESTS_CPU (pytest targets; empty = none), LIGER=0 (skip Liger), SWEEP=1, and
#   DRY=1: the same control flow on this CPU with tiny shapes in fp32 (N=256, H_s=64, CASES="512:32 1024:64",
#   results in /tmp/nanokd_gpu_check_dry unless OUT is set), to prove the steps, flags and JSON end to end on a
#   machine without a GPU (tests/test_gpu_check.py runs it).
#   bash bench/gpu_check.sh                   # on the GPU machine
#   DRY=1 bash bench/gpu_check.sh             # anywhere
#
# API notes (what the CUDA path calls, and since when): torch.mm/addmm(..., out_dtype=torch.float32) with out=
# exist from torch 2.8 (the mm.dtype_out/addmm.dtype_out overloads); addmm with an fp32 `self` and bf16 matrices
# was fixed for torch 2.10 (pytorch PR 167931), and fused_kd._accumulate_fp32 probes it and falls back to an
# fp32-out GEMM plus an add (the summary records which). torch._assert_async(t, msg) is from 2.1;
# torch.OutOfMemoryError is guarded in bench_loss.py. The kernel uses only triton.language basics
# (program_id, load/store with masks, where, max/sum, exp/log, .to(int64)) and triton.next_power_of_2; it
# compiles for sm_80/sm_90 without spills under triton 3.6.0 as under 3.7.1 (tests/test_triton_compile.py,
# whose triton.knobs / ASTSource / GPUTarget / TRITON_DUMP_PTXAS_LOG all exist in 3.6). A torch older than 2.8
# cannot run the bf16 path: preflight says so and the summary marks the cases failed.
set -uo pipefail   # no -e: a failing step is recorded and the next one still runs
cd "$(dirname "$0")/.." || exit 2

DRY=${DRY:-0}
SWEEP=${SWEEP:-0}
if [ "$DRY" = 1 ]; then
  OUT=${OUT:-${TMPDIR:-/tmp}/nanokd_gpu_check_dry}
  DEVICE=cpu; DTYPE=float32
  N=${N:-256}; H_S=${H_S:-64}; CASES=${CASES-"512:32 1024:64"}; REPEATS=${REPEATS:-5}
  MIN_STEP=${MIN_STEP:-5}
else
  OUT=${OUT:-bench/results}
  DEVICE=cuda; DTYPE=bfloat16
  N=${N:-16384}; H_S=${H_S:-2048}; CASES=${CASES-"50304:1024 50304:4096 128256:1024 128256:4096"}; REPEATS=${REPEATS:-7}
  MIN_STEP=${MIN_STEP:-20}
fi
if [ "$SWEEP" = 1 ]; then BUDGET=${BUDGET:-600}; else BUDGET=${BUDGET:-285}; fi
RESERVE=10   # seconds kept for the summary
TESTS_GPU=${TESTS_GPU-tests/test_fused_kd.py}
TESTS_CPU=${TESTS_CPU-tests/test_triton_compile.py}
LIGER=${LIGER:-1}
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

echo "== gpu_check: DRY=$DRY device=$DEVICE dtype=$DTYPE N=$N H_s=$H_S cases=[$CASES] repeats=$REPEATS budget=${BUDGET}s out=$OUT python=$PY"

# 0. preflight: versions and the APIs the CUDA path calls; exits 1 (recorded) when the device can't run the benchmark
run_step preflight 60 "$prefix.preflight.log" env DEVICE="$DEVICE" PREFLIGHT_JSON="$prefix.preflight.json" "$PY" - <<'EOF'
import json, os, platform, sys
import torch
dev = os.environ["DEVICE"]
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "problems": []}
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
print(json.dumps(info, indent=1))
json.dump(info, open(os.environ["PREFLIGHT_JSON"], "w"), indent=1)
for p in info["problems"]:
    print(f"PROBLEM: {p}")
sys.exit(1 if info["problems"] else 0)
EOF
preflight_ok=$(awk -F'\t' '$1 == "preflight" {print $2}' "$STEPS")

if command -v nvidia-smi >/dev/null 2>&1 && [ "$DRY" != 1 ]; then
  tmo 15 nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu \
    --format=csv > "$prefix.nvidia-smi.csv" 2>&1 || true
fi

if [ "$preflight_ok" = ok ]; then
  # 1. tests: the GPU file in the foreground, the CPU-only AOT compile alongside it (it never touches the GPU)
  stepname() { basename "$1" | sed 's/\.py//; s/[^A-Za-z0-9_.-]/-/g'; }   # tests/a.py::t -> a--t
  have_pytest=1
  "$PY" -c "import pytest" 2>/dev/null || { have_pytest=0; echo "== tests: pytest is not installed here: tests not run"; }
  if [ "$have_pytest" = 1 ]; then
    bg_pids=()
    for t in $TESTS_CPU; do
      b=$(stepname "$t")
      ( run_step "pytest:$b" 150 "$prefix.$b.log" "$PY" -m pytest -p no:cacheprovider -rs --junitxml="$prefix.$b.xml" "$t" \
          > /dev/null ) &
      bg_pids+=($!)
    done
    for t in $TESTS_GPU; do
      b=$(stepname "$t")
      run_step "pytest:$b" 150 "$prefix.$b.log" "$PY" -m pytest -p no:cacheprovider -rs --junitxml="$prefix.$b.xml" "$t"
    done
    for p in ${bg_pids[@]+"${bg_pids[@]}"}; do wait "$p"; done
    for t in $TESTS_CPU; do
      b=$(stepname "$t")
      echo "== pytest:$b (ran alongside): $(awk -F'\t' -v n="pytest:$b" '$1 == n {print $2 " (rc " $3 ", " $4 "s)"}' "$STEPS")"
      tail -n 3 "$prefix.$b.log"
    done
  else
    for t in $TESTS_GPU $TESTS_CPU; do
      printf '%s\tmissing\t-\t0\t-\n' "pytest:$(stepname "$t")" >> "$STEPS"
    done
  fi

  # packed rows: compiled FlexAttention block mask vs dense-mask SDPA, and its speed at 8,192 (GPU only; DRY=1 bench/gpu_check_packing.py runs it here)
  [ "$DRY" = 1 ] || run_step packing 120 "$prefix.packing.log" "$PY" bench/gpu_check_packing.py --out "$prefix.packing.json"

  # 2. the headline benchmark, one process per case
  note="bench/gpu_check.sh DRY=$DRY"
  for c in $CASES; do
    V=${c%%:*}; H_t=${c##*:}
    run_step "bench:V${V}_Ht${H_t}" 75 "$prefix.bench_V${V}_Ht${H_t}.log" \
      "$PY" bench/bench_loss.py --device="$DEVICE" --dtype="$DTYPE" --N="$N" --V="$V" --H_s="$H_S" --H_t="$H_t" \
      --repeats="$REPEATS" --contenders=reference,triton,torch,floor --note="$note" \
      --out="$OUT/loss_${tag}_${day}_V${V}_Ht${H_t}.json"
  done

  # 3. Liger, where installed: its own process per case, after every case of ours has its figures
  if [ "$LIGER" != 0 ] && "$PY" -c "import liger_kernel" 2>/dev/null; then
    for c in $CASES; do
      V=${c%%:*}; H_t=${c##*:}
      run_step "liger:V${V}_Ht${H_t}" 90 "$prefix.liger_V${V}_Ht${H_t}.log" \
        "$PY" bench/bench_loss.py --device="$DEVICE" --dtype="$DTYPE" --N="$N" --V="$V" --H_s="$H_S" --H_t="$H_t" \
        --repeats="$REPEATS" --contenders=liger,floor --note="$note" \
        --out="$OUT/loss_${tag}_${day}_V${V}_Ht${H_t}_liger.json"
    done
  else
    echo "== liger: not installed (or LIGER=0): skipped"
  fi

  # 4. SWEEP=1: launch shape and chunk size on the largest case (fused and floor only)
  if [ "$SWEEP" = 1 ]; then
    c=${CASES##* }; V=${c%%:*}; H_t=${c##*:}
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
STEPS="$STEPS" SUMMARY="$SUMMARY" PREFIX="$prefix" OUTDIR="$OUT" TAG="$tag" DAY="$day" CASES="$CASES" N="$N" H_S="$H_S" \
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
    V, Ht = (int(x) for x in c.split(":"))
    path = os.path.join(E["OUTDIR"], f"loss_{E['TAG']}_{E['DAY']}_V{V}_Ht{Ht}.json")
    d = load(path)
    case = {"N": int(E["N"]), "V": V, "H_s": int(E["H_S"]), "H_t": Ht, "dtype": E["DTYPE"], "json": path,
            "step": by.get(f"bench:V{V}_Ht{Ht}", {}).get("status")}
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
    lg = load(os.path.join(E["OUTDIR"], f"loss_{E['TAG']}_{E['DAY']}_V{V}_Ht{Ht}_liger.json"))
    if lg and "liger" in lg["results"]:
        L = lg["results"]["liger"]
        case.update({"liger_time_s": L["time_median_s"], "liger_pct_of_floor": 100 * L["floor_fraction_median"],
                     "liger_peak_extra_gib": L["peak_extra_bytes"] and L["peak_extra_bytes"] / 2**30})
    elif f"liger:V{V}_Ht{Ht}" in by:
        case["liger_step"] = by[f"liger:V{V}_Ht{Ht}"]["status"]
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
    "problems": pre.get("problems"),
    "budget_s": int(E["BUDGET"]), "elapsed_s": int(E["ELAPSED"]),
    "tests": {k: {kk: v[kk] for kk in ("result", "summary_line", "passed", "failed", "skipped", "error", "errors",
                                        "seconds", "skip_reasons", "log")} for k, v in tests.items()},
    "tests_passed": bool(tests) and all(t["status"] == "ok" for t in tests.values()),
    "goal": f"fused >= {GOAL:.0f}% of the matmul floor (floor time / fused time, median of per-round ratios); "
            "pct_of_bf16_peak (DESIGN.md's 2·N·V·(H_t+3·H_s)/peak form) beside it",
    "cases": cases,
    "all_cases_measured": len(measured) == len(cases),
    "all_cases_meet_goal": bool(measured) and len(measured) == len(cases) and all(c["meets_goal"] for c in measured),
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
awk -F'\t' '$1 ~ /^(preflight|pytest:|bench:)/ && $2 != "ok" {bad=1} END {exit bad}' "$STEPS" || status=1
[ "$rc_summary" = 0 ] || status=1
echo "done in ${SECONDS}s: results in $OUT ($([ $status = 0 ] && echo 'all steps ok' || echo 'SOME STEPS FAILED: see the summary'))"
exit $status
