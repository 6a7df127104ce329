"""export.py: transformers loads the exported folder and computes the same logits as
model.py, for tied/untied, GQA and QK-norm (Qwen3) models. This is the independent
check that model.py is a correct LLaMA."""

import json
import os
import sys
from dataclasses import asdict

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from export import export  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

# a plain import, not importorskip: transformers is in requirements.txt (the README's install line), and this is
# the only independent check of model.py, so a missing transformers must fail the suite rather than skip it
import transformers  # noqa: E402

VARIANTS = {
    "tied-mha":        dict(n_head=4, n_kv_head=4, tie_embeddings=True, rope_theta=500000.0),
    "untied-gqa":      dict(n_head=4, n_kv_head=2, tie_embeddings=False, rope_theta=12345.0),
    "qknorm-tied-gqa": dict(n_head=4, n_kv_head=1, head_dim=24, tie_embeddings=True, qk_norm=True,
                            rope_theta=1e6, norm_eps=1e-6),
    "qknorm-untied":   dict(n_head=2, n_kv_head=2, tie_embeddings=False, qk_norm=True, rope_theta=777.0),
}


def random_checkpoint(**kw):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=264, block_size=64, n_layer=2, n_embd=48, mlp_hidden=96, **kw)
    model = GPT(cfg)
    with torch.no_grad():  # norms away from 1 and larger weights, so a mixed-up tensor shows
        for name, p in model.named_parameters():
            p.copy_(1 + 0.5 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    ckpt = dict(model=model.state_dict(), model_config=asdict(cfg), tokenizer="bytes", n_vocab=257,
                config={}, step=3, tokens_seen=300)
    return model.eval(), ckpt


def hf_logits(folder, x):
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return hf(x).logits, hf


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformers_logits_match(variant, tmp_path):
    model, ckpt = random_checkpoint(**VARIANTS[variant])
    export(ckpt, tmp_path, with_tokenizer=False)
    x = torch.randint(0, 257, (2, 50), generator=torch.Generator().manual_seed(1))
    theirs, hf = hf_logits(tmp_path, x)
    with torch.no_grad():
        ours = model.logits(x)[..., :257]  # the export keeps the tokenizer's 257 rows of the model's 264
    assert theirs.shape == ours.shape == (2, 50, 257)
    assert (theirs - ours).abs().max().item() <= 1e-4
    assert ours.std() > 0.5  # the comparison is between logits that vary, not near-zeros

    cfg = model.config
    expected = "Qwen3ForCausalLM" if cfg.qk_norm else "LlamaForCausalLM"
    assert type(hf).__name__ == expected
    assert hf.config.tie_word_embeddings == cfg.tie_embeddings
    assert (hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()) == cfg.tie_embeddings
    from safetensors import safe_open
    with safe_open(os.path.join(tmp_path, "model.safetensors"), "pt") as f:
        assert ("lm_head.weight" in f.keys()) != cfg.tie_embeddings


def test_a_wrong_export_is_caught(tmp_path):
    """Negative control: the tolerance above is tight enough to see a wrong RoPE θ."""
    model, ckpt = random_checkpoint(**VARIANTS["untied-gqa"])
    export(ckpt, tmp_path, with_tokenizer=False)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_theta"] = config["rope_parameters"]["rope_theta"] = 10000.0
    (tmp_path / "config.json").write_text(json.dumps(config))
    x = torch.randint(0, 257, (1, 50), generator=torch.Generator().manual_seed(1))
    theirs, _ = hf_logits(tmp_path, x)
    with torch.no_grad():
        assert (theirs - model.logits(x)[..., :257]).abs().max().item() > 1e-3


def test_bytes_tokenizer_and_folder_contents(tmp_path):
    model, ckpt = random_checkpoint(**VARIANTS["tied-mha"])
    export(ckpt, tmp_path, dtype="bfloat16")
    names = set(os.listdir(tmp_path))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "Héllo, wörld!\n\tA 12345 test — 日本"
    assert tok(text)["input_ids"] == list(text.encode("utf-8"))
    assert tok.decode(list(text.encode("utf-8"))) == text
    assert tok.eos_token_id == 256
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert hf.dtype == torch.bfloat16
    assert torch.equal(hf.model.norm.weight, model.norm.weight.to(torch.bfloat16))


@pytest.mark.parametrize("variant", ["tied-mha", "untied-gqa"])
def test_export_writes_only_the_tokenizers_rows(variant, tmp_path):
    """lm-eval's log_softmax runs over every logit the HF model returns: with the padding rows
    kept it would normalise over 7 columns nanokd's eval.py never sees. Planted in the model: padding
    rows that would give those columns large logits, so keeping them would change every log-prob."""
    model, ckpt = random_checkpoint(**VARIANTS[variant])
    with torch.no_grad():
        for name in ("embed_tokens.weight", "lm_head.weight"):
            ckpt["model"][name][257:] = 3.0
    model.load_state_dict(ckpt["model"])
    export(ckpt, tmp_path, with_tokenizer=False)
    assert json.loads((tmp_path / "config.json").read_text())["vocab_size"] == 257
    from safetensors import safe_open
    with safe_open(os.path.join(tmp_path, "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes["model.embed_tokens.weight"] == (257, 48)
    assert shapes.get("lm_head.weight", (257, 48)) == (257, 48)
    x = torch.randint(0, 257, (1, 40), generator=torch.Generator().manual_seed(3))
    theirs, _ = hf_logits(tmp_path, x)
    with torch.no_grad():
        full = model.logits(x)
    ours = torch.log_softmax(full[..., :257], -1)  # what eval.py scores with
    assert (torch.log_softmax(theirs, -1) - ours).abs().max().item() <= 1e-4
    # negative control: the softmax over all 264 rows is measurably different
    assert (torch.log_softmax(full, -1)[..., :257] - ours).abs().max().item() > 1e-2
