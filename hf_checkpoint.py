"""
Hugging Face causal-LM folders <-> nanokd's GPT, both ways, in one place: export.py writes with
hf_config/hf_state_dict, model_from_hf reads with gpt_config_from_hf/nanokd_name, and a test checks
that export -> import -> export gives the same bytes.

    is_hf_folder(path)                                   a folder with a config.json
    model, info = model_from_hf(folder, dtype=torch.bfloat16, device="cuda", vocab_rows=None)

info has a nanokd checkpoint's keys (model_config, tokenizer, n_vocab) plus tokenizer_state (the
folder's tokenizer.json and config, data/hf_tokenizer.py; None without one), special_ids
(config.json's bos/eos ids), hf_config and source. vocab_rows: embedding rows to build (default the
file's); rows past the tokenizer's vocabulary are padding either way (never an input, never in a
softmax), so they may be cut (Qwen3's 151,936 to a student's 151,680) or zero-filled.

What imports: Llama (Llama-2/3, 3.1/3.2 with their "llama3" RoPE scaling; SmolLM2 and TinyLlama are
Llama), Qwen3 (Llama plus QK-norm), Mistral without a sliding window. nanokd's names are HF's inside
"model." (model.py was written to them), so the name mapping is that prefix. Anything the GPT cannot
represent is an UnsupportedHFModel naming the config field: biases, a sliding window, experts, another
RoPE scaling, another activation, quantized weights. Weights are read from safetensors only; a
pytorch_model.bin is a pickle, which can run code when loaded, and is never opened.

Memory: the GPT is built on the meta device (no storage, no init) and each weight is read from its
shard straight into a parameter of the asked dtype on the asked device, one tensor at a time; the
shard is opened per tensor, so no more than one tensor's file pages are mapped at once (safetensors
maps its file, and mapped pages that have been read count as resident). A bf16 load of a bf16 file
peaks at the model plus its largest tensor; no fp32 copy exists, on the host or the GPU.
"""

import json
import os
import re
from dataclasses import asdict

import torch

from model import GPT, GPTConfig

# the layouts GPT represents exactly; values: (architecture written by export, QK-norm)
FAMILIES = {"llama": ("LlamaForCausalLM", False), "mistral": ("MistralForCausalLM", False),
            "qwen3": ("Qwen3ForCausalLM", True)}
# what transformers' config classes (5.x) assume for a field config.json leaves out
DEFAULTS = {"llama": dict(max_position_embeddings=2048, sliding_window=None),
            "mistral": dict(max_position_embeddings=4096 * 32, sliding_window=4096, num_key_value_heads=8),
            "qwen3": dict(max_position_embeddings=32768, sliding_window=None, head_dim=128, num_key_value_heads=32)}
LLAMA3_ROPE = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
INDEX = "model.safetensors.index.json"


class UnsupportedHFModel(ValueError):
    """A Hugging Face model nanokd's GPT cannot represent exactly (the message names the field)."""


class BadHFFolder(ValueError):
    """A Hugging Face folder whose files are unreadable or contradict each other (the message names file and field)."""


# the config fields that size the model: positive integers (a float, a bool, 0 or a missing one is refused)
SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "max_position_embeddings")
OPTIONAL_SIZES = ("num_key_value_heads", "head_dim")   # absent or null: derived, as transformers derives them


# ---- names ---------------------------------------------------------------------------------------

def hf_name(name):
    """nanokd parameter name -> Hugging Face's."""
    return name if name == "lm_head.weight" else "model." + name


def nanokd_name(name):
    """Hugging Face parameter name -> nanokd's (inverse of hf_name)."""
    if name == "lm_head.weight":
        return name
    if not name.startswith("model."):
        raise UnsupportedHFModel(f"weight {name!r} is not part of a Llama-layout causal LM")
    return name[len("model."):]


# ---- nanokd -> Hugging Face (export.py) ------------------------------------------------------------

def hf_config(model_config, bos_id, eos_id, dtype="float32", n_vocab=None):
    c = model_config
    config = {
        "architectures": ["Qwen3ForCausalLM" if c["qk_norm"] else "LlamaForCausalLM"],
        "model_type": "qwen3" if c["qk_norm"] else "llama",
        # only the tokenizer's rows: the logits' width is what lm-eval's softmax normalises over,
        # so padding rows (never trained as targets, but not -inf) must not be there
        "vocab_size": n_vocab or c["vocab_size"],
        "hidden_size": c["n_embd"],
        "intermediate_size": c["mlp_hidden"],
        "num_hidden_layers": c["n_layer"],
        "num_attention_heads": c["n_head"],
        "num_key_value_heads": c["n_kv_head"],
        "head_dim": c["head_dim"],
        "hidden_act": "silu",
        "max_position_embeddings": c["block_size"],
        "rms_norm_eps": c["norm_eps"],
        # transformers >= 5 reads rope_parameters, older versions rope_theta (and rope_scaling)
        "rope_theta": c["rope_theta"],
        "rope_parameters": {"rope_type": "default", "rope_theta": c["rope_theta"]},
        "tie_word_embeddings": c["tie_embeddings"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
        "dtype": dtype, "torch_dtype": dtype,  # the key's name changed in transformers 5
    }
    scaling = c.get("rope_scaling")
    if scaling:
        config["rope_parameters"] = {"rope_type": "llama3", "rope_theta": c["rope_theta"], **scaling}
        config["rope_scaling"] = {"rope_type": "llama3", **scaling}  # transformers 4's key; 5 reads it too
    if c["qk_norm"]:
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=c["n_layer"])
    else:
        config.update(mlp_bias=False, pretraining_tp=1)
    return config


def hf_state_dict(state_dict, tied, dtype=torch.float32, n_vocab=None):
    """Our names are HF's inside model.*; a tied lm_head is left out, as save_pretrained does.
    embed_tokens and lm_head keep only their first n_vocab rows (the tokenizer's; the rest is padding)."""
    out = {}
    for k, v in state_dict.items():
        if k in ("embed_tokens.weight", "lm_head.weight") and n_vocab is not None:
            v = v[:n_vocab]
        if k == "lm_head.weight" and tied:
            continue
        out[hf_name(k)] = v.detach().to("cpu", dtype).contiguous().clone()  # clone: no storage shared with a tied twin
    return out


# ---- Hugging Face -> nanokd ----------------------------------------------------------------------

def is_hf_folder(path):
    """A Hugging Face model folder (model_from_hf then says if its weights are missing or pickles)."""
    p = os.fspath(path)
    return os.path.isdir(p) and os.path.isfile(os.path.join(p, "config.json"))


def _rope(config, where):
    """(theta, llama3 scaling dict or None), resolved as transformers 5 resolves them."""
    key = "rope_scaling" if config.get("rope_scaling") else "rope_parameters"
    rope = dict(config.get(key) or {})
    if any(isinstance(v, dict) for v in rope.values()):
        raise UnsupportedHFModel(f"{where}: {key} differs per layer type ({sorted(rope)}); nanokd has one RoPE")
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    partial = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise UnsupportedHFModel(f"{where}: partial_rotary_factor={partial}; nanokd rotates the whole head")
    if rope_type == "default":
        return float(theta), None
    if rope_type != "llama3":
        raise UnsupportedHFModel(f"{where}: {key} has rope_type {rope_type!r}; nanokd has plain RoPE and "
                                 f"Llama-3.1's scaling (rope_type 'llama3') only")
    if "original_max_position_embeddings" in config:  # transformers gives the top-level value priority
        rope["original_max_position_embeddings"] = config["original_max_position_embeddings"]
    rope.setdefault("original_max_position_embeddings", config["max_position_embeddings"])
    missing = [k for k in LLAMA3_ROPE if rope.get(k) is None]
    if missing:
        raise UnsupportedHFModel(f"{where}: {key} (llama3) lacks {', '.join(missing)}")
    scaling = {k: float(rope[k]) for k in LLAMA3_ROPE}
    scaling["original_max_position_embeddings"] = int(rope["original_max_position_embeddings"])
    return float(theta), scaling


def gpt_config_from_hf(config, where="config.json"):
    """A Hugging Face config (dict) -> GPTConfig, or UnsupportedHFModel naming the field it cannot honour."""
    model_type = config.get("model_type")
    # another family is named by its type (Gemma by model_type, not by its gelu); a MoE or biased variant of
    # a known family by the field it changes
    if model_type not in FAMILIES:
        raise UnsupportedHFModel(f"{where}: model_type {model_type!r} is not a layout nanokd imports "
                                 f"({', '.join(FAMILIES)})")
    for field in ("attention_bias", "mlp_bias"):
        if config.get(field):
            raise UnsupportedHFModel(f"{where}: {field}={config[field]}; nanokd's GPT has no biases")
    for field in ("num_experts", "num_local_experts", "n_routed_experts"):
        if config.get(field):
            raise UnsupportedHFModel(f"{where}: {field}={config[field]}: a mixture-of-experts model; "
                                     f"nanokd's GPT has one dense MLP")
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise UnsupportedHFModel(f"{where}: hidden_act={act!r}; nanokd's MLP is SwiGLU (silu)")
    if config.get("quantization_config"):
        raise UnsupportedHFModel(f"{where}: quantization_config is set; nanokd loads unquantized weights only")
    config = {**DEFAULTS[model_type], **config}
    layer_types = config.get("layer_types") or []
    if any(t != "full_attention" for t in layer_types):
        raise UnsupportedHFModel(f"{where}: layer_types has {sorted(set(layer_types))}; nanokd attends fully")
    window = config.get("sliding_window")
    used = config["use_sliding_window"] if "use_sliding_window" in config else (
        window is not None and window < config["max_position_embeddings"])
    if used:
        raise UnsupportedHFModel(f"{where}: sliding_window={window} (use_sliding_window="
                                 f"{config.get('use_sliding_window')}) limits attention; nanokd attends fully")
    architectures = config.get("architectures") or [FAMILIES[model_type][0]]
    if architectures != [FAMILIES[model_type][0]]:
        raise UnsupportedHFModel(f"{where}: architectures {architectures}; expected [{FAMILIES[model_type][0]!r}]")
    for key in SIZES + OPTIONAL_SIZES:
        value = config.get(key)
        if key in OPTIONAL_SIZES and value is None:
            continue
        if key not in config or isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadHFFolder(f"{where}: {f'{key}={value!r}' if key in config else f'{key} is missing'}; "
                              f"it must be a positive integer")
    theta, scaling = _rope(config, where)
    n_head = config["num_attention_heads"]
    try:
        return GPTConfig(
            vocab_size=config["vocab_size"], block_size=config["max_position_embeddings"],
            n_layer=config["num_hidden_layers"], n_embd=config["hidden_size"], n_head=n_head,
            n_kv_head=config.get("num_key_value_heads") or n_head,
            head_dim=config.get("head_dim") or config["hidden_size"] // n_head,
            mlp_hidden=config["intermediate_size"], rope_theta=theta, norm_eps=config.get("rms_norm_eps", 1e-6),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)), qk_norm=FAMILIES[model_type][1],
            rope_scaling=scaling)
    except AssertionError as e:   # GPTConfig's own consistency checks (GQA grouping, an even head_dim)
        raise BadHFFolder(f"{where}: {e}") from e


def _weight_files(folder):
    """{hf name: shard path}, from the index or the single model.safetensors; never a pickle, never a file outside
    the folder."""
    index = os.path.join(folder, INDEX)
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BadHFFolder(f"{index}: no readable weight_map ({type(e).__name__}: {e})") from e
        if not isinstance(weight_map, dict):
            raise BadHFFolder(f"{index}: weight_map is a {type(weight_map).__name__}, not a mapping")
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or os.path.isabs(shard) or os.pardir in shard.replace("\\", "/").split("/") \
                    or not shard.endswith(".safetensors"):
                raise BadHFFolder(f"{index}: weight_map puts {name!r} in {shard!r}; a shard must be a .safetensors "
                                  f"file inside the folder")
        return {k: os.path.join(folder, v) for k, v in weight_map.items()}
    single = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(single):
        pickles = [n for n in os.listdir(folder) if n.endswith((".bin", ".pt", ".pth"))]
        raise FileNotFoundError(f"{folder} has no model.safetensors or {INDEX}" + (
            f"; {', '.join(sorted(pickles))} are pickles, which can run code when loaded, and are never read: "
            f"convert them to safetensors on a machine you trust" if pickles else ""))
    return {k: single for k in _header(single)}


def _header(path):
    """{name: shape} from a safetensors file's header, which safetensors checks against the file's size."""
    from safetensors import safe_open
    try:
        with safe_open(path, "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:   # SafetensorError (a header that lies about its size or offsets), OSError
        raise BadHFFolder(f"{path}: not a readable safetensors file ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'})") from e


def read_hf_folder(folder):
    """(config.json's dict, GPTConfig, {hf name: (shard path, shape)}), all checked against each other before any
    model is built: the weights' names and shapes come from the safetensors headers, nothing is loaded."""
    where = os.path.join(folder, "config.json")
    try:
        with open(where) as f:
            hf_cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise BadHFFolder(f"{where}: not readable JSON ({e})") from e
    if not isinstance(hf_cfg, dict):
        raise BadHFFolder(f"{where}: holds a {type(hf_cfg).__name__}, not a config")
    cfg = gpt_config_from_hf(hf_cfg, where=where)
    files = _weight_files(folder)
    headers = {path: _header(path) for path in sorted(set(files.values()))}
    weights = {}
    for name, path in files.items():
        if name not in headers[path]:
            raise BadHFFolder(f"{folder}: {INDEX} puts {name} in {os.path.basename(path)}, whose header lacks it")
        weights[name] = (path, headers[path][name])
    # the one size that multiplies modules: a GPT with a wrong layer count is slow to build even on meta
    layers = {int(m.group(1)) for m in (re.match(r"model\.layers\.(\d+)\.", k) for k in weights) if m}
    if layers != set(range(cfg.n_layer)):
        held = f"{len(layers)} (model.layers.{min(layers)}..{max(layers)})" if layers else "none"
        raise BadHFFolder(f"{where}: num_hidden_layers={cfg.n_layer} but the weights hold {held}")
    return hf_cfg, cfg, weights


def model_from_hf(folder, dtype=torch.float32, device="cpu", vocab_rows=None):
    """Build the GPT a Hugging Face folder holds; returns (model in eval mode, info) (see the module doc)."""
    from safetensors import safe_open
    folder = os.fspath(folder)
    hf_cfg, cfg, weights = read_hf_folder(folder)

    tokenizer_state, tok_name, n_vocab = None, None, cfg.vocab_size
    if os.path.isfile(os.path.join(folder, "tokenizer.json")):
        from data.hf_tokenizer import load_hf_tokenizer
        tok = load_hf_tokenizer(folder)
        if tok.n_vocab > cfg.vocab_size:
            raise UnsupportedHFModel(f"{folder}: its tokenizer has {tok.n_vocab} ids but config.json's vocab_size is "
                                     f"{cfg.vocab_size}")
        tokenizer_state, tok_name, n_vocab = tok.state(), tok.name, tok.n_vocab
    file_rows = cfg.vocab_size
    rows = file_rows if vocab_rows is None else int(vocab_rows)
    if rows < n_vocab:
        raise ValueError(f"vocab_rows={rows} is fewer than the tokenizer's {n_vocab} ids")
    cfg.vocab_size = rows

    with torch.device("meta"):
        model = GPT(cfg)  # shapes only: no storage, no random init
    files = {k: path for k, (path, _) in weights.items()
             if not k.endswith("rotary_emb.inv_freq")}  # old exports' RoPE buffers
    expected = {hf_name(k): (k, tuple(p.shape)) for k, p in model.state_dict().items()}
    if cfg.tie_embeddings:
        del expected["lm_head.weight"]
        files.pop("lm_head.weight", None)  # transformers ties it to the embedding; so do we
    missing, unexpected = sorted(set(expected) - set(files)), sorted(set(files) - set(expected))
    if missing or unexpected:
        hint = " (biases: a field like attention_bias the config does not declare)" if any(
            k.endswith(".bias") for k in unexpected) else ""
        raise UnsupportedHFModel(f"{folder}: weights do not fit {FAMILIES[hf_cfg['model_type']][0]} with this config: "
                                 f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                                 f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}{hint}")
    for name, (ours, shape) in expected.items():   # every shape, before any tensor is allocated
        vocab = ours in ("embed_tokens.weight", "lm_head.weight")
        want = (file_rows,) + shape[1:] if vocab else shape
        if weights[name][1] != want:
            raise UnsupportedHFModel(f"{files[name]}: {name} has shape {weights[name][1]}, config.json implies {want}")
    state = {}
    for name, (ours, shape) in expected.items():
        vocab = ours in ("embed_tokens.weight", "lm_head.weight")
        param = torch.empty(shape, dtype=dtype, device=device)
        try:
            with safe_open(files[name], "pt") as f:  # opened per tensor: its mapped pages go when it closes
                t = f.get_tensor(name)
                n = min(rows, file_rows) if vocab else shape[0]
                param[:n].copy_(t[:n])  # converts dtype and moves to the device in one copy
                del t
        except Exception as e:   # SafetensorError: data the header describes but the file does not hold
            raise BadHFFolder(f"{files[name]}: {name} is not readable ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'})") from e
        if vocab and rows > file_rows:
            param[file_rows:].zero_()
        state[ours] = param
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight  # assign=True made two Parameters of one tensor
    model.eval().requires_grad_(False)
    info = {"format": "hf", "source": os.path.abspath(folder), "model_config": asdict(cfg),
            "tokenizer": tok_name, "n_vocab": n_vocab, "tokenizer_state": tokenizer_state,
            "special_ids": (hf_cfg.get("bos_token_id"), hf_cfg.get("eos_token_id")), "hf_config": hf_cfg}
    return model, info
