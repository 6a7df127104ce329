"""
Every ablation of distill_loss.py, chunked: the student's and the teacher's lm_head fused into the
loss, one chunk of tokens at a time, so that no configuration holds the [N, V] logits.

    for each chunk of C tokens:
        s = x_s[chunk] @ W_s.T,  t = x_t[chunk] @ W_t.T         (fp32 logits, [C, V])
        rows = (1 − α)·CE(s, y) + α·divergence(s, t)          (per token, plain torch)
        dS = d(Σ rows / n_valid)/ds                           (autograd, on this chunk only)
        dX[chunk] = dS @ W_s,  dW_s += dS.T @ x_s[chunk]

The gradient is finished in the forward pass and backward only scales it, as in fused_kd.py. Autograd
sees only the per-row math of one chunk (logits in, a scalar out): the two gradient matmuls are written
out, so what autograd keeps alive is a few [C, V] tensors, never the weight or the whole batch. This is
Liger-Kernel's chunked-loss design (a chunking base, a per-chunk loss function, autograd per chunk);
a new divergence is one function here, not a new kernel.

Forward KL at T > 0 also has the faster fused kernel (fused_kd.py, one pass and no autograd); this file
covers everything: reverse KL, JSD(β), T = 0 (hard labels), top-k in the authors' three variants, and
label smoothing with or without a teacher. distill_loss.py is the definition each of them must match.

Adding a divergence: write `def my_div(s, t): ... return per_row` ([C, V] fp32 logits of student and
teacher over the real vocabulary -> [C] values, differentiable in s) and pass
`divergence=my_div` to chunked_linear_kd_ce; `jsd` below is the worked example.
"""

import math

import torch
import torch.nn.functional as F

from distill_loss import BUCKET_EPS, check_kd_args, check_loss_options, resolve_top_k
from fused_kd import (GEMM_ROWS_CUDA, _accumulate_fp32, _to_fp32_logits, check_and_flatten,   # (GEMMs, checks and
                      fused_linear_kd_ce, row_buffer)                                    # chunk sizes written once)

# ----------------------------------------------------------------------------------------------------
# Divergences: (s, t) -> per-row values. s, t: [C, V] logits of student and teacher (real vocabulary
# only, fp32 or wider); the result must be differentiable in s. Temperature and options are bound by the
# caller (below), so the chunking routine never needs to know which divergence it is running.


def forward_kl(s, t, T):
    """T²·KL(q_T ‖ p_T): the paper's loss (fused_kd.py computes the same thing faster)."""
    log_p, log_q = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    return T * T * (log_q.exp() * (log_q - log_p)).sum(-1)


def reverse_kl(s, t, T):
    """T²·KL(p_T ‖ q_T): mode-seeking."""
    log_p, log_q = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    return T * T * (log_p.exp() * (log_p - log_q)).sum(-1)


def jsd(s, t, T, beta):
    """T²·[β·KL(q ‖ m) + (1 − β)·KL(p ‖ m)], m = β·q + (1 − β)·p: the worked example of a new divergence.
    log m is formed in log space (logaddexp), so tiny probabilities of one model don't underflow to log 0."""
    log_p, log_q = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    log_m = torch.logaddexp(log_q + math.log(beta), log_p + math.log(1 - beta))
    return T * T * (beta * (log_q.exp() * (log_q - log_m)).sum(-1)
                    + (1 - beta) * (log_p.exp() * (log_p - log_m)).sum(-1))


def hard_labels(s, t):
    """T = 0: cross-entropy against the teacher's argmax (no T², as in the authors' code)."""
    return F.cross_entropy(s, t.argmax(-1), reduction="none")


# Top-k: the teacher's k largest logits K, in the three variants of the authors' MaxText/max_utils.py
# (TaiMingLu/maxtext-distillation @ 1d40b1da19b381f402ac0707189c2872150e0cf9; distill_loss.py has the formulas).
# Each works on [C, k] gathers where it can: only "teacher" and "bucket" need the student's full softmax.

def topk_teacher(s, t, T, k):
    """Teacher renormalised over K, student over the whole vocabulary (kl_divergence_between_logits)."""
    t_k, idx = (t / T).topk(k, dim=-1)
    log_q = F.log_softmax(t_k, -1)
    log_p = F.log_softmax(s / T, -1).gather(1, idx)
    return T * T * (log_q.exp() * (log_q - log_p)).sum(-1)


def topk_both(s, t, T, k):
    """Teacher and student each renormalised over K (kl_divergence_between_logits_efficient)."""
    t_k, idx = (t / T).topk(k, dim=-1)
    log_q = F.log_softmax(t_k, -1)
    log_p = F.log_softmax((s / T).gather(1, idx), -1)
    return T * T * (log_q.exp() * (log_q - log_p)).sum(-1)


def topk_bucket(s, t, T, k):
    """No renormalisation; the mass outside K is one OTHER entry for each model (use_other_bucket=True).
    The OTHER masses are sums over the tail, not 1 − Σ_K (which would cancel when the tail is small)."""
    idx = t.topk(k, dim=-1).indices
    log_q, log_p = F.log_softmax(t / T, -1), F.log_softmax(s / T, -1)
    kept = torch.zeros_like(s, dtype=torch.bool).scatter_(1, idx, True)
    q_o = log_q.exp().masked_fill(kept, 0.0).sum(-1)
    p_o = log_p.exp().masked_fill(kept, 0.0).sum(-1)
    lq_k, lp_k = log_q.gather(1, idx), log_p.gather(1, idx)
    kl_kept = (lq_k.exp() * (lq_k - lp_k)).sum(-1)
    kl_other = q_o * (q_o.clamp(min=BUCKET_EPS).log() - p_o.clamp(min=BUCKET_EPS).log())
    return T * T * (kl_kept + kl_other)


def pick_divergence(kl, temperature, top_k, top_k_variant, jsd_beta):
    """The per-chunk function for distill_loss's options (k already a count, or None)."""
    T = temperature
    if T == 0:
        return hard_labels
    if top_k is not None:
        fn = {"teacher": topk_teacher, "both": topk_both, "bucket": topk_bucket}[top_k_variant]
        return lambda s, t: fn(s, t, T, top_k)
    if kl == "jsd":
        return lambda s, t: jsd(s, t, T, jsd_beta)
    return {"forward": lambda s, t: forward_kl(s, t, T), "reverse": lambda s, t: reverse_kl(s, t, T)}[kl]


# ----------------------------------------------------------------------------------------------------
# The chunking routine, one for all divergences


def default_chunk_size(N, V, device):
    """Rows per autograd chunk. Autograd keeps ~6-10 [C, V] fp32 tensors per chunk (logits, log-softmaxes, their
    products), so this bounds memory: on CPU 256 rows keep that ~1/10 of the naive loss at V=50304; on CUDA, one
    [C, V] buffer up to 128 MiB (V=50304 -> 512, V=128256 -> 256 rows): ~1 GiB in all. The gradient GEMMs do not
    run per chunk: see gemm_rows."""
    C = 256 if device.type != "cuda" else 2 ** int(math.log2(max(1, (128 << 20) // (4 * V))))
    return max(1, min(max(C, 64), N))


def gemm_rows(chunk, device):
    """Rows per gradient GEMM: on CUDA, dS of several autograd chunks is collected (bf16, [G, V]) and dX, dW
    computed once per GEMM_ROWS_CUDA rows, the size at which the dW update stops being memory-bound (the
    arithmetic is in fused_kd.py, beside GEMM_ROWS_CUDA); 256-row GEMMs at V=128,256 would re-read and re-write
    the fp32 dW accumulator for ~1/5 of the work that hides it. On CPU (a ridge point of ~10-30 FLOP/B) each
    chunk's own GEMMs are already compute-bound."""
    if device.type != "cuda":
        return chunk
    return chunk * max(1, GEMM_ROWS_CUDA // chunk)


def _chunked_forward(x_s, w_s, labels, x_t, w_t, divergence, alpha, ignore_index, V, chunk_size,
                     label_smoothing, targets, need_gx, need_gw):
    """Returns (loss, ce, kd, grad_x_s, grad_w_s); grads None unless asked for. Inputs already flat [N, H].
    targets: instead of x_t/w_t, precomputed teacher targets (a dict of [N, ...] tensors, e.g. a teacher
    cache's sparse rows, sparse_kd.py), handed to the divergence one chunk's rows at a time."""
    N, H = x_s.shape
    dev = x_s.device
    has_teacher = x_t is not None or targets is not None

    # Matmul dtypes as in fused_kd: on CUDA each model's activation dtype with fp32 logits out; elsewhere
    # fp32 (no mixed GEMM on CPU), or fp64 when the inputs are fp64 (so tests can check the chunking exactly).
    def prep(x, w):
        if dev.type == "cuda" and x.dtype in (torch.bfloat16, torch.float16):
            return x, w[:V].to(x.dtype)
        dt = torch.promote_types(x.dtype, torch.float32)
        return x.to(dt), w[:V].to(dt)
    xs, ws = prep(x_s.detach(), w_s.detach())
    xt, wt = prep(x_t.detach(), w_t.detach()) if x_t is not None else (None, None)
    mm_dtype = xs.dtype
    logit_dtype = torch.promote_types(mm_dtype, torch.float32)

    y = labels
    valid = y != ignore_index
    n_valid = valid.sum().clamp(min=1).to(logit_dtype)   # a global count: every chunk divides by all valid tokens
    torch._assert_async(((y >= 0) & (y < V) | ~valid).all(), "chunked_linear_kd_ce: a label is outside [0, vocab_size)")
    y_safe = torch.where(valid, y, 0)
    ce_w, kd_w = (1.0 - alpha, alpha) if has_teacher else (1.0, 0.0)

    def logits(x, w):   # [c, V] in logit_dtype, accumulated in fp32 even from bf16 inputs (rows 16-aligned)
        out = row_buffer(x.shape[0], V, logit_dtype, dev)
        if logit_dtype == torch.float64:
            return torch.mm(x, w.t(), out=out)
        _to_fp32_logits(x, w, out)
        return out

    C = chunk_size or default_chunk_size(N, V, dev)
    G = min(gemm_rows(C, dev), -(-N // C) * C)   # rows per gradient GEMM: a whole number of chunks
    ce_sum = torch.zeros((), device=dev, dtype=logit_dtype)
    kd_sum = torch.zeros((), device=dev, dtype=logit_dtype)
    grad_x = torch.empty(N, H, device=dev, dtype=mm_dtype) if need_gx else None
    # fp32 (at least) sum over chunks; padding rows of W_s get no logits and keep a zero gradient
    grad_w = torch.zeros(w_s.shape[0], H, device=dev, dtype=logit_dtype) if need_gw else None
    dS_rows = row_buffer(G, V, mm_dtype, dev) if (need_gx or need_gw) and G > C else None

    def gradient_gemms(dS, g0, g1):   # dS [g1 − g0, V] of rows g0:g1
        if need_gx:
            torch.mm(dS, ws, out=grad_x[g0:g1])
        if need_gw:
            if mm_dtype == logit_dtype:
                grad_w[:V].addmm_(dS.t(), xs[g0:g1])
            else:
                _accumulate_fp32(grad_w[:V], dS.t(), xs[g0:g1])

    for i0 in range(0, N, C):
        i1 = min(i0 + C, N)
        s = logits(xs[i0:i1], ws)
        t = (logits(xt[i0:i1], wt) if x_t is not None else
             {name: a[i0:i1] for name, a in targets.items()} if targets is not None else None)

        v = valid[i0:i1]
        with torch.enable_grad():   # autograd on this chunk's logits only
            s.requires_grad_(need_gx or need_gw)
            ce_rows = F.cross_entropy(s, y_safe[i0:i1], reduction="none", label_smoothing=label_smoothing)
            ce_c = torch.where(v, ce_rows, 0.0).sum()
            kd_c = torch.where(v, divergence(s, t), 0.0).sum() if has_teacher else torch.zeros_like(ce_c)
            chunk_loss = (ce_w * ce_c + kd_w * kd_c) / n_valid
        ce_sum += ce_c.detach()
        kd_sum += kd_c.detach()
        if not (need_gx or need_gw):
            continue
        (dS,) = torch.autograd.grad(chunk_loss, s)
        del s, t, ce_rows, chunk_loss   # free this chunk's graph before the matmuls allocate
        # (bf16 on CUDA: rounded only after the subtraction p − q, as in fused_kd)
        if dS_rows is None:
            gradient_gemms(dS.to(mm_dtype), i0, i1)
            continue
        g0 = i0 - i0 % G   # the first row of this GEMM group
        dS_rows[i0 - g0:i1 - g0].copy_(dS)
        del dS
        if i1 - g0 == G or i1 == N:
            gradient_gemms(dS_rows[:i1 - g0], g0, i1)

    ce, kd = ce_sum / n_valid, kd_sum / n_valid
    loss = ce_w * ce + kd_w * kd
    grad_x = grad_x.to(x_s.dtype) if need_gx else None
    grad_w = grad_w.to(w_s.dtype) if need_gw else None
    return loss, ce, kd, grad_x, grad_w


class _ChunkedLinearKDCE(torch.autograd.Function):
    """Forward computes loss and gradients together; backward only scales the stored gradients."""

    @staticmethod
    def forward(ctx, x_s, w_s, labels, x_t, w_t, divergence, alpha, ignore_index, V, chunk_size,
                label_smoothing, targets, need_gx, need_gw):
        loss, ce, kd, grad_x, grad_w = _chunked_forward(x_s, w_s, labels, x_t, w_t, divergence, alpha, ignore_index,
                                                        V, chunk_size, label_smoothing, targets, need_gx, need_gw)
        ctx.save_for_backward(grad_x, grad_w)
        ctx.mark_non_differentiable(ce, kd)
        return loss, ce, kd

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_kd):
        grad_x, grad_w = ctx.saved_tensors
        # out of place, so a second backward through the same graph (retain_graph) sees the same values
        gx = grad_x * grad_loss.to(grad_x.dtype) if grad_x is not None else None
        gw = grad_w * grad_loss.to(grad_w.dtype) if grad_w is not None else None
        return gx, gw, None, None, None, None, None, None, None, None, None, None, None, None


def chunked_linear_kd_ce(x_s, w_s, labels, x_t=None, w_t=None, *, alpha=0.0, temperature=1.0,
                         ignore_index=-100, vocab_size=None, chunk_size=None, kl="forward", top_k=None,
                         top_k_variant="teacher", label_smoothing=0.0, jsd_beta=0.5, divergence=None, targets=None):
    """distill_loss(x_s @ w_s.T, labels, x_t @ w_t.T, ...) computed chunk by chunk, without the [N, V] logits.

    x_s [N, H_s] (or [..., H_s]) student hidden states, w_s [V, H_s] student lm_head weight (both may need
    grad); x_t [N, H_t], w_t [V_t >= vocab_size, H_t] teacher, constants; None = no teacher (CE only).
    Options exactly as distill_loss: alpha, temperature (0 = the teacher's argmax as hard labels), kl in
    {"forward", "reverse", "jsd"}, jsd_beta, top_k (a count, or a fraction p < 1: k = round(p·V)),
    top_k_variant in {"teacher", "both", "bucket"}, label_smoothing, ignore_index, vocab_size (columns past
    it are padding, excluded for both models). divergence: your own per-chunk function (s, t) -> [C]
    (replaces kl/temperature/top_k; see the module docstring). chunk_size: tokens per chunk (None: a default).
    targets: precomputed teacher targets in place of x_t/w_t, a dict of [N, ...] tensors the divergence reads
    chunk by chunk (sparse_kd.py: a teacher cache's rows); needs `divergence`.
    Returns (loss, ce, kd): loss differentiable w.r.t. x_s and w_s, ce and kd detached for logging."""
    check_kd_args(alpha, temperature)
    check_loss_options(kl, temperature, top_k, top_k_variant, jsd_beta)
    x_s, labels, x_t, V = check_and_flatten(x_s, w_s, labels, x_t, w_t, vocab_size, chunk_size)
    if targets is not None and (x_t is not None or divergence is None
                                or any(a.shape[0] != x_s.shape[0] for a in targets.values())):
        raise ValueError("targets replace x_t/w_t, need a divergence that reads them, and one row per token")
    if divergence is None:
        divergence = pick_divergence(kl, float(temperature), resolve_top_k(top_k, V), top_k_variant, jsd_beta)

    need_gx = torch.is_grad_enabled() and x_s.requires_grad
    need_gw = torch.is_grad_enabled() and w_s.requires_grad
    args = (x_s, w_s, labels, x_t, w_t, divergence, float(alpha), ignore_index, V, chunk_size, float(label_smoothing),
            targets)
    # precision is decided inside (fp32 logits and softmax): an enclosing autocast must not recast the matmuls
    with torch.autocast(x_s.device.type, enabled=False):
        if need_gx or need_gw:
            return _ChunkedLinearKDCE.apply(*args, need_gx, need_gw)
        loss, ce, kd, _, _ = _chunked_forward(*args, False, False)   # evaluation: no gradient work at all
        return loss, ce, kd


# ----------------------------------------------------------------------------------------------------
# The front door train.py uses: the faster kernel where it applies, this file everywhere else

def in_kernel(has_teacher, kl="forward", temperature=1.0, top_k=None, label_smoothing=0.0):
    """Whether fused_kd.py's kernel computes this loss: plain CE, or forward KL at T > 0, without top-k or smoothing."""
    return label_smoothing == 0 and (not has_teacher or (kl == "forward" and temperature > 0 and not top_k))


def linear_kd_ce(x_s, w_s, labels, x_t=None, w_t=None, **options):
    """The loss from hidden states, never the [N, V] logits, with chunked_linear_kd_ce's arguments:
    fused_kd.py's one-pass kernel for the paper's loss and plain CE, chunked_linear_kd_ce for the rest."""
    o = {"kl": "forward", "temperature": 1.0, "top_k": None, "label_smoothing": 0.0, **options}
    if in_kernel(x_t is not None, o["kl"], o["temperature"], o["top_k"], o["label_smoothing"]):
        kernel_options = ("alpha", "temperature", "ignore_index", "vocab_size", "chunk_size")
        return fused_linear_kd_ce(x_s, w_s, labels, x_t, w_t, **{k: v for k, v in o.items() if k in kernel_options})
    return chunked_linear_kd_ce(x_s, w_s, labels, x_t, w_t, **o)
