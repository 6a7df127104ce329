"""hf_checkpoint.py and data/hf_tokenizer.py: Hugging Face models in, their tokenizers for the data.

Tiny random transformers models saved with save_pretrained (safetensors) import with logits matching
transformers' own; export -> import -> export is the identity; what the GPT cannot represent is a clear
error naming the config field; a bf16 load holds no fp32 copy; a tokenizer.json trained here encodes,
delimits documents and hashes as data/hf_tokenizer.py says."""

import copy
import json
import os
import pickle
import subprocess
import sys
import textwrap
from dataclasses import asdict

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import transformers  # noqa: E402  (in requirements.txt; the independent reference, so never skipped)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

from data.hf_tokenizer import HFTokenizer, load_hf_tokenizer, tokenizer_identity  # noqa: E402
from data.tokenfile import load_tokens, read_header, write_tokens  # noqa: E402
from data.tokenizer import get_tokenizer, padded_vocab_size  # noqa: E402
from export import export  # noqa: E402
from hf_checkpoint import UnsupportedHFModel, is_hf_folder, model_from_hf  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

transformers.logging.set_verbosity_error()
V = 300
SHAPE = dict(vocab_size=V, hidden_size=48, intermediate_size=96, num_hidden_layers=2, max_position_embeddings=256)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          # small, so that at these sequence lengths the scaling moves most frequencies a lot
          "original_max_position_embeddings": 16}
VARIANTS = {
    "llama-untied-mha": ("llama", dict(num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0)),
    "llama-tied-gqa-headdim": ("llama", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                             tie_word_embeddings=True, rope_theta=500000.0)),
    "llama3-scaled-tied-gqa": ("llama", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                             tie_word_embeddings=True, rope_theta=500000.0, rope_scaling=LLAMA3)),
    "llama3-scaled-untied": ("llama", dict(num_attention_heads=4, num_key_value_heads=1, rope_theta=500000.0,
                                           rope_scaling=LLAMA3)),
    "qwen3-tied-gqa-headdim": ("qwen3", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                                             tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6)),
    # no head_dim given: transformers' Qwen3 default is 128 whatever the width, and config.json says so
    "qwen3-untied": ("qwen3", dict(num_attention_heads=2, num_key_value_heads=2, rope_theta=777.0)),
    "mistral-no-window": ("mistral", dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=None)),
}
CLASSES = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
           "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM)}


def save_hf(folder, family, seed=0, **kw):
    """A random transformers model, norms away from 1 and weights large enough that a mixed-up tensor shows."""
    config_cls, model_cls = CLASSES[family]
    torch.manual_seed(seed)
    hf = model_cls(config_cls(**copy.deepcopy({**SHAPE, **kw})))  # transformers edits rope dicts in place
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(1 + 0.5 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    hf.save_pretrained(folder)  # safetensors
    assert os.path.isfile(os.path.join(folder, "model.safetensors"))
    return hf.eval()


def tokens(n=50, batch=2, seed=1):
    return torch.randint(0, V, (batch, n), generator=torch.Generator().manual_seed(seed))


def max_logit_error(folder, x):
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ours, _ = model_from_hf(folder)
    with torch.no_grad():
        theirs, mine = hf(x).logits, ours.logits(x)
    assert theirs.shape == mine.shape and mine.std() > 0.5  # logits that vary, not near-zeros
    return (theirs - mine).abs().max().item()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_import_matches_transformers(variant, tmp_path):
    family, kw = VARIANTS[variant]
    save_hf(tmp_path, family, **kw)
    assert is_hf_folder(tmp_path)
    model, info = model_from_hf(tmp_path)
    c = model.config
    assert c.tie_embeddings == kw.get("tie_word_embeddings", False)
    assert (model.lm_head.weight is model.embed_tokens.weight) == c.tie_embeddings
    assert c.qk_norm == (family == "qwen3")
    default_head_dim = 128 if family == "qwen3" else 48 // kw["num_attention_heads"]
    assert c.n_kv_head == kw["num_key_value_heads"] and c.head_dim == kw.get("head_dim", default_head_dim)
    assert (c.rope_scaling is not None) == ("rope_scaling" in kw)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert max_logit_error(tmp_path, tokens()) <= 1e-4


def test_llama32_hub_config_layout(tmp_path):
    """Llama-3.2's config.json as the hub has it (transformers 4 keys: top-level rope_theta, rope_scaling with
    rope_type llama3) rather than as transformers 5 writes it: both read it the same way."""
    save_hf(tmp_path, "llama", num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
            rope_theta=500000.0, rope_scaling=LLAMA3)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("rope_parameters")
    cfg.update(rope_theta=500000.0, rope_scaling={**{k: v for k, v in LLAMA3.items() if k != "rope_type"},
                                                  "rope_type": "llama3"})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model, _ = model_from_hf(tmp_path)
    assert model.config.rope_theta == 500000.0
    assert model.config.rope_scaling == {k: v for k, v in LLAMA3.items() if k != "rope_type"}
    assert max_logit_error(tmp_path, tokens()) <= 1e-4
    # both keys, disagreeing (a hand-edited file): transformers 5 takes rope_scaling, and so must the import
    cfg["rope_parameters"] = {**LLAMA3, "factor": 2.0, "rope_theta": 500000.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert model_from_hf(tmp_path)[0].config.rope_scaling["factor"] == 8.0
    assert max_logit_error(tmp_path, tokens()) <= 1e-4


@pytest.mark.parametrize("family,kw,field", [
    ("qwen3", dict(num_attention_heads=4, num_key_value_heads=2), "head_dim"),           # Qwen3's default: 128
    ("mistral", dict(num_attention_heads=16, num_key_value_heads=8, head_dim=8, sliding_window=None),
     "num_key_value_heads"),                                                           # Mistral's: 8
    ("llama", dict(num_attention_heads=4), "num_key_value_heads"),                       # Llama's: no grouping
    ("llama", dict(num_attention_heads=4, tie_word_embeddings=False), "tie_word_embeddings"),
])
def test_fields_left_out_mean_what_transformers_assumes(family, kw, field, tmp_path):
    """A config.json without a field: transformers' default for that family, which is not always n_embd/n_head."""
    save_hf(tmp_path, family, **kw)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg[field]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert max_logit_error(tmp_path, tokens()) <= 1e-4


def test_the_tolerance_sees_rope_scaling(tmp_path):
    """Negative control: the same model without the scaling is far outside the tolerance above."""
    save_hf(tmp_path, "llama", num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0, rope_scaling=LLAMA3)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    model, _ = model_from_hf(tmp_path)
    model.config.rope_scaling = None
    with torch.no_grad():
        assert (hf(tokens()).logits - model.logits(tokens())).abs().max().item() > 1e-2


# ---- export -> import -> export --------------------------------------------------------------------

def nanokd_checkpoint(**kw):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=264, block_size=64, n_layer=2, n_embd=48, mlp_hidden=96, **kw)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.5 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    return model.eval(), dict(model=model.state_dict(), model_config=asdict(cfg), tokenizer="bytes", n_vocab=257,
                              config={}, step=3, tokens_seen=300)


def read_safetensors(path):
    from safetensors.torch import load_file
    return load_file(str(path))


SCALING = {k: v for k, v in LLAMA3.items() if k != "rope_type"}
ROUNDTRIP = {
    "tied-gqa-scaled": dict(n_head=4, n_kv_head=2, tie_embeddings=True, rope_scaling=SCALING),
    "untied-headdim": dict(n_head=4, n_kv_head=1, head_dim=16, tie_embeddings=False, rope_theta=12345.0),
    "qknorm-tied": dict(n_head=4, n_kv_head=2, head_dim=24, tie_embeddings=True, qk_norm=True, rope_theta=1e6,
                        norm_eps=1e-6),
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("variant", list(ROUNDTRIP))
def test_export_import_export_is_the_identity(variant, dtype, tmp_path):
    model, ckpt = nanokd_checkpoint(**ROUNDTRIP[variant])
    a, b = tmp_path / "a", tmp_path / "b"
    export(ckpt, a, dtype=dtype)
    imported, info = model_from_hf(a, dtype=getattr(torch, dtype))
    assert info["n_vocab"] == 257 and info["tokenizer"].startswith("hf-")
    export({**info, "model": imported.state_dict()}, b, dtype=dtype)
    assert (a / "config.json").read_text() == (b / "config.json").read_text()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    ta, tb = read_safetensors(a / "model.safetensors"), read_safetensors(b / "model.safetensors")
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype == getattr(torch, dtype)
        assert torch.equal(ta[k].view(torch.uint8), tb[k].view(torch.uint8)), k  # bit-identical
    if dtype == "float32":  # and the imported model is the one that was exported
        x = torch.randint(0, 257, (1, 40), generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            assert (imported.logits(x) - model.logits(x)[..., :257]).abs().max().item() <= 1e-5


def test_imported_tokenizer_is_the_exported_one(tmp_path):
    """The bytes tokenizer export writes comes back as an hf tokenizer that encodes as bytes do."""
    _, ckpt = nanokd_checkpoint(n_head=4)
    export(ckpt, tmp_path)
    tok = load_hf_tokenizer(tmp_path)
    text = "Héllo, wörld!\n\tA 12345 — 日本"
    assert tok.encode(text) == list(text.encode("utf-8")) and tok.decode(tok.encode(text)) == text
    assert tok.n_vocab == 257 and tok.doc_suffix == [256] and tok.doc_prefix == []


def test_vocab_rows_pad(tmp_path):
    """Embedding rows past the file's can be added (zero; a student's padded width); the real ids' logits do not
    change. Cutting needs the tokenizer to say which rows are padding (test_large_vocabularies_... cuts Qwen3's)."""
    save_hf(tmp_path, "llama", num_attention_heads=4, num_key_value_heads=2)
    full, _ = model_from_hf(tmp_path)
    torch.use_deterministic_algorithms(True)  # torch.empty then fills with NaN, so rows left unfilled show
    try:
        model, info = model_from_hf(tmp_path, vocab_rows=320)
    finally:
        torch.use_deterministic_algorithms(False)
    assert model.embed_tokens.weight.shape == model.lm_head.weight.shape == (320, 48)
    assert info["model_config"]["vocab_size"] == 320 and info["n_vocab"] == V
    assert torch.equal(model.lm_head.weight[V:], torch.zeros(320 - V, 48))
    assert torch.equal(model.embed_tokens.weight[:V], full.embed_tokens.weight)
    x = tokens(n=30)
    with torch.no_grad():
        assert (model.logits(x)[..., :V] - full.logits(x)).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="fewer than the tokenizer's 300 ids"):  # no tokenizer.json: all rows are ids
        model_from_hf(tmp_path, vocab_rows=256)


# ---- what the GPT cannot represent ---------------------------------------------------------------

UNSUPPORTED = {  # config.json edits -> the field the error must name
    "attention_bias": ("llama", {"attention_bias": True}, "attention_bias"),
    "mlp_bias": ("llama", {"mlp_bias": True}, "mlp_bias"),
    "sliding_window": ("mistral", {"sliding_window": 32}, "sliding_window"),
    "sliding_window_default": ("mistral", {"sliding_window": "absent", "max_position_embeddings": 8192},
                               "sliding_window"),  # transformers' Mistral default is 4096
    "use_sliding_window": ("qwen3", {"use_sliding_window": True, "sliding_window": 16}, "sliding_window"),
    "num_experts": ("qwen3", {"num_experts": 8}, "num_experts"),
    "num_local_experts": ("mistral", {"num_local_experts": 8}, "num_local_experts"),
    "rope_scaling_yarn": ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling"),
    "rope_parameters_linear": ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                             "rope_theta": 10000.0}}, "rope_parameters"),
    "hidden_act": ("llama", {"hidden_act": "gelu"}, "hidden_act"),
    "model_type": ("llama", {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}, "model_type"),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_field_is_a_clear_error(case, tmp_path):
    family, edit, field = UNSUPPORTED[case]
    save_hf(tmp_path, family, num_attention_heads=4, num_key_value_heads=2,
            **({"sliding_window": None} if family == "mistral" else {}))
    model_from_hf(tmp_path)  # control: the folder as saved imports
    cfg = json.loads((tmp_path / "config.json").read_text())
    for k, v in edit.items():
        if v == "absent":
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedHFModel, match=field) as e:
        model_from_hf(tmp_path)
    assert "config.json" in str(e.value)


def test_pickled_weights_are_never_read(tmp_path):
    """A folder with only pytorch_model.bin: refused by name, and its pickle never runs."""
    save_hf(tmp_path, "llama", num_attention_heads=4, num_key_value_heads=2)
    os.remove(tmp_path / "model.safetensors")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    assert is_hf_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin are pickles"):
        model_from_hf(tmp_path)
    assert not marker.exists()


def test_weights_that_do_not_fit_the_config(tmp_path):
    """A bias tensor the config does not declare, or a wrong shape: refused, naming the tensor."""
    from safetensors.torch import load_file, save_file
    save_hf(tmp_path, "llama", num_attention_heads=4, num_key_value_heads=2)
    path = str(tmp_path / "model.safetensors")
    sd = load_file(path)
    save_file({**sd, "model.layers.0.self_attn.q_proj.bias": torch.zeros(48)}, path, metadata={"format": "pt"})
    with pytest.raises(UnsupportedHFModel, match=r"unexpected \['model.layers.0.self_attn.q_proj.bias'\].*biases"):
        model_from_hf(tmp_path)
    sd["model.layers.1.mlp.up_proj.weight"] = torch.zeros(97, 48)
    save_file(sd, path, metadata={"format": "pt"})
    with pytest.raises(UnsupportedHFModel, match="up_proj.weight has shape"):
        model_from_hf(tmp_path)


# ---- memory ------------------------------------------------------------------------------------------

MEASURE = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {root!r})
    from hf_checkpoint import model_from_hf
    def status(field):  # bytes. VmHWM is this process's peak RSS; ru_maxrss would not do: it carries over
        with open("/proc/self/status") as f:  # exec from the forking parent (pytest, hundreds of MB)
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))
    with torch.device("meta"):  # torch's first init on meta imports torch._refs and sympy (~150 MB, once per
        torch.nn.Embedding(2, 2)  # process, whatever the model's size): paid before the baseline
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = status("VmRSS")
    if {mode!r} == "bf16":
        model, _ = model_from_hf({folder!r}, dtype=torch.bfloat16)
    else:  # the old way: build in fp32, cast afterwards
        model, _ = model_from_hf({folder!r}, dtype=torch.float32)
        model.to(torch.bfloat16)
    peak = status("VmHWM")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    print(json.dumps(dict(extra=peak - before, size=size)))
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (VmHWM)")
def test_bf16_load_holds_no_fp32_copy(tmp_path):
    """Peak host memory of a bf16 load of a bf16 folder, in a fresh process: the model plus at most its largest
    tensor (9% here), never the 2x of an fp32 copy. The control shows the measurement sees an fp32 copy."""
    from safetensors.torch import save_file
    from hf_checkpoint import hf_config, hf_state_dict
    cfg = GPTConfig(vocab_size=4096, block_size=256, n_layer=2, n_embd=1024, n_head=8, mlp_hidden=2816)
    with torch.device("meta"):
        shapes = {k: p.shape for k, p in GPT(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g).mul_(0.02).to(torch.bfloat16) for k, s in shapes.items()}
    save_file(hf_state_dict(sd, False, torch.bfloat16), str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(hf_config(asdict(cfg), 1, 2, "bfloat16")))
    del sd
    runs = {mode: subprocess.Popen([sys.executable, "-c", MEASURE.format(root=ROOT, folder=str(tmp_path), mode=mode)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for mode in ("bf16", "fp32-then-cast")}  # side by side: each measures only itself
    got = {}
    for mode, proc in runs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        got[mode] = json.loads(out.strip().splitlines()[-1])
    size = got["bf16"]["size"]
    assert size > 60e6  # 34M parameters: large beside the allocator's and the interpreter's noise (a few MB)
    print({m: f"{v['extra'] / size:.2f}x the bf16 model" for m, v in got.items()})
    assert 0.9 * size <= got["bf16"]["extra"] <= 1.3 * size, got  # the model + one 6 MB tensor
    assert got["fp32-then-cast"]["extra"] >= 1.8 * size, got  # control: an fp32 copy is seen


# ---- the tokenizer -------------------------------------------------------------------------------------

CORPUS = [line for line in open(os.path.join(ROOT, "model.py"), encoding="utf-8").read().splitlines() if line] + \
         ["Héllo, wörld! 日本語のテキスト", "naïve café — déjà vu", "12345 67890 3.14159"]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>"]


def train_tokenizer(vocab_size=500, specials=SPECIALS):
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tk


def tokenizer_folder(folder, tk, config=None, bos_template=False):
    os.makedirs(folder, exist_ok=True)
    if bos_template:  # Llama-3's post-processor: <|begin_of_text|> before a sequence
        bos = tk.token_to_id("<|begin_of_text|>")
        tk.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                          special_tokens=[("<|begin_of_text|>", bos)])
    tk.save(os.path.join(folder, "tokenizer.json"))
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"} if config is None else config
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    return folder


TEXT = "Héllo, wörld!\n\tA 12345 test — 日本 <|end_of_text|> def forward(self, x):"


def test_tokenizer_round_trip_and_delimiters(tmp_path):
    tk = train_tokenizer()
    tok = load_hf_tokenizer(tokenizer_folder(tmp_path / "llama3", tk, bos_template=True))
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert tok.encode_batch([TEXT, "x"]) == [ids, tok.encode("x")]
    bos, eos = tk.token_to_id("<|begin_of_text|>"), tk.token_to_id("<|end_of_text|>")
    assert eos not in ids  # special-token text in a document is plain text, as nanokd's other tokenizers read it
    assert tok.n_vocab == 500 and tok.bos == bos and tok.eos == eos
    assert (tok.doc_prefix, tok.doc_suffix) == ([bos], [])  # Llama-3: <|begin_of_text|> before each document
    # the same vocabulary with explicit flags (Llama-2/TinyLlama style), and with nothing said (Qwen3/SmolLM2 style)
    flags = load_hf_tokenizer(tokenizer_folder(tmp_path / "flags", train_tokenizer(), {
        "bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|end_of_text|>",
        "add_bos_token": True, "add_eos_token": True}))
    assert (flags.doc_prefix, flags.doc_suffix) == ([bos], [eos])
    plain = load_hf_tokenizer(tokenizer_folder(tmp_path / "plain", train_tokenizer(),
                                               {"bos_token": None, "eos_token": "<|end_of_text|>"}))
    assert (plain.doc_prefix, plain.doc_suffix, plain.eot, plain.bos) == ([], [eos], eos, None)
    for t in (tok, flags, plain):
        assert t.name == tok.name  # delimiting is not part of what the tokenizer encodes
    with pytest.raises(ValueError, match="nothing delimits documents"):
        load_hf_tokenizer(tokenizer_folder(tmp_path / "none", train_tokenizer(), {}))
    with pytest.raises(ValueError, match="eos_token '<|missing|>' is not in the vocabulary"):
        load_hf_tokenizer(tokenizer_folder(tmp_path / "bad", train_tokenizer(), {"eos_token": "<|missing|>"}))


def test_tokenizer_identity(tmp_path):
    """Same tokenizer from two differently written files: same name. Any change to what it encodes: another."""
    tk = train_tokenizer()
    text = tk.to_str()
    tok = HFTokenizer(text, {"eos_token": "<|end_of_text|>"})
    assert tok.name == "hf-" + tok.identity[:29] and len(tok.name.encode()) == 32  # fills the header's field
    assert tok.identity == tokenizer_identity(text)

    d = json.loads(text)
    same = json.loads(text)
    same["model"]["merges"] = [" ".join(m) for m in same["model"]["merges"]]  # the older "a b" merge format
    same["model"]["vocab"] = dict(reversed(list(same["model"]["vocab"].items())))
    same["truncation"] = {"direction": "Right", "max_length": 7, "strategy": "LongestFirst", "stride": 0}
    same["decoder"] = None
    assert tokenizer_identity(json.dumps(same, indent=3, sort_keys=True)) == tok.identity

    def changed(edit):
        e = json.loads(text)
        edit(e)
        return tokenizer_identity(json.dumps(e))

    vocab = d["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    different = {
        "one merge fewer": changed(lambda e: e["model"]["merges"].pop()),
        "two merges swapped": changed(lambda e: e["model"]["merges"].insert(0, e["model"]["merges"].pop(5))),
        "two ids swapped": changed(lambda e: e["model"]["vocab"].update({a: vocab[b], b: vocab[a]})),
        "a special token's text": changed(lambda e: e["added_tokens"][1].update(content="<|eot|>")),
        "a token made special": changed(lambda e: e["added_tokens"][1].update(special=False)),
        "pre-tokenizer": changed(lambda e: e["pre_tokenizer"].update(add_prefix_space=True)),
        "normalizer": changed(lambda e: e.update(normalizer={"type": "NFKC"})),
        "another vocabulary": tokenizer_identity(train_tokenizer(vocab_size=480).to_str()),
    }
    assert tok.identity not in different.values()
    assert len(set(different.values())) == len(different)

    # the name is what token files record and compare
    write_tokens(tmp_path / "a.bin", tok.encode(TEXT), tok.n_vocab, tok.name)
    assert read_header(tmp_path / "a.bin")["tokenizer"] == tok.name
    folder = tokenizer_folder(tmp_path / "t", Tokenizer.from_str(json.dumps(same)),
                              {"eos_token": "<|end_of_text|>"})
    assert get_tokenizer(tok.name, folder).name == get_tokenizer("hf", folder).name == tok.name
    load_tokens(tmp_path / "a.bin", tokenizer=get_tokenizer("hf", folder).name)
    other = tokenizer_folder(tmp_path / "o", train_tokenizer(vocab_size=480), {"eos_token": "<|end_of_text|>"})
    with pytest.raises(ValueError, match="another vocabulary"):
        get_tokenizer(tok.name, other)


def test_tokenizer_state_travels_as_plain_types(tmp_path):
    tok = load_hf_tokenizer(tokenizer_folder(tmp_path / "t", train_tokenizer(), bos_template=True))
    torch.save({"tokenizer_state": tok.state()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)["tokenizer_state"]  # no pickled objects inside
    back = HFTokenizer.from_state(state)
    assert (back.name, back.doc_prefix, back.doc_suffix, back.encode(TEXT)) == \
        (tok.name, tok.doc_prefix, tok.doc_suffix, tok.encode(TEXT))
    state["tokenizer_json"] = train_tokenizer(vocab_size=480).to_str()
    with pytest.raises(ValueError, match="corrupt"):
        HFTokenizer.from_state(state)


def big_vocab_tokenizer(n_base, n_special):
    """A byte-level BPE with n_base entries (bytes, then unreachable filler) and n_special added tokens after."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({f"filler{i}": i for i in range(len(vocab), n_base)})
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([f"<|special_{i}|>" for i in range(n_special)])
    return tk


@pytest.mark.parametrize("n_base,n_special,rows", [(49152 - 17, 17, 49152),     # SmolLM2
                                                   (128000, 256, 128256),       # Llama-3
                                                   (151643, 26, 151936)])       # Qwen3, with padding rows
def test_large_vocabularies_through_data_and_import(n_base, n_special, rows, tmp_path):
    tk = big_vocab_tokenizer(n_base, n_special)
    eos = f"<|special_{n_special - 1}|>"
    tokenizer_folder(tmp_path, tk, {"eos_token": eos})
    tok = get_tokenizer("hf", tmp_path)
    n_vocab = n_base + n_special
    assert tok.n_vocab == n_vocab and tok.doc_suffix == [n_vocab - 1]
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    write_tokens(tmp_path / "t.bin", ids + tok.doc_suffix, tok.n_vocab, tok.name)
    h = read_header(tmp_path / "t.bin")
    assert h["vocab_size"] == n_vocab and h["dtype"].itemsize == (2 if n_vocab <= 2**16 else 4)
    assert int(load_tokens(tmp_path / "t.bin", tok.name, n_vocab)[-1]) == n_vocab - 1
    # a teacher of that vocabulary, with the student's padded rows
    save_hf(tmp_path, "qwen3", **{**dict(num_attention_heads=2, num_key_value_heads=1, hidden_size=16,
                                         intermediate_size=32, num_hidden_layers=1, tie_word_embeddings=True),
                                  "vocab_size": rows})
    student_rows = padded_vocab_size(n_vocab)
    model, info = model_from_hf(tmp_path, vocab_rows=student_rows)
    assert (info["tokenizer"], info["n_vocab"]) == (tok.name, n_vocab)
    assert model.lm_head.weight.shape[0] == student_rows
    full, _ = model_from_hf(tmp_path)
    keep = min(rows, student_rows)  # Qwen3's 151,936 rows cut to 151,680: the first ones, the tokenizer's
    assert torch.equal(model.embed_tokens.weight[:keep], full.embed_tokens.weight[:keep])
    x = torch.tensor([ids[:20] + [n_vocab - 1]])
    with torch.no_grad():
        assert (model.logits(x)[..., :n_vocab] - full.logits(x)[..., :n_vocab]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="fewer than the tokenizer's"):
        model_from_hf(tmp_path, vocab_rows=n_vocab - 1)


# ---- the prepare scripts -------------------------------------------------------------------------------

def test_prepare_fineweb_with_the_teachers_tokenizer(tmp_path):
    from data.prepare_fineweb import main
    folder = tokenizer_folder(tmp_path / "teacher", train_tokenizer(), bos_template=True)
    docs = [f"document {i}: " + CORPUS[i % len(CORPUS)] for i in range(40)]
    with open(tmp_path / "docs.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    out = tmp_path / "out"
    main(["--tokenizer", "hf", "--tokenizer_path", str(folder), "--data_files", str(tmp_path / "docs.jsonl"),
          "--out_dir", str(out), "--val_tokens", "100", "--shard_tokens", "300"])
    tok = load_hf_tokenizer(folder)
    files = [out / "val.bin"] + sorted(out.glob("train_*.bin"))
    stream = np.concatenate([load_tokens(p, tok.name, tok.n_vocab) for p in files])
    expected = sum((tok.doc_prefix + tok.encode(d) + tok.doc_suffix for d in docs), [])
    assert stream.tolist() == expected and tok.doc_prefix == [tok.bos]  # <|begin_of_text|> before every document
    settings = json.loads((out / "progress.json").read_text())["settings"]
    assert settings["tokenizer"] == tok.name and settings["tokenizer_identity"] == tok.identity


def test_prepare_embedded_and_evalsets_with_the_teachers_tokenizer(tmp_path):
    from data import prepare_evalsets as P
    from data.prepare_embedded import tokenize_docs
    tok = load_hf_tokenizer(tokenizer_folder(tmp_path, train_tokenizer(), bos_template=True))
    docs = ["first document", "second — document"]
    assert tokenize_docs(tok, docs).tolist() == sum(([tok.bos] + tok.encode(d) for d in docs), [])
    hub = tmp_path / "hub" / "openai" / "gsm8k" / "main"
    hub.mkdir(parents=True)
    (hub / "train.jsonl").write_text(json.dumps({"question": "What is 2+2?", "answer": "4"}) + "\n")
    path = P.build("gsm8k", tok, str(tmp_path / "out"), local_dir=str(tmp_path / "hub"), bos=True)
    got = load_tokens(path, tok.name).tolist()
    assert got == [tok.bos] + tok.encode("What is 2+2?\n\n4")
    assert json.loads(open(path[:-4] + ".json").read())["tokenizer_identity"] == tok.identity
