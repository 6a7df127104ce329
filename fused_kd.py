"""
The distillation loss of distill_loss.py, fused with both lm_head matmuls.

    loss = (1 − α)·CE(student, labels) + α·T²·KL(q_teacher,T ‖ p_student,T)

averaged over tokens whose label is not ignore_index, over the first
`vocab_size` columns only (the rest is embedding padding). This file computes
exactly that, for forward KL and T > 0 (distill_loss.py stays the definition and
the home of the other ablations), without ever holding the [N, V] logits:

  for each chunk of C tokens:
    1. S = x_s @ W_s.T and T = x_t @ W_t.T with the vendor matmul, fp32 out;
    2. per row: softmax statistics of s, s/T and t/T (max, normaliser), the CE
       and KD terms, and dS = dL/ds = [(1−α)(p − onehot(y)) + α·T·(pT − qT)] / n_valid,
       written over S: a Triton kernel on GPU (one program per row, an online softmax
       over vocabulary blocks, then a second pass writing dS), a dozen in-place torch
       ops on CPU (which leave a per-row factor of dS aside, see _rows_torch);
    3. dX_s[chunk] = dS @ W_s and dW_s += dS.T @ x_s[chunk] with the vendor matmul.

So the gradient is finished during the forward pass and backward only scales it
by the incoming gradient (loss/grad_accum_steps works, so does accumulating over
micro-steps). Peak extra memory is a few chunk-sized buffers plus the gradients
themselves, instead of several [N, V] tensors.

Precision: all softmax math is fp32 and the logits are fp32 too, even when the
model runs in bf16. Rounding logits to bf16 before the softmax makes p − q cancel
badly (Liger-Kernel measured 4–23% gradient error from exactly that), so on CUDA
the bf16 matmul writes its fp32 accumulator directly (`torch.mm(a, b,
out_dtype=torch.float32)`, cuBLAS with a bf16 x bf16 -> fp32 GEMM, in torch since
2.8). Only dS is rounded to bf16 for the two gradient matmuls, after the
subtraction; dW is accumulated over chunks in fp32. CPUs have no such mixed GEMM
in torch, so on CPU everything is upcast to fp32 once per call.

FSDP: the weights are arguments, so a caller passes a gathered full weight
(train.py does); nothing here reads a module's parameter behind its back.
"""

import contextlib
import math
import os

import torch

from distill_loss import check_kd_args

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # CPU-only installs: the torch implementation below needs nothing else
    HAS_TRITON = False

# Triton kernel launch shape. One program per row streams the vocabulary in BLOCK_V columns. The kernel is
# memory-bound, so what counts is bytes in flight per SM = programs per SM × BLOCK_V, and registers decide the
# programs per SM. 2048 × 8 warps is the largest block that every variant compiles without spills while
# leaving room for at least two teacher programs per SM (sm_80 and sm_90), whose loads hide each other's
# cross-warp reductions; a larger block buys nothing once it leaves one program per SM. Chosen from ptxas's
# register reports (bench/triton_compile_report.py; the tables are in bench/results/triton_compile_*.txt),
# not yet timed on a GPU: bench/gpu_check.sh SWEEP=1 times the alternatives. tests/test_triton_compile.py
# holds this shape to zero spills and >= 2 teacher programs per SM.
TRITON_BLOCK_V = 2048
TRITON_NUM_WARPS = 8
ROW_ALIGN = 16   # elements: the [C, V] buffers' row stride is a multiple of this (row_buffer)


# ----------------------------------------------------------------------------------------------------
# Triton: the per-row math of one chunk

if HAS_TRITON:  # (the kernel's annotations need triton.language)
    @triton.jit
    def _kd_ce_rows_kernel(
            s_ptr, t_ptr, g_ptr, y_ptr, n_valid_ptr, ce_ptr, kd_ptr,
            stride_s, stride_t, stride_g, V, V_pad, ignore_index,
            inv_T, ce_w, kd_w, T2,
            HAS_TEACHER: tl.constexpr, T_IS_ONE: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr):
        """One program per row. s, t: fp32 logits [rows, V] (t is only read with a teacher).
        Writes ce and kd for the row (0 when ignored) and, if WRITE_GRAD, dL/ds to g (which may be s itself:
        each element is read before it is overwritten, by the same thread).
        Rows hold V_pad ≥ V columns (a multiple of 16, as are the strides: see row_buffer), the ones past V
        zeros. Loads and stores run to V_pad, so the compiler may vectorise them (an odd V as the mask's bound
        would make every access scalar); the columns past V are excluded from the math, and get dL/ds = 0."""
        row = tl.program_id(0).to(tl.int64)
        s_row = s_ptr + row * stride_s
        t_row = t_ptr + row * stride_t
        y = tl.load(y_ptr + row)
        valid = y != ignore_index
        # s[y] is read first: pass 2 may overwrite s (g can be s), and the reductions of pass 1 ensure
        # every thread of the program has done this load before any thread stores
        y_safe = tl.where(valid, y, 0)
        s_y = tl.load(s_row + y_safe)
        offs = tl.arange(0, BLOCK_V)

        # Pass 1: online softmax over vocabulary blocks. One running max serves s and s/T (max(s/T) = max(s)/T
        # for T > 0), with a normaliser for each; the teacher has its own max and normaliser at T, and
        #   acc = Σ exp((t − m_t)/T)·((t − m_t) − (s − m_s)),
        # rescaled like the normaliser (and shifted when a max moves), which gives KD without a log per
        # element. Every logit enters only as a difference to its row max, exactly as in log_softmax, so
        # logits of magnitude 1e4 lose nothing to rounding. The maxes are reduced per block; the sums stay
        # per lane and are reduced once after the loop (fewer cross-warp reductions, same number of exps).
        # The running maxes start at a logit of the row (≤ its max), so they are finite from the start.
        m_s = s_y
        m_t = tl.load(t_row + y_safe) if HAS_TEACHER else 0.0
        z_s = tl.zeros([BLOCK_V], dtype=tl.float32)
        z_sT = tl.zeros([BLOCK_V], dtype=tl.float32)
        z_t = tl.zeros([BLOCK_V], dtype=tl.float32)
        acc = tl.zeros([BLOCK_V], dtype=tl.float32)
        for start in range(0, V, BLOCK_V):
            cols = start + offs
            mask = cols < V_pad
            in_vocab = cols < V
            # lanes past V hold or load 0 (so differences stay finite there) and are sent to −inf for the sums.
            # Both loads are issued before the first reduction, so their memory latencies overlap.
            s = tl.load(s_row + cols, mask=mask, other=0.0)
            if HAS_TEACHER:
                t = tl.load(t_row + cols, mask=mask, other=0.0)
            s_m = tl.where(in_vocab, s, float("-inf"))
            ms_new = tl.maximum(m_s, tl.max(s_m, 0))
            z_s = z_s * tl.exp(m_s - ms_new) + tl.exp(s_m - ms_new)
            if not T_IS_ONE:
                z_sT = z_sT * tl.exp((m_s - ms_new) * inv_T) + tl.exp((s_m - ms_new) * inv_T)
            if HAS_TEACHER:
                t_m = tl.where(in_vocab, t, float("-inf"))
                mt_new = tl.maximum(m_t, tl.max(t_m, 0))
                rescale = tl.exp((m_t - mt_new) * inv_T)
                e = tl.exp((t_m - mt_new) * inv_T)
                # new maxes shift every earlier term of acc by (ms_new − m_s) − (mt_new − m_t)
                acc = (acc + z_t * ((ms_new - m_s) - (mt_new - m_t))) * rescale + e * ((t - mt_new) - (s - ms_new))
                z_t = z_t * rescale + e
                m_t = mt_new
            m_s = ms_new
        z_s = tl.sum(z_s, 0)
        if not T_IS_ONE:
            z_sT = tl.sum(z_sT, 0)
        if HAS_TEACHER:
            z_t = tl.sum(z_t, 0)
            acc = tl.sum(acc, 0)

        # Row losses. CE = logsumexp(s) − s[y] = (m_s − s[y]) + log z_s. KD = T²·Σ qT·(log qT − log pT) with
        # log qT = (t − m_t)/T − log z_t and log pT = (s − m_s)/T − log z_sT, i.e. T²·(acc/(z_t·T) − log z_t + log z_sT).
        log_z_sT = tl.log(z_s) if T_IS_ONE else tl.log(z_sT)
        ce = tl.where(valid, (m_s - s_y) + tl.log(z_s), 0.0)
        kd = 0.0
        if HAS_TEACHER:
            kd = T2 * (acc / z_t * inv_T - tl.log(z_t) + log_z_sT)
            kd = tl.where(valid, kd, 0.0)
        tl.store(ce_ptr + row, ce)
        tl.store(kd_ptr + row, kd)

        # Pass 2: dL/ds = ce_scale·(p − onehot(y)) + kd_scale·(pT − qT), scales already divided by the global
        # count of valid tokens (read from memory, so the host never waits for it). Ignored rows get zeros.
        if WRITE_GRAD:
            g_row = g_ptr + row * stride_g
            n_valid = tl.load(n_valid_ptr)
            ce_scale = tl.where(valid, ce_w / n_valid, 0.0)
            kd_scale = tl.where(valid, kd_w / n_valid, 0.0)
            inv_z_s = 1.0 / z_s
            if HAS_TEACHER:
                inv_z_t = 1.0 / z_t
                if not T_IS_ONE:
                    inv_z_sT = 1.0 / z_sT
            for start in range(0, V, BLOCK_V):
                cols = start + offs
                mask = cols < V_pad
                s = tl.load(s_row + cols, mask=mask, other=0.0)
                p = tl.exp(s - m_s) * inv_z_s
                g = ce_scale * p
                if HAS_TEACHER:
                    if T_IS_ONE:
                        pT = p
                    else:
                        pT = tl.exp((s - m_s) * inv_T) * inv_z_sT
                    t = tl.load(t_row + cols, mask=mask, other=0.0)
                    q = tl.exp((t - m_t) * inv_T) * inv_z_t
                    g += kd_scale * (pT - q)
                g = tl.where(cols < V, g, 0.0)   # the padding columns stay 0 when g is s
                g = tl.where(cols == y, g - ce_scale, g)
                tl.store(g_row + cols, g.to(g_ptr.dtype.element_ty), mask=mask)


def row_buffer(rows, V, dtype, device):
    """A [rows, V] buffer whose rows are ROW_ALIGN-element aligned: a view of [rows, V_pad], V_pad = V rounded up
    to a multiple of ROW_ALIGN, the columns past V zero. At V = 50,257 (GPT-2) unpadded rows would start at odd
    element offsets: the Triton kernel's loads could not be vector loads (ld.global.v4) and cuBLAS would get an
    odd leading dimension. tests/test_triton_compile.py finds the vector loads in the kernel's sm_90 PTX."""
    V_pad = -(-V // ROW_ALIGN) * ROW_ALIGN
    buf = torch.empty(rows, V_pad, dtype=dtype, device=device)
    buf[:, V:].zero_()
    return buf[:, :V]


def triton_launch(S, Tb, G, y, n_valid, ce_out, kd_out, alpha, T, ignore_index, has_teacher, write_grad):
    """The kernel's grid, arguments and compile-time constants for one chunk (tests/test_triton_compile.py
    compiles the kernel ahead of time from exactly these)."""
    c, V = S.shape
    Tb = Tb if has_teacher else S   # unused pointers still need a tensor
    G = G if write_grad else S
    ce_w = 1.0 - alpha if has_teacher else 1.0   # no teacher: plain CE, as in the reference
    kd_w = alpha * T if has_teacher else 0.0
    V_pad = S.stride(0)
    assert Tb.stride(0) == G.stride(0) == V_pad >= V and V_pad % ROW_ALIGN == 0, "buffers from row_buffer, please"
    args = (S, Tb, G, y, n_valid, ce_out, kd_out, S.stride(0), Tb.stride(0), G.stride(0), V, V_pad, ignore_index,
            1.0 / T, ce_w, kd_w, T * T)
    # (T_IS_ONE without a teacher: s/T has no use there, so its running sum is skipped)
    consts = dict(HAS_TEACHER=has_teacher, T_IS_ONE=(T == 1.0 or not has_teacher), WRITE_GRAD=write_grad,
                  BLOCK_V=min(TRITON_BLOCK_V, triton.next_power_of_2(V)))
    return (c,), args, consts


def _rows_triton(S, Tb, G, y, n_valid, ce_out, kd_out, alpha, T, ignore_index, has_teacher, write_grad):
    """The chunk's row math with the Triton kernel: ce/kd per row, and dL/ds (fully scaled) into G."""
    grid, args, consts = triton_launch(S, Tb, G, y, n_valid, ce_out, kd_out, alpha, T, ignore_index, has_teacher,
                                       write_grad)
    # Triton launches on the current CUDA device: make it the tensors' (a caller's current device may be another)
    with torch.cuda.device(S.device) if S.is_cuda else contextlib.nullcontext():
        _kd_ce_rows_kernel[grid](*args, **consts, num_warps=TRITON_NUM_WARPS)


# ----------------------------------------------------------------------------------------------------
# PyTorch: the same per-row math as a handful of in-place ops, for CPUs (and as a fallback)

def _rows_torch(S, Tb, W, y, valid, inv_n, ce_out, kd_out, alpha, T, has_teacher, write_grad):
    """The same row math in torch. S, Tb: [r, V] fp32 student/teacher logits, W: [r, V] fp32 scratch;
    all three are overwritten. Writes the rows' ce and kd into ce_out/kd_out and, if write_grad, leaves
    G in S and returns r [r] such that dL/ds = r[:, None]·G (r = 0 on ignored rows).

    On a CPU each pass over an [r, V] buffer costs time and the exps cost the most, so this is the recipe
    with the fewest passes: one exp per softmax, no normalisation pass (1/z goes into per-row factors),
    and the gradient's per-row factor r is applied by the matmuls to their [r, H]-sized side."""
    y_safe = torch.where(valid, y, 0)
    # Shift each row by its max first, as log_softmax does: exp cannot overflow, and every later
    # difference is between numbers the size of the differences, so logits of magnitude 1e4 lose nothing.
    S.sub_(S.amax(1, keepdim=True))
    s_y = S.gather(1, y_safe[:, None]).squeeze(1)     # s[y] − max
    if has_teacher:
        Tb.sub_(Tb.amax(1, keepdim=True))
        torch.sub(Tb, S, out=W)                        # W = (t − max t) − (s − max s)
        if T != 1.0:
            Tb.mul_(1.0 / T)
        Tb.exp_()                                      # e_t: qT = e_t / z_t
        z_t = Tb.sum(1)
        acc = W.mul_(Tb).sum(1) / z_t                  # Σ qT·((t − max t) − (s − max s))
        if T != 1.0:
            torch.mul(S, 1.0 / T, out=W)
            W.exp_()                                   # e_sT: pT = e_sT / z_sT
            z_sT = W.sum(1)
    S.exp_()                                           # e_s: p = e_s / z_s
    z_s = S.sum(1)

    # CE = logsumexp(s) − s[y]; KD = T²·Σ qT·(log qT − log pT) with log qT = (t − max t)/T − log z_t and
    # log pT = (s − max s)/T − log z_sT
    ce_out.copy_(torch.where(valid, z_s.log() - s_y, 0.0))
    if has_teacher:
        log_z_sT = z_s.log() if T == 1.0 else z_sT.log()
        kd_out.copy_(torch.where(valid, T * T * (acc / T - z_t.log() + log_z_sT), 0.0))
    else:
        kd_out.zero_()
    if not write_grad:
        return None

    # dL/ds·n_valid = a·(e_s/z_s − onehot(y)) + b·(e_sT/z_sT − e_t/z_t), a = 1 − α, b = α·T (no teacher:
    # a = 1, b = 0). G keeps one exp term with coefficient 1; its 1/z goes into r with a or b.
    a, b = (1.0 - alpha, alpha * T) if has_teacher else (1.0, 0.0)
    if b == 0.0:     # plain CE: e_s − z_s·onehot
        r, c_y = a / z_s, z_s
    elif T == 1.0:   # a + b = 1: e_s − b·(z_s/z_t)·e_t − a·z_s·onehot
        S.addcmul_(Tb, (-b * z_s / z_t)[:, None])
        r, c_y = 1.0 / z_s, a * z_s
    elif a == 0.0:   # α = 1, no CE term: e_sT − (z_sT/z_t)·e_t
        torch.addcmul(W, Tb, (-z_sT / z_t)[:, None], out=S)
        r, c_y = b / z_sT, None
    else:            # e_s + (b/a)·(z_s/z_sT)·e_sT − (b/a)·(z_s/z_t)·e_t − z_s·onehot
        S.addcmul_(W, (b / a * z_s / z_sT)[:, None]).addcmul_(Tb, (-b / a * z_s / z_t)[:, None])
        r, c_y = a / z_s, z_s
    if c_y is not None and a != 0.0:
        S[torch.arange(S.shape[0], device=S.device), y_safe] -= c_y   # ignored rows: harmless, r = 0 there
    return torch.where(valid, r * inv_n, 0.0)


# ----------------------------------------------------------------------------------------------------
# The chunk loop, shared by both implementations

# Rows per gradient GEMM on CUDA, from arithmetic intensity. Each chunk of C rows ends with
#     dW_s[V, H] += dS[C, V].T @ X[C, H]      2·V·C·H FLOPs,
# which reads and writes the fp32 accumulator dW_s (8·V·H bytes) and reads dS (2·C·V bytes, bf16): about
# C·H / (4·H + C) ≈ C/4 FLOPs per byte while C ≪ 4·H, whatever V and nearly whatever H. To be limited by the
# tensor cores rather than by HBM, C/4 must reach the GPU's ridge point, peak bf16 FLOP/s ÷ bandwidth:
# 989e12 / 3.35e12 ≈ 295 FLOP/B on an H100 SXM (PCIe 756/2.0 ≈ 378, NVL 835/3.9 ≈ 214, H200 989/4.8 ≈ 206),
# so C ≥ 4 × 378 ≈ 1,500 rows covers them all. 256 rows (chunked_loss.py's old choice at V=128,256) reach
# 64 FLOP/B: the dW GEMM there is memory-bound by ~4.6× on an H100 SXM. 2,048 rows give 512 FLOP/B, with
# room for the dS read and the GEMM's own inefficiency at the edges. (dX = dS @ W_s reads W_s, 2·V·H bytes, for
# 2·V·C·H FLOPs: C FLOP/B, compute-bound from C ≈ 300; the logit GEMMs write fp32 [C, V]: ≈ H/2 FLOP/B for
# large C, which no chunk size changes.) The price is memory: this file holds S, Tb (fp32) and G (bf16) of
# [C, V], 10·C·V bytes = 2.6 GB at V=128,256 (plan.py counts it).
GEMM_ROWS_CUDA = 2048


def _default_chunk_size(N, V, device):
    if device.type == "cuda":
        C = GEMM_ROWS_CUDA
    else:
        # A CPU's ridge point is ~10-30 FLOP/B (≈1 TFLOP/s fp32 over 50-100 GB/s), so 256 rows (64 FLOP/B)
        # already keep the dW update compute-bound, while the three [C, V] buffers stay a small fraction of
        # the naive loss's memory (1/30 at V=50304).
        C = 256
    return max(1, min(C, N))


def _to_fp32_logits(x, w, out):
    """out[c, V] (fp32) = x @ w.T, accumulated and stored in fp32."""
    if x.dtype == torch.float32:
        torch.mm(x, w.t(), out=out)
    else:  # bf16/fp16 on CUDA: cuBLAS writes its fp32 accumulator, the logits are never rounded to bf16
        torch.mm(x, w.t(), out_dtype=torch.float32, out=out)


_addmm_fp32_ok = {}


def _accumulate_fp32(acc, a, b):
    """acc (fp32) += a @ b for bf16/fp16 a, b (CUDA): one GEMM with an fp32 C if this torch build
    allows it (checked once on a small case), else an fp32-out GEMM plus an add."""
    dev = acc.device
    if dev not in _addmm_fp32_ok:
        try:
            A, B, C = (torch.randn(16, 8, device=dev), torch.randn(8, 16, device=dev), torch.randn(16, 16, device=dev))
            want = C + A.to(a.dtype).float() @ B.to(a.dtype).float()
            got = C.clone()
            torch.addmm(got, A.to(a.dtype), B.to(a.dtype), out_dtype=torch.float32, out=got)
            _addmm_fp32_ok[dev] = bool(torch.allclose(got, want, rtol=1e-3, atol=1e-3))
        except (RuntimeError, TypeError):
            _addmm_fp32_ok[dev] = False
    if _addmm_fp32_ok[dev]:
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        acc.add_(torch.mm(a, b, out_dtype=torch.float32))


def _fused_forward(x_s, w_s, labels, x_t, w_t, alpha, T, ignore_index, vocab_size, chunk_size, impl,
                   need_gx, need_gw):
    """Returns (loss, ce, kd, grad_x_s, grad_w_s); the grads are None unless asked for."""
    N, H = x_s.shape
    V = vocab_size
    dev = x_s.device
    has_teacher = x_t is not None
    write_grad = need_gx or need_gw

    # Matmul dtypes. CUDA: each model's activation dtype (the weight is cast to it if it differs, as
    # autocast would); the logits come out fp32 either way. CPU: fp32 throughout (no mixed GEMM there).
    # Only the first V rows of each weight take part: padding rows get no logits and a zero gradient.
    def prep(x, w):
        if dev.type == "cpu" or x.dtype not in (torch.bfloat16, torch.float16):
            return x.float(), w[:V].float()
        return x, w[:V].to(x.dtype)
    xs, ws = prep(x_s.detach(), w_s.detach())
    xt, wt = prep(x_t.detach(), w_t.detach()) if has_teacher else (None, None)
    mm_dtype = xs.dtype

    y = labels
    valid = y != ignore_index
    n_valid = valid.sum().clamp(min=1).float()   # a global count: the mean is over all chunks' tokens
    # the reference raises on an out-of-range label; unchecked, it would silently read another column
    torch._assert_async(((y >= 0) & (y < V) | ~valid).all(), "fused_linear_kd_ce: a label is outside [0, vocab_size)")

    C = chunk_size or _default_chunk_size(N, V, dev)
    S = row_buffer(C, V, torch.float32, dev)
    Tb = row_buffer(C, V, torch.float32, dev) if has_teacher else None
    ce_rows = torch.empty(N, device=dev, dtype=torch.float32)
    kd_rows = torch.empty(N, device=dev, dtype=torch.float32)
    grad_x = torch.empty(N, H, device=dev, dtype=mm_dtype) if need_gx else None
    grad_w = torch.zeros(w_s.shape[0], H, device=dev, dtype=torch.float32) if need_gw else None  # fp32 sum
    if impl == "triton":
        # fp32 matmuls read dS in place of S; bf16 ones read it from its own bf16 buffer, which the kernel
        # writes directly (rounding dS only after the fp32 subtraction p − q).
        G = row_buffer(C, V, mm_dtype, dev) if write_grad and mm_dtype != torch.float32 else S
    else:
        W = row_buffer(C, V, torch.float32, dev)
        inv_n = 1.0 / n_valid

    for i0 in range(0, N, C):
        i1 = min(i0 + C, N)
        S_c, Tb_c = S[:i1 - i0], (Tb[:i1 - i0] if has_teacher else None)
        _to_fp32_logits(xs[i0:i1], ws, S_c)
        if has_teacher:
            _to_fp32_logits(xt[i0:i1], wt, Tb_c)

        if impl == "triton":
            _rows_triton(S_c, Tb_c, G[:i1 - i0], y[i0:i1], n_valid, ce_rows[i0:i1], kd_rows[i0:i1],
                         alpha, T, ignore_index, has_teacher, write_grad)
            G_c = G[:i1 - i0]
        else:
            row_scale = _rows_torch(S_c, Tb_c, W[:i1 - i0], y[i0:i1], valid[i0:i1], inv_n, ce_rows[i0:i1],
                                    kd_rows[i0:i1], alpha, T, has_teacher, write_grad)
            G_c = S_c if mm_dtype == torch.float32 else S_c.to(mm_dtype)

        # dS = diag(r)·G: dX = diag(r)·(G @ W_s) and dW += G.T @ (diag(r)·X), so r only ever touches
        # [c, H]-sized tensors (the Triton kernel writes dS itself: no r)
        if need_gx:
            torch.mm(G_c, ws, out=grad_x[i0:i1])
            if impl != "triton":
                grad_x[i0:i1].mul_(row_scale[:, None])
        if need_gw:
            x_c = xs[i0:i1] if impl == "triton" else xs[i0:i1] * row_scale[:, None].to(mm_dtype)
            if mm_dtype == torch.float32:
                grad_w[:V].addmm_(G_c.t(), x_c)
            else:
                _accumulate_fp32(grad_w[:V], G_c.t(), x_c)

    ce = ce_rows.sum() / n_valid
    kd = kd_rows.sum() / n_valid
    # (a tensor of its own even without a teacher: the autograd.Function marks ce non-differentiable)
    loss = (1.0 - alpha) * ce + alpha * kd if has_teacher else ce.clone()
    grad_x = grad_x.to(x_s.dtype) if need_gx else None
    grad_w = grad_w.to(w_s.dtype) if need_gw else None
    return loss, ce, kd, grad_x, grad_w


class _FusedLinearKDCE(torch.autograd.Function):
    """Forward computes loss and gradients together; backward only scales the stored gradients."""

    @staticmethod
    def forward(ctx, x_s, w_s, labels, x_t, w_t, alpha, T, ignore_index, vocab_size, chunk_size, impl,
                need_gx, need_gw):
        loss, ce, kd, grad_x, grad_w = _fused_forward(x_s, w_s, labels, x_t, w_t, alpha, T, ignore_index,
                                                      vocab_size, chunk_size, impl, need_gx, need_gw)
        ctx.save_for_backward(grad_x, grad_w)
        ctx.mark_non_differentiable(ce, kd)
        return loss, ce, kd

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_kd):
        grad_x, grad_w = ctx.saved_tensors
        # Out of place: a second backward through the same graph (retain_graph) must see the same values.
        # grad_loss stays fp32 (a 0-dim tensor keeps the product in the gradient's dtype).
        gx = grad_x * grad_loss if grad_x is not None else None
        gw = grad_w * grad_loss if grad_w is not None else None
        return gx, gw, None, None, None, None, None, None, None, None, None, None, None


def check_and_flatten(x_s, w_s, labels, x_t, w_t, vocab_size, chunk_size):
    """The arguments both hidden-state losses share (this file's and chunked_loss.py's), checked, with the
    hidden states and labels flattened to rows: returns (x_s [N, H_s], labels [N], x_t [N, H_t] or None, V)."""
    if (x_t is None) != (w_t is None):
        raise ValueError("give both x_t and w_t for distillation, or neither for plain cross-entropy")
    x_s = x_s.reshape(-1, x_s.shape[-1])
    labels = labels.reshape(-1).long()
    if x_t is not None:
        x_t = x_t.reshape(-1, x_t.shape[-1])
    V = w_s.shape[0] if vocab_size is None else int(vocab_size)
    N = x_s.shape[0]
    if w_s.shape[1] != x_s.shape[1] or labels.shape[0] != N:
        raise ValueError(f"shapes don't fit: x_s {tuple(x_s.shape)}, w_s {tuple(w_s.shape)}, labels {tuple(labels.shape)}")
    if not 0 < V <= w_s.shape[0]:
        raise ValueError(f"vocab_size {V} must be in [1, {w_s.shape[0]}] (the rows of w_s)")
    if x_t is not None and (x_t.shape[0] != N or w_t.shape[1] != x_t.shape[1] or w_t.shape[0] < V):
        raise ValueError(f"teacher shapes don't fit: x_t {tuple(x_t.shape)}, w_t {tuple(w_t.shape)}, N={N}, vocab_size={V}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return x_s, labels, x_t, V


def fused_linear_kd_ce(x_s, w_s, labels, x_t=None, w_t=None, *, alpha=0.0, temperature=1.0,
                       ignore_index=-100, vocab_size=None, chunk_size=None, impl="auto"):
    """(1 − α)·CE + α·T²·KL(teacher ‖ student) of the logits x_s @ w_s.T (student) and x_t @ w_t.T
    (teacher), over the first vocab_size columns, mean over tokens whose label isn't ignore_index.

    x_s [N, H_s] (or [..., H_s]) student hidden states, w_s [V, H_s] student lm_head weight;
    x_t [N, H_t], w_t [V_t ≥ vocab_size, H_t] teacher, treated as constants; None = plain CE.
    Returns (loss, ce, kd): loss differentiable w.r.t. x_s and w_s, ce and kd detached for logging
    (kd is computed whenever a teacher is given, even at α = 0; 0 without one).
    impl: "triton" (CUDA; CPU tensors only under TRITON_INTERPRET=1), "torch", or "auto" (triton on
    CUDA when importable). Matches distill_loss(..., kl="forward") for T > 0, no top-k or smoothing."""
    check_kd_args(alpha, temperature)
    if temperature <= 0:
        raise ValueError(f"the fused loss needs temperature > 0, got {temperature}; "
                         "T = 0 (hard teacher labels) is in distill_loss.py")
    if impl not in ("auto", "triton", "torch"):
        raise ValueError(f"impl must be 'auto', 'triton' or 'torch', got {impl!r}")
    x_s, labels, x_t, vocab_size = check_and_flatten(x_s, w_s, labels, x_t, w_t, vocab_size, chunk_size)

    if impl == "auto":
        impl = "triton" if x_s.is_cuda and HAS_TRITON else "torch"
    if impl == "triton":
        if not HAS_TRITON:
            raise RuntimeError("impl='triton' needs the triton package; use impl='torch'")
        if not x_s.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise RuntimeError("impl='triton' on CPU tensors runs only in Triton's interpreter: set "
                               "TRITON_INTERPRET=1 (slow, for tests), or use impl='torch' on CPU")

    need_gx = torch.is_grad_enabled() and x_s.requires_grad
    need_gw = torch.is_grad_enabled() and w_s.requires_grad
    args = (x_s, w_s, labels, x_t, w_t, float(alpha), float(temperature), ignore_index, vocab_size,
            chunk_size, impl)
    # precision is decided inside (fp32 logits and softmax): an enclosing autocast must not recast the matmuls
    with torch.autocast(x_s.device.type, enabled=False):
        if need_gx or need_gw:
            loss, ce, kd = _FusedLinearKDCE.apply(*args, need_gx, need_gw)
        else:   # evaluation: no gradient work at all
            loss, ce, kd, _, _ = _fused_forward(*args, False, False)
    return loss, ce, kd
