"""
fused_kd.py's Triton kernel compiled ahead of time for the GPUs it is meant for (sm_80 = A100, sm_90 =
H100/H200), on this CPU machine: Triton's own compiler with a GPUTarget and the ptxas its wheel ships.
Every variant the host can launch (teacher or not × T = 1 or not × gradient or not, the gradient stored
as bf16 or fp32) at the BLOCK_V values _rows_triton picks must compile without spilling registers to
local memory, and the teacher variants must leave room for two programs per SM (the choice of launch
shape in fused_kd.py rests on it; bench/triton_compile_report.py prints the whole table).

The compiles run in one child process without TRITON_INTERPRET: test_fused_kd.py selects the interpreter
for this whole pytest process, and an interpreted Triton cannot compile for a GPU.
"""

import json
import os
import subprocess
import sys

import pytest

import fused_kd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from triton_compile_report import VARIANTS, variant_name, occupancy  # noqa: E402

pytestmark = pytest.mark.slow   # subprocess, torchrun or compile runs: pytest -m "not slow" leaves them out

ARCHS = [80, 90]
# (BLOCK_V, ints divisible by 16): the shipped block at V = 50304 / 128256 (strides and V multiples of 16,
# so loads vectorise), at V = 50257 (an unpadded GPT-2 vocabulary: not), and a tiny config's V = 264,
# for which _rows_triton picks next_power_of_2(264) = 512.
SHAPES = [(fused_kd.TRITON_BLOCK_V, True), (fused_kd.TRITON_BLOCK_V, False), (512, False)]
CASES = [(arch, bv, aligned, v) for arch in ARCHS for bv, aligned in SHAPES for v in VARIANTS]
MAX_SPILL_BYTES = 0   # any spill is local-memory traffic inside a loop that streams the vocabulary

CHILD = """
import json, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + "/bench")
import triton_compile_report as r
why = r.cuda_unavailable_reason()
if why:
    print(json.dumps({{"skip": why}})); sys.exit(0)
out = []
for arch, bv, aligned, v in {cases!r}:
    out.append(r.compile_kernel(tuple(v), bv, {num_warps}, arch, aligned))
print(json.dumps({{"results": out}}))
"""


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = CHILD.format(root=ROOT, cases=CASES, num_warps=fused_kd.TRITON_NUM_WARPS)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    return dict(zip(CASES, out["results"]))


@pytest.mark.parametrize("arch,block_v,aligned,variant", CASES,
                         ids=[f"sm{a}-bv{bv}-{'div16' if al else 'odd'}-{variant_name(v)}" for a, bv, al, v in CASES])
def test_kernel_compiles_without_spills(compiled, arch, block_v, aligned, variant):
    r = compiled[(arch, block_v, aligned, variant)]
    spilled = r["spill_stores"] + r["spill_loads"]
    assert spilled <= MAX_SPILL_BYTES and r["stack"] == 0, (
        f"{variant_name(variant)} on sm_{arch}, BLOCK_V={block_v}, {fused_kd.TRITON_NUM_WARPS} warps spills: {r}")
    if variant[0] and block_v == fused_kd.TRITON_BLOCK_V:
        # the teacher variants are the training path: one program per SM would leave the memory system idle
        # while that program reduces (see TRITON_BLOCK_V in fused_kd.py)
        occ = occupancy(r["regs"], fused_kd.TRITON_NUM_WARPS, arch)
        assert occ >= 2, f"{variant_name(variant)} on sm_{arch} needs {r['regs']} registers: {occ} program(s) per SM"
