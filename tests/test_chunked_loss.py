"""chunked_loss.chunked_linear_kd_ce against the reference distill_loss on full logits, for every ablation.

Each case is checked twice:
  1. in float64, against distill_loss in float64: the chunking itself (global token count, padding columns,
     a short last chunk, a chunk of ignored tokens, dW summed over chunks) must be exact up to float64 rounding;
  2. in float32, against the same float64 reference, within a bound derived for float32 (below), which the
     naive float32 computation (full logits + distill_loss + autograd) must meet too: the chunked loss has to be
     as accurate as the thing it replaces, and the bound is shown not to be tighter than float32 allows.

The bound. Rounding in each reduction of length L costs at most L·u relative to the sum of the absolute
values of its terms (Higham, first order), u = 2^-24 in float32 and 2^-53 in float64. A value here goes through
three reductions: the logits (length H), the softmax normalisers and the dX matmul (length V), the mean over
tokens and the dW matmul (length N), so its error is at most u·(H + V + N) times the magnitude of its terms:
  loss: the per-token terms are >= 0, but each carries the error of its logits (|δs| <= H·u·(|x|·|w|)), so
        the magnitude is loss + mean over valid rows of max_v (|x|·|w|)_v;
  dX = dS @ W: the magnitude is max (|dS| @ |W|);  dW = dS.T @ X: max (|dS|.T @ |X|), dS = dL/ds in float64.
Times a factor c = 4·max(1, 1/T): the log-softmax is 2-Lipschitz in the max norm (|δ log p|_∞ <= 2|δs|_∞), the
logits enter divided by T, and both the student's and the teacher's logits carry their own rounding. (The
|dS| magnitudes assume teacher and student disagree, so |p − q| is of the order of p + q, as with the
random models here.) The worst case grows with L where random rounding grows with √L, so the bound is loose
by about √(H + V + N) ≈ 13 here (both implementations use ~1% of it for the gradients), and a real bug (a
dropped T², a wrong renormalisation, a chunk-local mean) moves the results by 1e-3 or more, against bounds of
~3e-6 for dX and dW and ~7e-4 for the loss (whose magnitude term counts |x|·|w|, not the logits' cancellation).
"""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from chunked_loss import chunked_linear_kd_ce, forward_kl  # noqa: E402
from distill_loss import distill_loss  # noqa: E402

N, H, H_T, V_PAD, V_REAL, CHUNK = 45, 16, 12, 104, 97, 8   # N % CHUNK = 5: a short last chunk; 7 padding columns
U = {torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}


def make_inputs(seed=0):
    """fp64 inputs whose fp32 casts are exact (the fp32 and fp64 runs see the same numbers)."""
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(N, H, generator=g, dtype=torch.float64).float().double()
    w_s = (torch.randn(V_PAD, H, generator=g, dtype=torch.float64) * 0.7).float().double()
    x_t = torch.randn(N, H_T, generator=g, dtype=torch.float64).float().double()
    w_t = (torch.randn(V_PAD, H_T, generator=g, dtype=torch.float64) * 0.7).float().double()
    w_s[V_REAL:] *= 30   # padding rows with huge logits: any leak into a softmax would change everything
    w_t[V_REAL:] *= 30
    y = torch.randint(0, V_REAL, (N,), generator=g)
    y[CHUNK:2 * CHUNK] = -100   # the second chunk has no valid token
    y[[0, 21, 44]] = -100        # and a few ignored tokens elsewhere (44: in the short last chunk)
    return x_s, w_s, x_t, w_t, y


def reference(x_s, w_s, y, x_t, w_t, **kw):
    """distill_loss on full logits, gradients by autograd: (loss, ce, kd, dX, dW, dS)."""
    x_s, w_s = x_s.clone().requires_grad_(), w_s.clone().requires_grad_()
    s = x_s @ w_s.T
    s.retain_grad()
    t = x_t @ w_t.T if x_t is not None else None
    loss, ce, kd = distill_loss(s, y, t, vocab_size=V_REAL, **kw)
    loss.backward()
    return loss.detach(), ce, kd, x_s.grad, w_s.grad, s.grad


def chunked(x_s, w_s, y, x_t, w_t, **kw):
    x_s, w_s = x_s.clone().requires_grad_(), w_s.clone().requires_grad_()
    loss, ce, kd = chunked_linear_kd_ce(x_s, w_s, y, x_t, w_t, vocab_size=V_REAL, chunk_size=CHUNK, **kw)
    loss.backward()
    assert not ce.requires_grad and not kd.requires_grad
    return loss.detach(), ce, kd, x_s.grad, w_s.grad


def bounds(x_s, w_s, y, dS, loss, dtype, T):
    """Absolute error bounds (loss, dX, dW) of a dtype computation, from the derivation in the module docstring."""
    u, L = U[dtype], H + V_REAL + N
    c = 4 * max(1.0, 1.0 / T if T > 0 else 1.0)
    valid = y != -100
    logit_mag = (x_s.abs() @ w_s[:V_REAL].abs().T).amax(1)[valid].mean() if valid.any() else torch.tensor(0.0)
    mag_loss = loss.abs() + logit_mag
    mag_dx = (dS[:, :V_REAL].abs() @ w_s[:V_REAL].abs()).max()
    mag_dw = (dS[:, :V_REAL].abs().T @ x_s.abs()).max()
    return [c * u * L * m.item() for m in (mag_loss, mag_dx, mag_dw)]


def check(got, ref, tol, what):
    err = (got.double() - ref).abs().max().item()
    assert err <= tol, f"{what}: max |error| {err:.3e} > bound {tol:.3e}"
    return err


# (name, options). Every per-token loss of distill_loss, with a teacher unless said otherwise.
CASES = [
    ("forward T=2", dict(alpha=0.5, temperature=2.0)),
    ("reverse T=1", dict(alpha=0.5, kl="reverse")),
    ("reverse T=2 alpha=1", dict(alpha=1.0, kl="reverse", temperature=2.0)),
    ("hard labels T=0", dict(alpha=0.5, temperature=0.0)),
    ("topk teacher k=7", dict(alpha=0.5, top_k=7, top_k_variant="teacher")),
    ("topk both k=7 T=2", dict(alpha=0.5, top_k=7, top_k_variant="both", temperature=2.0)),
    ("topk bucket p=0.1", dict(alpha=0.5, top_k=0.1, top_k_variant="bucket")),
    ("topk bucket k=30 T=0.5", dict(alpha=1.0, top_k=30, top_k_variant="bucket", temperature=0.5)),
    ("label smoothing, teacher", dict(alpha=0.5, label_smoothing=0.1)),
    ("label smoothing, no teacher", dict(label_smoothing=0.3, teacher=False)),
    ("jsd beta=0.5", dict(alpha=0.5, kl="jsd", jsd_beta=0.5)),
    ("jsd beta=0.2 T=2", dict(alpha=0.7, kl="jsd", jsd_beta=0.2, temperature=2.0)),
]


@pytest.mark.parametrize("name,opts", CASES, ids=[c[0] for c in CASES])
def test_matches_reference(name, opts):
    opts = dict(opts)
    teacher = opts.pop("teacher", True)
    x_s, w_s, x_t, w_t, y = make_inputs()
    if not teacher:
        x_t = w_t = None
    T = opts.get("temperature", 1.0)
    loss64, ce64, kd64, dx64, dw64, dS64 = reference(x_s, w_s, y, x_t, w_t, **opts)
    assert torch.all(dw64[V_REAL:] == 0)

    # 1. float64: the chunking is exact up to float64 rounding (same bound, u = 2^-53)
    b64 = bounds(x_s, w_s, y, dS64, loss64, torch.float64, T)
    got = chunked(x_s, w_s, y, x_t, w_t, **opts)
    for g, r, tol, what in zip((got[0], got[1], got[2], got[3], got[4]), (loss64, ce64, kd64, dx64, dw64),
                               (b64[0], b64[0], b64[0], b64[1], b64[2]), ("loss", "ce", "kd", "dX", "dW")):
        check(g, r, tol, f"{name}, float64 {what}")
    assert torch.all(got[4][V_REAL:] == 0), "padding rows of W_s must get exactly zero gradient"

    # 2. float32: chunked and naive both within the float32 bound
    b32 = bounds(x_s, w_s, y, dS64, loss64, torch.float32, T)
    f32 = [a.float() if a is not None else None for a in (x_s, w_s, x_t, w_t)]
    got = chunked(f32[0], f32[1], y, f32[2], f32[3], **opts)
    naive = reference(f32[0], f32[1], y, f32[2], f32[3], **opts)
    for label, res in (("chunked", got), ("naive", naive)):
        for g, r, tol, what in zip(res[:5], (loss64, ce64, kd64, dx64, dw64),
                                   (b32[0], b32[0], b32[0], b32[1], b32[2]), ("loss", "ce", "kd", "dX", "dW")):
            check(g, r, tol, f"{name}, float32 {label} {what}")


def test_own_divergence_argument_and_eval_path():
    """A user's divergence function runs through the same chunking; without grad, loss/ce/kd are the same."""
    x_s, w_s, x_t, w_t, y = make_inputs(seed=1)
    mine = chunked(x_s, w_s, y, x_t, w_t, alpha=0.4, divergence=lambda s, t: forward_kl(s, t, 2.0))
    named = chunked(x_s, w_s, y, x_t, w_t, alpha=0.4, temperature=2.0)
    for a, b in zip(mine, named):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.no_grad():
        loss, ce, kd = chunked_linear_kd_ce(x_s, w_s, y, x_t, w_t, alpha=0.4, temperature=2.0, vocab_size=V_REAL,
                                            chunk_size=CHUNK)
    torch.testing.assert_close((loss, ce, kd), named[:3], rtol=1e-14, atol=1e-14)


def test_backward_scales_by_upstream_gradient_and_all_ignored_is_zero():
    x_s, w_s, x_t, w_t, y = make_inputs(seed=2)
    xs, ws = x_s.clone().requires_grad_(), w_s.clone().requires_grad_()
    (3.0 * chunked_linear_kd_ce(xs, ws, y, x_t, w_t, alpha=0.5, kl="reverse", vocab_size=V_REAL,
                                chunk_size=CHUNK)[0]).backward()
    ref = chunked(x_s, w_s, y, x_t, w_t, alpha=0.5, kl="reverse")
    torch.testing.assert_close(xs.grad, 3.0 * ref[3], rtol=1e-15, atol=0)
    torch.testing.assert_close(ws.grad, 3.0 * ref[4], rtol=1e-15, atol=0)
    none = chunked(x_s, w_s, torch.full_like(y, -100), x_t, w_t, alpha=0.5, top_k=5, top_k_variant="both")
    assert none[0].item() == 0.0 and torch.all(none[3] == 0) and torch.all(none[4] == 0)


@pytest.mark.parametrize("kwargs,match", [(dict(kl="jensen"), "kl"), (dict(top_k_variant="rest"), "top_k_variant"),
                                          (dict(kl="jsd", jsd_beta=1.0), "jsd_beta"), (dict(alpha=2.0), "alpha"),
                                          (dict(kl="reverse", top_k=5), "top_k"), (dict(chunk_size=0), "chunk_size"),
                                          (dict(vocab_size=V_PAD + 1), "vocab_size")])
def test_bad_arguments(kwargs, match):
    x_s, w_s, x_t, w_t, y = make_inputs()
    kwargs = {"vocab_size": V_REAL, **kwargs}
    with pytest.raises(ValueError, match=match):
        chunked_linear_kd_ce(x_s, w_s, y, x_t, w_t, **kwargs)


@pytest.mark.parametrize("group_chunks", [2, 4])
def test_gradient_gemms_over_several_chunks(monkeypatch, group_chunks):
    """On CUDA the gradient GEMMs run once per group of chunks (chunked_loss.gemm_rows; sized by arithmetic
    intensity); forced here on CPU: groups of 2 chunks (a partial last group of 1 short chunk) and of 4 (a short
    last group), in float64 within the float64 bound of test_matches_reference."""
    import chunked_loss
    monkeypatch.setattr(chunked_loss, "gemm_rows", lambda chunk, device: group_chunks * chunk)
    x_s, w_s, x_t, w_t, y = make_inputs(seed=3)
    opts = dict(alpha=0.5, kl="reverse", temperature=2.0)
    loss64, ce64, kd64, dx64, dw64, dS64 = reference(x_s, w_s, y, x_t, w_t, **opts)
    b64 = bounds(x_s, w_s, y, dS64, loss64, torch.float64, 2.0)
    got = chunked(x_s, w_s, y, x_t, w_t, **opts)
    check(got[0], loss64, b64[0], "loss")
    check(got[3], dx64, b64[1], "dX")
    check(got[4], dw64, b64[2], "dW")
