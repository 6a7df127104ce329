"""plan.py's memory arithmetic against what a CPU can measure: the bytes one transformer block keeps for its
backward under bf16 autocast (saved-tensor hooks), and the one table of accelerator peaks."""

import pytest
import torch

import plan
from model import Block, config_from_preset, rope_cos_sin


def saved_bytes(cfg, batch, T):
    """Bytes of the distinct storages one block's autograd graph saves in a bf16-autocast forward (the block's
    own fp32 parameters excluded: they are the optimizer's, counted apart)."""
    torch.manual_seed(0)
    block = Block(cfg)
    params = {p.untyped_storage().data_ptr() for p in block.parameters()}
    x = torch.randn(batch, T, cfg.n_embd, requires_grad=True)
    cos, sin = rope_cos_sin(T, cfg.head_dim, cfg.rope_theta, "cpu")
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x, cos, sin)
    return sum(seen.values())


SHAPES = {   # GQA with a wide MLP; multi-head with head_dim ≠ d/heads; QK-norm (Qwen3-style)
    "gqa": dict(n_embd=256, n_head=8, n_kv_head=2, head_dim=32, mlp_hidden=1024),
    "mha": dict(n_embd=192, n_head=4, n_kv_head=4, head_dim=64, mlp_hidden=512),
    "qk_norm": dict(n_embd=128, n_head=4, n_kv_head=2, head_dim=64, mlp_hidden=384, qk_norm=True),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_block_activations_and_weight_copies_as_measured(name):
    # Two batch sizes at one length separate what grows with tokens (activations) from what does not
    # (autocast's bf16 weight copies, RoPE's cos/sin): saved = tokens·a + b. Both are counts of bytes, so the
    # formula must hit them exactly; a model change that saves another tensor should fail here and be counted.
    T = 32
    cfg = config_from_preset("tiny-64", 257, T, **SHAPES[name])
    small, large = saved_bytes(cfg, 1, T), saved_bytes(cfg, 3, T)
    per_token = (large - small) / (2 * T)
    assert per_token == plan.block_activation_bytes_per_token(cfg), (per_token, plan.block_activation_bytes_per_token(cfg))
    matmul_weights = sum(p.numel() for p in Block(cfg).parameters() if p.dim() == 2)
    cos_sin = 2 * 4 * T * cfg.head_dim
    assert small - T * per_token - cos_sin == plan.AUTOCAST_COPY_BYTES * matmul_weights


def test_one_peak_table():
    # PCIe and NVL parts run at lower clocks than their family's SXM figure, which would otherwise match first
    assert plan.peak_for_name("NVIDIA H100 PCIe") == 756e12
    assert plan.peak_for_name("NVIDIA H100 NVL") == 835e12
    assert plan.peak_for_name("NVIDIA H100 80GB HBM3") == 989e12
    assert plan.peak_for_name("NVIDIA H200") == 989e12 and plan.peak_for_name("NVIDIA GH200 480GB") == 989e12
    assert plan.peak_for_name("some CPU") == 0.0
    src = open(plan.__file__.replace("plan.py", "bench/bench_loss.py")).read()
    assert "peak_for_name" in src and "TFLOPS = [" not in src, "bench_loss.py must read plan.py's table, not its own"
