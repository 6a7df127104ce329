"""model.py: parameter counts against the shape formula, causality, GQA, and tying."""

import pytest
import torch

from model import GPT, PRESETS, GPTConfig, config_from_preset, count_params_formula
from plan import preset_vocab


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_param_count_matches_formula(name):
    cfg = config_from_preset(name, preset_vocab(name), 1024)
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.num_params() == count_params_formula(cfg)


def test_named_sizes_are_about_what_they_say():
    def params(name):
        cfg = config_from_preset(name, preset_vocab(name), 1024)
        return count_params_formula(cfg) / 1e9
    for name, billions in [("gpt2-20m", 0.02), ("gpt2-60m", 0.06), ("gpt2-160m", 0.16), ("gpt2-410m", 0.41),
                           ("gpt2-1b", 1.0), ("llama-0.7b", 0.7), ("llama-1.7b", 1.7), ("llama-3.8b", 3.8),
                           ("llama-8b", 8.0), ("qwen3-0.6b", 0.6), ("qwen3-1.0b", 1.0)]:
        assert abs(params(name) - billions) / billions < 0.12, name


@pytest.mark.parametrize("cfg", [
    GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_embd=32, n_head=4, n_kv_head=2),
    GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_embd=32, n_head=4, qk_norm=True, tie_embeddings=True),
])
def test_causal_and_shapes(cfg):
    torch.manual_seed(0)
    model = GPT(cfg)
    idx = torch.randint(0, 64, (2, 16))
    h = model(idx)
    assert h.shape == (2, 16, 32)
    assert model.logits(idx).shape == (2, 16, 64)
    changed = idx.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 64
    h2 = model(changed)
    torch.testing.assert_close(h[:, :10], h2[:, :10])       # the past can't see the future
    assert not torch.allclose(h[:, 10:], h2[:, 10:])


def test_tied_embeddings_share_storage_and_count_once():
    cfg = GPTConfig(vocab_size=64, block_size=32, n_layer=1, n_embd=32, n_head=4, tie_embeddings=True)
    model = GPT(cfg)
    assert model.lm_head.weight.data_ptr() == model.embed_tokens.weight.data_ptr()
    assert model.num_params() == count_params_formula(cfg)


@pytest.mark.parametrize("tie", [False, True])
def test_flops_per_token_is_palms_count(tie):
    """PaLM's count: 2 FLOPs per matrix weight plus QK^T and AV over the full T×T square. An independent count:
    torch's FlopCounterMode over one forward whose attention runs as plain matmuls (SDPA's math backend: the
    whole square, causal half included, as PaLM counts it)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    cfg = GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, head_dim=16,
                    tie_embeddings=tie)
    model, T = GPT(cfg), 32
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.logits(torch.zeros(1, T, dtype=torch.long))
    assert counter.get_flop_counts()["Global"].get(torch.ops.aten.bmm, 0) > 0   # attention was counted
    assert model.flops_per_token(T, backward=False) * T == counter.get_total_flops()
    assert model.flops_per_token(T) == 3 * model.flops_per_token(T, backward=False)


def test_weight_decay_on_every_parameter_or_matrices_only():
    cfg = GPTConfig(vocab_size=64, block_size=32, n_layer=1, n_embd=32, n_head=4, qk_norm=True)
    model = GPT(cfg)
    norms = {id(p) for n, p in model.named_parameters() if "norm" in n}
    for decay_params, decayed_norms in (("matrices", False), ("all", True)):
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", decay_params)
        decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
        assert (norms <= decayed) == decayed_norms and not (norms & decayed and not decayed_norms)
        assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
        assert id(model.lm_head.weight) in decayed
