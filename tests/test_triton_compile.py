"""
fused_kd.py's Triton kernel compiled ahead of time for the GPUs it is meant for (sm_80 = A100, sm_90 =
H100/H200), on this CPU machine: Triton's own compiler with a GPUTarget and the ptxas its wheel ships.
Every variant the host can launch (teacher or not × T = 1 or not × gradient or not, the gradient stored
as bf16 or fp32) at the BLOCK_V values _rows_triton picks must compile without spilling registers to
local memory, and the teacher variants must leave room for two programs per SM (the choice of launch
shape in fused_kd.py rests on it; bench/triton_compile_report.py prints the whole table). Each is compiled as
the JIT specialises it for the arguments _rows_triton passes (fused_kd.triton_launch, on buffers from
fused_kd.row_buffer), so at GPT-2's V = 50,257 the padded row stride must show as 4-wide vector loads
(ld.global.v4) in the PTX: with rows of 50,257 elements every load of the vocabulary stream is scalar.

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
# (BLOCK_V, V): the shipped block at V = 50304 (a padded GPT-2 vocabulary, a multiple of 16) and at
# V = 50257 (GPT-2's own, odd: row_buffer pads the row stride to 50272), and a tiny config's V = 264, for
# which _rows_triton picks next_power_of_2(264) = 512.
SHAPES = [(fused_kd.TRITON_BLOCK_V, 50304), (fused_kd.TRITON_BLOCK_V, 50257), (512, 264)]
CASES = [(arch, bv, V, v) for arch in ARCHS for bv, V in SHAPES for v in VARIANTS]
MAX_SPILL_BYTES = 0   # any spill is local-memory traffic inside a loop that streams the vocabulary

CHILD = """
import json, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + "/bench")
import triton_compile_report as r
why = r.cuda_unavailable_reason()
if why:
    print(json.dumps({{"skip": why}})); sys.exit(0)
out = []
for arch, bv, V, v in {cases!r}:
    out.append(r.compile_kernel(tuple(v), bv, {num_warps}, arch, V))
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


IDS = [f"sm{a}-bv{bv}-V{V}-{variant_name(v)}" for a, bv, V, v in CASES]


@pytest.mark.parametrize("arch,block_v,V,variant", CASES, ids=IDS)
def test_kernel_compiles_without_spills(compiled, arch, block_v, V, variant):
    r = compiled[(arch, block_v, V, variant)]
    spilled = r["spill_stores"] + r["spill_loads"]
    assert spilled <= MAX_SPILL_BYTES and r["stack"] == 0, (
        f"{variant_name(variant)} on sm_{arch}, BLOCK_V={block_v}, {fused_kd.TRITON_NUM_WARPS} warps spills: {r}")
    if variant[0] and block_v == fused_kd.TRITON_BLOCK_V:
        # the teacher variants are the training path: one program per SM would leave the memory system idle
        # while that program reduces (see TRITON_BLOCK_V in fused_kd.py)
        occ = occupancy(r["regs"], fused_kd.TRITON_NUM_WARPS, arch)
        assert occ >= 2, f"{variant_name(variant)} on sm_{arch} needs {r['regs']} registers: {occ} program(s) per SM"


@pytest.mark.parametrize("arch,block_v,V,variant", [c for c in CASES if c[1] == fused_kd.TRITON_BLOCK_V],
                         ids=[i for c, i in zip(CASES, IDS) if c[1] == fused_kd.TRITON_BLOCK_V])
def test_vocabulary_loads_are_vector_loads(compiled, arch, block_v, V, variant):
    # one 4-wide load (or more) for each place the kernel streams a row: s (and t with a teacher) in pass 1,
    # again in pass 2 when it writes the gradient; 2048 columns over 256 threads is 8 per thread, 2 × v4
    teacher, _, write_grad, _ = variant
    sites = (2 if teacher else 1) * (2 if write_grad else 1)
    r = compiled[(arch, block_v, V, variant)]
    assert r["v4_loads"] >= sites, (f"{variant_name(variant)} on sm_{arch} at V={V}: {r['v4_loads']} ld.global.v4 "
                                    f"for {sites} streamed rows ({r['scalar_loads']} scalar loads)")
