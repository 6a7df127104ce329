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


def compile_kernel(variant, block_v, num_warps, arch, aligned=True):
    """Compile _kd_ce_rows_kernel for sm_<arch> as the JIT would specialise it at a launch; returns
    dict(regs, spill_stores, spill_loads, stack, shared, seconds) from ptxas -v and the kernel metadata.
    aligned: the int arguments (strides, V) divisible by 16, as for V = 50304 or 128256 (the JIT then
    marks them so and the loads vectorise); False for a V like 50257."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    teacher, t1, wg, g = variant
    sig = dict(s_ptr="*fp32", t_ptr="*fp32", g_ptr=f"*{g}", y_ptr="*i64", n_valid_ptr="*fp32", ce_ptr="*fp32",
               kd_ptr="*fp32", stride_s="i32", stride_t="i32", stride_g="i32", V="i32", ignore_index="i32",
               inv_T="fp32", ce_w="fp32", kd_w="fp32", T2="fp32", HAS_TEACHER="constexpr", T_IS_ONE="constexpr",
               WRITE_GRAD="constexpr", BLOCK_V="constexpr")
    consts = dict(HAS_TEACHER=teacher, T_IS_ONE=t1, WRITE_GRAD=wg, BLOCK_V=block_v)
    # torch allocations are 16-byte aligned, so the JIT marks every pointer (args 0-6) divisible by 16;
    # the strides and V (7-10) too when they are multiples of 16. (ignore_index = -100 is not.)
    div = [["tt.divisibility", 16]]
    attrs = {(i,): div for i in range(11 if aligned else 7)}
    log = io.StringIO()
    fn = fused_kd._kd_ce_rows_kernel
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
    return dict(regs=int(regs.group(1)), stack=int(spills.group(1)), spill_stores=int(spills.group(2)),
                spill_loads=int(spills.group(3)), shared=k.metadata.shared, seconds=seconds)


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
