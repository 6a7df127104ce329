"""
fused_kd.fused_linear_kd_ce against the reference distill_loss on full logits with autograd.

Both implementations are checked: "torch" on CPU, "triton" on CUDA when there is a GPU, else in
Triton's CPU interpreter (TRITON_INTERPRET=1, set below before triton is imported; exact but slow,
hence the small shapes). Errors are norm-based: rel(a, b) = ‖a − b‖₂ / ‖b‖₂ over all entries, in
float64. On a GPU machine this file is also the GPU test (bench/gpu_check.sh runs it).
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()
# The interpreter must be chosen before triton is imported (its standard library is jitted at import).
# If another module imported triton first, the triton tests rerun in a fresh process (last test below).
TRITON_PREIMPORTED = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET", "0") != "1"
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

import fused_kd  # noqa: E402
from distill_loss import distill_loss  # noqa: E402
from fused_kd import fused_linear_kd_ce  # noqa: E402

SHIPPED_BLOCK_V = fused_kd.TRITON_BLOCK_V   # (the small_blocks fixture below shrinks it for most tests)
TRITON_OK = fused_kd.HAS_TRITON and (CUDA or not TRITON_PREIMPORTED)
IMPLS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not TRITON_OK, reason="no triton, or imported "
                                                                  "before TRITON_INTERPRET=1 (see the last test)"))]


def device_of(impl):
    return "cuda" if impl == "triton" and CUDA else "cpu"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # these shapes are tiny: a second OpenMP thread only adds fork/join waits (seconds on a busy machine)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    # V = 300 then spans three kernel blocks, the last one partial
    monkeypatch.setattr(fused_kd, "TRITON_BLOCK_V", 128)


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def reference(x_s, w_s, y, x_t=None, w_t=None, **kw):
    """distill_loss on full fp32 logits, gradients by autograd: (loss, ce, kd, grad_x, grad_w)."""
    x = x_s.detach().float().requires_grad_()
    w = w_s.detach().float().requires_grad_()
    t = x_t.float() @ w_t.float().T if x_t is not None else None
    loss, ce, kd = distill_loss(x @ w.T, y, t, **kw)
    loss.backward()
    return loss.detach(), ce, kd, x.grad, w.grad


def fused(x_s, w_s, y, x_t=None, w_t=None, **kw):
    x = x_s.detach().clone().requires_grad_()
    w = w_s.detach().clone().requires_grad_()
    loss, ce, kd = fused_linear_kd_ce(x, w, y, x_t, w_t, **kw)
    loss.backward()
    return loss.detach(), ce, kd, x.grad, w.grad


def make(N=20, V=300, H_s=16, H_t=24, vocab=280, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(N, H_s, generator=g).to(dtype)
    w_s = (torch.randn(V, H_s, generator=g) * 0.5).to(dtype)
    x_t = torch.randn(N, H_t, generator=g).to(dtype)
    w_t = (torch.randn(V, H_t, generator=g) * 0.5).to(dtype)
    y = torch.randint(0, vocab, (N,), generator=g)
    y[8:16] = -100          # with chunk_size=8 the second chunk has no valid token at all
    y[[i for i in (3, 17) if i < N]] = -100
    return tuple(v.to(device) for v in (x_s, w_s, y, x_t, w_t))


def assert_close(got, want, tol):
    names = ["loss", "ce", "kd", "grad_x", "grad_w"]
    for name, a, b in zip(names, got, want):
        assert torch.isfinite(a).all(), name
        err = rel(a, b) if b.abs().max() > 0 else a.abs().max().item()
        assert err < tol, f"{name}: relative error {err:.2e} >= {tol}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("T", [0.5, 1.0, 2.0])
def test_matches_reference(impl, alpha, T):
    # N=20 with chunks of 8 (last one partial, middle one all ignored), H_s != H_t, V=300 not a multiple
    # of the block, vocab_size=280 < V (20 padding rows)
    x_s, w_s, y, x_t, w_t = make(device=device_of(impl))
    kw = dict(alpha=alpha, temperature=T, vocab_size=280)
    want = reference(x_s, w_s, y, x_t, w_t, **kw)
    got = fused(x_s, w_s, y, x_t, w_t, chunk_size=8, impl=impl, **kw)
    assert_close(got, want, 1e-5)
    assert (got[4][280:] == 0).all(), "padding rows of w_s must get exactly zero gradient"
    assert got[2] > 0   # kd is computed (and positive here) even when alpha = 0


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_inputs(impl):
    x_s, w_s, y, x_t, w_t = make(dtype=torch.bfloat16, device=device_of(impl))
    kw = dict(alpha=0.5, temperature=1.0, vocab_size=280)
    want = reference(x_s, w_s, y, x_t, w_t, **kw)   # fp32 math on the same (bf16-valued) inputs
    got = fused(x_s, w_s, y, x_t, w_t, chunk_size=8, impl=impl, **kw)
    assert got[3].dtype == torch.bfloat16 and got[4].dtype == torch.bfloat16
    assert_close(got, want, 2e-2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["offset", "spread"])
def test_logits_of_magnitude_1e4(impl, kind):
    # Integer-valued inputs make every logit exact in fp32 whatever the matmul's summation order, so the
    # reference sees the very same logits and any difference is the softmax math's own.
    g = torch.Generator().manual_seed(1)
    N, V, H = 12, 300, 16
    x_s = torch.randint(-2, 3, (N, H), generator=g).float()
    x_t = torch.randint(-2, 3, (N, H), generator=g).float()
    w_s = torch.randint(-3, 4, (V, H), generator=g).float()
    w_t = torch.randint(-3, 4, (V, H), generator=g).float()
    if kind == "offset":   # every logit near +1e4 (student) / -2e4 (teacher), O(10) apart
        x_s[:, 0] = x_t[:, 0] = 1.0
        w_s[:, 0], w_t[:, 0] = 10240.0, -20480.0
    else:                  # logits spread over ±2e4: nearly one-hot distributions
        w_s *= 256.0
        w_t *= 256.0
    y = torch.randint(0, V, (N,), generator=g)
    y[5] = -100
    x_s, w_s, y, x_t, w_t = (v.to(device_of(impl)) for v in (x_s, w_s, y, x_t, w_t))
    for T in (1.0, 2.0):
        kw = dict(alpha=0.5, temperature=T)
        want = reference(x_s, w_s, y, x_t, w_t, **kw)
        got = fused(x_s, w_s, y, x_t, w_t, chunk_size=5, impl=impl, **kw)
        if kind == "offset":
            # dL/dx[:, 0] = 10240·Σ_v dL/ds_v = 0 exactly (a shift of all logits changes nothing); both sides
            # compute it as rounding noise of a cancelling sum, so compare the other columns
            assert got[3][:, 0].abs().max() < 1e-3
            got, want = (*got[:3], got[3][:, 1:], got[4]), (*want[:3], want[3][:, 1:], want[4])
        assert_close(got, want, 1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_no_teacher_is_cross_entropy(impl):
    x_s, w_s, y, _, _ = make(device=device_of(impl))
    x = x_s.clone().requires_grad_()
    w = w_s.clone().requires_grad_()
    ce_loss = F.cross_entropy(x @ w.T, y, ignore_index=-100)
    ce_loss.backward()
    loss, ce, kd, gx, gw = fused(x_s, w_s, y, alpha=0.7, chunk_size=8, impl=impl)   # α is moot without a teacher
    assert rel(loss, ce_loss) < 1e-5 and rel(ce, ce_loss) < 1e-5 and kd == 0
    assert rel(gx, x.grad) < 1e-5 and rel(gw, w.grad) < 1e-5


@pytest.mark.parametrize("impl", IMPLS)
def test_all_tokens_ignored(impl):
    x_s, w_s, y, x_t, w_t = make(N=6, device=device_of(impl))
    y[:] = -100
    loss, ce, kd, gx, gw = fused(x_s, w_s, y, x_t, w_t, alpha=0.5, temperature=2.0, chunk_size=4, impl=impl)
    assert loss == 0 and ce == 0 and kd == 0
    assert (gx == 0).all() and (gw == 0).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_backward_scales_and_accumulates(impl):
    x_s, w_s, y, x_t, w_t = make(N=10, device=device_of(impl))
    kw = dict(alpha=0.4, temperature=1.0, vocab_size=280, chunk_size=4, impl=impl)
    _, _, _, gx1, gw1 = fused(x_s, w_s, y, x_t, w_t, **kw)

    x = x_s.clone().requires_grad_()
    w = w_s.clone().requires_grad_()
    (3 * fused_linear_kd_ce(x, w, y, x_t, w_t, **kw)[0]).backward()
    assert rel(x.grad, 3 * gx1) < 1e-6 and rel(w.grad, 3 * gw1) < 1e-6

    # gradient accumulation over two micro-steps: the second call's gradients add to the first's
    y2 = y.roll(1)
    _, _, _, gx2, gw2 = fused(x_s, w_s, y2, x_t, w_t, **kw)
    x.grad = w.grad = None
    fused_linear_kd_ce(x, w, y, x_t, w_t, **kw)[0].backward()
    fused_linear_kd_ce(x, w, y2, x_t, w_t, **kw)[0].backward()
    assert rel(x.grad, gx1 + gx2) < 1e-6 and rel(w.grad, gw1 + gw2) < 1e-6


@pytest.mark.parametrize("impl", IMPLS)
def test_vocab_of_256k(impl, monkeypatch):
    # fp32 running sums over 125 blocks of 2048 columns (the accumulator trouble others saw past V≈250k)
    monkeypatch.setattr(fused_kd, "TRITON_BLOCK_V", SHIPPED_BLOCK_V)
    x_s, w_s, y, x_t, w_t = make(N=3, V=256_000, H_s=8, H_t=8, vocab=256_000, device=device_of(impl))
    y[1] = 255_999
    kw = dict(alpha=0.5, temperature=1.0)
    assert_close(fused(x_s, w_s, y, x_t, w_t, impl=impl, **kw), reference(x_s, w_s, y, x_t, w_t, **kw), 1e-5)


@pytest.mark.skipif(not TRITON_OK, reason="no usable triton")
def test_kernel_writes_bf16_gradient():
    # On CUDA with bf16 matmuls the kernel stores dL/ds straight into a bf16 buffer; check that store path
    # against the fp32 one (on CPU too, in the interpreter).
    dev = device_of("triton")
    g = torch.Generator().manual_seed(2)
    S, Tb = fused_kd.row_buffer(6, 300, torch.float32, dev), fused_kd.row_buffer(6, 300, torch.float32, dev)
    S.copy_(torch.randn(6, 300, generator=g) * 4)
    Tb.copy_(torch.randn(6, 300, generator=g) * 4)
    y = torch.tensor([0, 5, -100, 299, 17, 42], device=dev)
    n = torch.tensor(5.0, device=dev)
    outs = []
    for dtype in (torch.float32, torch.bfloat16):
        G = fused_kd.row_buffer(6, 300, dtype, dev)
        ce, kd = torch.empty(6, device=dev), torch.empty(6, device=dev)
        fused_kd._rows_triton(S, Tb, G, y, n, ce, kd, 0.3, 2.0, -100, True, True)
        outs.append((G.float(), ce, kd))
        # the padding columns (300 -> 304) are read, but stay zero and count for nothing
        assert G.stride(0) == 304 and (G.as_strided((6, 4), (304, 1), G.storage_offset() + 300) == 0).all()
    (g32, ce32, kd32), (g16, ce16, kd16) = outs
    assert rel(g16, g32) < 1e-2 and torch.equal(ce16, ce32) and torch.equal(kd16, kd32)
    assert (g32[2] == 0).all()


def test_shapes_chunks_and_eval(monkeypatch):
    x_s, w_s, y, x_t, w_t = make(N=12)
    kw = dict(alpha=0.5, temperature=2.0, vocab_size=280, impl="torch")
    want = fused(x_s, w_s, y, x_t, w_t, chunk_size=5, **kw)
    for chunk_size in (1, 12, 1000, None):
        assert_close(fused(x_s, w_s, y, x_t, w_t, chunk_size=chunk_size, **kw), want, 1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):   # an enclosing autocast changes nothing
        assert_close(fused(x_s, w_s, y, x_t, w_t, chunk_size=5, **kw), want, 1e-6)
    # [B, T, H] hidden states and [B, T] labels, as a model gives them
    x = x_s.view(3, 4, -1).clone().requires_grad_()
    loss = fused_linear_kd_ce(x, w_s, y.view(3, 4), x_t.view(3, 4, -1), w_t, chunk_size=5, **kw)[0]
    loss.backward()
    assert rel(loss, want[0]) < 1e-6 and rel(x.grad.view(12, -1), want[3]) < 1e-6
    # evaluation: no grad wanted, no graph built, same numbers
    with torch.no_grad():
        loss, ce, kd = fused_linear_kd_ce(x_s, w_s.requires_grad_(), y, x_t, w_t, **kw)
    assert loss.grad_fn is None and rel(loss, want[0]) < 1e-6 and rel(kd, want[2]) < 1e-6
    # int32 labels work too
    assert rel(fused(x_s, w_s, y.int(), x_t, w_t, chunk_size=5, **kw)[0], want[0]) < 1e-6
    # auto picks the torch implementation for CPU tensors
    assert rel(fused_linear_kd_ce(x_s, w_s, y, x_t, w_t, alpha=0.5, temperature=2.0, vocab_size=280)[0], want[0]) < 1e-6


def test_bad_arguments(monkeypatch):
    x_s, w_s, y, x_t, w_t = make(N=4)
    for alpha, T in [(-0.1, 1.0), (1.5, 1.0), (0.5, 0.0), (0.5, -1.0)]:
        with pytest.raises(ValueError):
            fused_linear_kd_ce(x_s, w_s, y, x_t, w_t, alpha=alpha, temperature=T)
    with pytest.raises(ValueError):
        fused_linear_kd_ce(x_s, w_s, y, x_t, None, alpha=0.5)
    with pytest.raises(ValueError):
        fused_linear_kd_ce(x_s, w_s, y, impl="cuda")
    with pytest.raises(ValueError):
        fused_linear_kd_ce(x_s, w_s, y, vocab_size=301)
    with pytest.raises(ValueError, match="shapes don't fit"):
        fused_linear_kd_ce(x_s, w_s, y[:3])
    with pytest.raises(ValueError, match="teacher shapes don't fit"):
        fused_linear_kd_ce(x_s, w_s, y, x_t[:3], w_t, alpha=0.5)
    with pytest.raises(ValueError, match="chunk_size"):
        fused_linear_kd_ce(x_s, w_s, y, chunk_size=0)
    with pytest.raises(RuntimeError, match="outside"):
        fused_linear_kd_ce(x_s, w_s, torch.tensor([0, 1, 290, 2]), vocab_size=280)
    if fused_kd.HAS_TRITON:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            fused_linear_kd_ce(x_s, w_s, y, impl="triton")


def assert_ieee_fp32_pinned():
    assert "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE" not in os.environ and os.environ.get("NVIDIA_TF32_OVERRIDE") == "0", \
        "fp32 GEMMs may run as TF32 here: tests/conftest.py must pin the override variables"


def test_fp32_checks_run_in_ieee_fp32():
    # the precondition of every fp32 GPU check, checked on any machine
    assert_ieee_fp32_pinned()


@pytest.mark.skipif(not CUDA or not fused_kd.HAS_TRITON or torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_triton_launches_on_the_tensors_device():
    # Triton launches on the current device; the launcher makes that the tensors' (cuda:1 here, current cuda:0)
    x_s, w_s, y, x_t, w_t = make(device="cuda:1")
    with torch.cuda.device(0):
        got = fused(x_s, w_s, y, x_t, w_t, impl="triton", alpha=0.5, temperature=2.0, vocab_size=280)
    assert_close(got, reference(x_s, w_s, y, x_t, w_t, alpha=0.5, temperature=2.0, vocab_size=280), 1e-5)


@pytest.mark.skipif(not CUDA or not fused_kd.HAS_TRITON, reason="needs a GPU")
@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_at_training_shapes(impl, dtype, monkeypatch):
    # real block size and chunking, a Llama-3 vocabulary, bf16 activations as under autocast; fp32 is IEEE fp32
    # (the 1e-5 below is not TF32's): conftest.py pins the override variables, torch's flag is pinned here
    assert_ieee_fp32_pinned()
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(fused_kd, "TRITON_BLOCK_V", SHIPPED_BLOCK_V)
    x_s, w_s, y, x_t, w_t = make(N=4096, V=128_256, H_s=1024, H_t=2048, vocab=128_256, dtype=dtype, device="cuda")
    w_s, w_t = w_s / 16, w_t / 16   # logits of a few units, like a trained model's
    kw = dict(alpha=0.5, temperature=1.0)
    want = reference(x_s, w_s, y, x_t, w_t, **kw)
    got = fused(x_s, w_s, y, x_t, w_t, impl=impl, **kw)
    assert_close(got, want, 1e-5 if dtype == torch.float32 else 2e-2)
    assert rel(got[0], want[0]) < 1e-4   # the loss is fp32 math on the same logits, bf16 or not


@pytest.mark.slow
@pytest.mark.skipif(not (fused_kd.HAS_TRITON and TRITON_PREIMPORTED and not CUDA),
                    reason="only when triton was imported before this module could select the interpreter")
def test_triton_in_fresh_process():
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "triton", __file__],
                       env=env, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
