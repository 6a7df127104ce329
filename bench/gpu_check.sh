#!/usr/bin/env bash
# GPU checks of fused_kd.py, for a machine with one CUDA GPU (written for an H100/H200):
#   1. tests/test_fused_kd.py on the GPU: the Triton kernel compiled (not interpreted) against the
#      reference, fp32 and bf16, plus training-shape cases that only run with CUDA;
#   2. bench/bench_loss.py, bf16, N=16384, H_s=2048, V in {50304, 128256}, H_t in {1024, 4096}:
#      reference vs Triton vs torch vs Liger (if installed) vs the matmul floor, % of the bf16 bound;
#   3. with SWEEP=1 only: the kernel's launch shape and the chunk size on one case, to tune the defaults.
# Results (JSON + logs) go to $OUT (default bench/results). Steps 1-2 take a few minutes (Liger's
# torch.compile is the slowest part); step 3 adds about as much again.
#   bash bench/gpu_check.sh             # or: OUT=/some/dir SWEEP=1 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
python - <<'EOF'
import torch, triton
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
EOF
tag=$(python -c "import torch, re; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
day=$(date +%F)

echo "== 1. tests on the GPU"
status=0
python -m pytest -q -p no:cacheprovider -rs tests/test_fused_kd.py 2>&1 | tee "$OUT/gpu_tests_${tag}_${day}.log" || status=1

echo "== 2. benchmark, bf16"
for V in 50304 128256; do
  for H_t in 1024 4096; do
    python bench/bench_loss.py --device=cuda --dtype=bfloat16 --N=16384 --V=$V --H_s=2048 --H_t=$H_t \
      --repeats=5 --out="$OUT/loss_${tag}_${day}_V${V}_Ht${H_t}.json"
  done
done

if [ "${SWEEP:-0}" != "1" ]; then echo "done: results in $OUT (tests: $([ $status = 0 ] && echo passed || echo FAILED))"; exit $status; fi

echo "== 3. launch shape and chunk size sweep (V=128256, H_t=4096; triton and floor only)"
for bv in 2048 4096 8192; do
  for nw in 4 8 16; do
    python bench/bench_loss.py --device=cuda --dtype=bfloat16 --N=16384 --V=128256 --H_s=2048 --H_t=4096 \
      --contenders=triton,floor --no_memory --repeats=5 --block_v=$bv --num_warps=$nw \
      --out="$OUT/sweep_${tag}_${day}_bv${bv}_nw${nw}.json"
  done
done
for cs in 512 1024 2048 4096; do
  python bench/bench_loss.py --device=cuda --dtype=bfloat16 --N=16384 --V=128256 --H_s=2048 --H_t=4096 \
    --contenders=triton,floor --repeats=5 --chunk_size=$cs --out="$OUT/sweep_${tag}_${day}_chunk${cs}.json"
done
echo "done: results in $OUT (tests: $([ $status = 0 ] && echo passed || echo FAILED))"
exit $status
