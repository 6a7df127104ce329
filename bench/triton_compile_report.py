"""
Ahead-of-time compile of fused_kd.py's Triton kernel for NVIDIA GPUs, on any machine (no GPU needed:
Triton's own compiler with a GPUTarget, and the ptxas its wheel ships). Prints, for every kernel variant
the host can launch, the registers per thread, spilled bytes and shared memory ptxas reports, so the
launch shape can be chosen from them (see TRITON_BLOCK_V in fused_kd.py). tests/test_triton_compile.py
uses compile_kernel() to assert that the shipped launch shape never spills.

    python bench/triton_compile_report.py                          # the sweep, to stdout
    python bench/triton_compile_report.py --out=bench/results/triton_compile_$(date +%F).txt
"""

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fused_kd  # noqa: E402

# (HAS_TEACHER, T_IS_ONE, WRITE_GRAD, dtype of G): what _rows_triton can launch. Without a teacher the host
# passes T_IS_ONE=True (s/T has no use then); without WRITE_GRAD, G is S (fp32).
VARIANTS = [(teacher, t1, wg, g) for teacher in (True, False) for t1 in ((True, False) if teacher else (True,))
            for wg, g in ((True, "bf16"), (True, "fp32"), (False, "fp32"))]


def variant_name(v):
    teacher, t1, wg, g = v
    return f"{'teacher' if teacher else 'ce-only'},{'T=1' if t1 else 'T!=1'},{'grad-' + g if wg else 'no-grad'}"


def cuda_unavailable_reason():
    """None if this Triton build can compile for CUDA here, else why not."""
    if not fused_kd.HAS_TRITON:
        return "triton is not installed"
    try:
        import triton
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
        if not hasattr(triton, "knobs"):
            return f"triton {triton.__version__} has no triton.knobs (needs >= 3.4) to read ptxas' log"
        ptxas = triton.knobs.nvidia.ptxas.path
    except Exception as e:   # a CPU-only or AMD-only build, or a wheel without its bundled CUDA tools
        return f"this triton build cannot target CUDA: {type(e).__name__}: {e}"
    if not os.path.exists(ptxas):
        return f"no ptxas at {ptxas}"
    return None


def launch_for(variant, V, block_v=None):
    """What _rows_triton would launch for a 2-row chunk of this variant at vocabulary V (CPU tensors from
    fused_kd.row_buffer, as _fused_forward allocates them): (args, consts) from fused_kd.triton_launch."""
    import torch
    teacher, t1, wg, g = variant
    S = fused_kd.row_buffer(2, V, torch.float32, "cpu")
    Tb = fused_kd.row_buffer(2, V, torch.float32, "cpu") if teacher else None
    G = fused_kd.row_buffer(2, V, torch.bfloat16, "cpu") if wg and g == "bf16" else S
    y, n_valid, ce, kd = torch.zeros(2, dtype=torch.long), torch.ones(()), torch.empty(2), torch.empty(2)
    _, args, consts = fused_kd.triton_launch(S, Tb, G, y, n_valid, ce, kd, 0.5, 1.0 if t1 else 2.0, -100, teacher, wg)
    if block_v is not None:
        consts["BLOCK_V"] = block_v
    return args, consts


def specialise(fn, args, consts):
    """Triton's JIT specialisation of a launch with these arguments, spelled for ASTSource: (signature, attrs).
    As the JIT does: a pointer whose address is a multiple of 16 bytes, and an int that is a multiple of 16,
    are marked tt.divisibility=16, which lets the compiler vectorise the accesses that use them."""
    import torch
    names = [p.name for p in fn.params]
    sig, attrs = {}, {}
    dtypes = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.int64: "*i64"}
    for i, (name, a) in enumerate(zip(names, args)):
        if isinstance(a, torch.Tensor):
            sig[name], divisible = dtypes[a.dtype], a.data_ptr() % 16 == 0
        elif isinstance(a, int):
            assert a != 1, f"{name} = 1: the JIT would make it a constant; not modelled here"
            sig[name], divisible = ("i32" if -2**31 <= a < 2**31 else "i64"), a % 16 == 0
        else:
            sig[name], divisible = "fp32", False
        if divisible:
            attrs[(i,)] = [["tt.divisibility", 16]]
    sig.update({k: "constexpr" for k in consts})
    return sig, attrs


def compile_kernel(variant, block_v, num_warps, arch, V=50304):
    """Compile _kd_ce_rows_kernel for sm_<arch> exactly as the JIT would specialise it when _rows_triton launches
    it at vocabulary V (the arguments come from fused_kd.triton_launch). Returns dict(regs, spill_stores,
    spill_loads, stack, shared, seconds, v4_loads, scalar_loads) from ptxas -v, the kernel metadata and the
    PTX (how many 4-wide vector loads, ld.global.v4, and scalar loads it holds)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn = fused_kd._kd_ce_rows_kernel
    args, consts = launch_for(variant, V, block_v)
    sig, attrs = specialise(fn, args, consts)
    log = io.StringIO()
    with tempfile.TemporaryDirectory() as cache, _env(TRITON_CACHE_DIR=cache, TRITON_DUMP_PTXAS_LOG="1",
                                                      TRITON_ALWAYS_COMPILE="1"), contextlib.redirect_stdout(log):
        t0 = time.perf_counter()
        k = triton.compile(ASTSource(fn, sig, consts, attrs), target=GPUTarget("cuda", arch, 32),
                           options=dict(num_warps=num_warps))
        seconds = time.perf_counter() - t0
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if not (regs and spills):
        raise RuntimeError(f"could not read ptxas' -v output for {variant_name(variant)} sm_{arch}:\n{text}")
    ptx = k.asm["ptx"]
    return dict(regs=int(regs.group(1)), stack=int(spills.group(1)), spill_stores=int(spills.group(2)),
                spill_loads=int(spills.group(3)), shared=k.metadata.shared, seconds=seconds,
                v4_loads=len(re.findall(r"ld\.global(?:\.\w+)*\.v4\.", ptx)),
                scalar_loads=len(re.findall(r"ld\.global(?:\.\w+)*\.[bfsu](?:16|32|64) ", ptx)))


@contextlib.contextmanager
def _env(**kw):
    old = {k: os.environ.get(k) for k in kw}
    os.environ.update(kw)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def occupancy(regs, num_warps, arch):
    """Programs (CTAs) resident per SM as limited by registers: 64K 32-bit registers per SM on sm_80/90,
    allocated per warp in units of 256 (i.e. regs per thread rounded up to 8), at most 64 warps per SM."""
    per_warp = -(-regs * 32 // 256) * 256
    return min(65536 // (per_warp * num_warps), 64 // num_warps)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--block_v", default="1024,2048,4096,8192")
    parser.add_argument("--num_warps", default="4,8,16")
    parser.add_argument("--arch", default="80,90")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    why = cuda_unavailable_reason()
    if why:
        sys.exit(why)
    import triton
    lines = [f"triton {triton.__version__}, ptxas {triton.knobs.nvidia.ptxas.version or ''}".strip(),
             f"shipped launch shape: TRITON_BLOCK_V={fused_kd.TRITON_BLOCK_V} TRITON_NUM_WARPS={fused_kd.TRITON_NUM_WARPS}",
             "occ = programs per SM allowed by registers (64K per SM); the kernel is memory-bound, so it wants >= 2",
             f"{'arch':>5} {'BLOCK_V':>7} {'warps':>5} {'variant':<24} {'regs':>4} {'spill st/ld':>11} {'stack':>5} "
             f"{'shared':>6} {'occ':>3} {'vals/thr':>8}"]
    print("\n".join(lines), flush=True)
    for arch in map(int, args.arch.split(",")):
        for bv in map(int, args.block_v.split(",")):
            for nw in map(int, args.num_warps.split(",")):
                for v in VARIANTS:
                    r = compile_kernel(v, bv, nw, arch)
                    line = (f"{'sm_' + str(arch):>5} {bv:7d} {nw:5d} {variant_name(v):<24} {r['regs']:4d} "
                            f"{str(r['spill_stores']) + '/' + str(r['spill_loads']):>11} {r['stack']:5d} "
                            f"{r['shared']:6d} {occupancy(r['regs'], nw, arch):3d} {bv // (32 * nw):8d}")
                    print(line, flush=True)
                    lines.append(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
