"""
Export a nanokd checkpoint as a Hugging Face transformers model folder:

    python export.py --ckpt out/<run>/ckpt.pt --out hf/<run> [--dtype bfloat16]

writes config.json (LlamaForCausalLM, or Qwen3ForCausalLM for QK-norm models),
generation_config.json, model.safetensors, a tokenizer (tokenizer.json and its
config) and a README.md. Then, e.g.

    AutoModelForCausalLM.from_pretrained("hf/<run>")
    lm_eval --model hf --model_args pretrained=hf/<run> --tasks hellaswag

model.py already uses HF Llama's parameter names and RoPE layout (rotate-half),
so the weights go across with a "model." prefix and nothing else; Qwen3 is Llama
plus the per-head q_norm/k_norm this repo's qk_norm adds. tests/test_export.py
checks that transformers' logits match ours.

The tokenizer is rebuilt for `tokenizers` from what this repo encodes with:
tiktoken's BPE file for gpt2 and llama3 (via transformers' TikTokenConverter),
and a 256-byte vocabulary plus end-of-text for bytes. Needs transformers;
without it the model is still written and the README says what to pair it with.
"""

import argparse
import json
import os
import sys

import torch

# bos/eos per tokenizer. gpt2 and bytes have one end-of-text mark, used for both as GPT-2 does
SPECIAL_IDS = {"bytes": (256, 256), "gpt2": (50256, 50256), "llama3": (128000, 128001)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hf_config(model_config, tokenizer, dtype="float32", n_vocab=None):
    c = model_config
    bos, eos = SPECIAL_IDS[tokenizer]
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
        # transformers >= 5 reads rope_parameters, older versions rope_theta
        "rope_theta": c["rope_theta"],
        "rope_parameters": {"rope_type": "default", "rope_theta": c["rope_theta"]},
        "tie_word_embeddings": c["tie_embeddings"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "use_cache": True,
        "dtype": dtype, "torch_dtype": dtype,  # the key's name changed in transformers 5
    }
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
        if k == "lm_head.weight":
            if tied:
                continue
            name = k
        else:
            name = "model." + k
        out[name] = v.detach().to("cpu", dtype).contiguous().clone()  # clone: no storage shared with a tied twin
    return out


def hf_tokenizer(tokenizer, tokenizer_path=None, block_size=None):
    """A transformers fast tokenizer that encodes as data/tokenizer.py does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter, bytes_to_unicode

    if tokenizer == "bytes":
        # one token per byte: ByteLevel maps bytes to printable characters and BPE has no merges
        b2u = bytes_to_unicode()
        vocab = {b2u[b]: b for b in range(256)}
        tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tk.decoder = decoders.ByteLevel()
        specials = ["<|endoftext|>"]
    else:
        from data.tokenizer import LLAMA3_PATTERN, R50K_PATTERN, gpt2_bpe_file
        if tokenizer == "gpt2":
            path, pattern, specials = gpt2_bpe_file(), R50K_PATTERN, ["<|endoftext|>"]
        else:
            if tokenizer_path is None:
                raise ValueError("llama3 needs its tokenizer.model (--tokenizer_path)")
            path, pattern, specials = tokenizer_path, LLAMA3_PATTERN, ["<|begin_of_text|>", "<|end_of_text|>"]
        tk = TikTokenConverter(vocab_file=path, pattern=pattern).converted()
    tk.add_special_tokens(specials)  # appended after the ranks: 256, 50256, 128000/128001
    bos, eos = specials[0], specials[-1]
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos,
                                   model_max_length=block_size or 1_000_000)


def export(ckpt, out_dir, dtype="float32", tokenizer_path=None, with_tokenizer=True):
    from safetensors.torch import save_file
    from checkpoint import clean_state_dict, load_checkpoint, CheckpointError

    if isinstance(ckpt, (str, os.PathLike)):
        src, ckpt = str(ckpt), load_checkpoint(ckpt)
    else:
        src = "(in memory)"
    mc, tok = ckpt["model_config"], ckpt["tokenizer"]
    if tok not in SPECIAL_IDS:
        raise CheckpointError(f"unknown tokenizer {tok!r} in the checkpoint; export knows {', '.join(SPECIAL_IDS)}")
    os.makedirs(out_dir, exist_ok=True)
    n_vocab = ckpt.get("n_vocab") or mc["vocab_size"]
    tensors = hf_state_dict(clean_state_dict(ckpt["model"]), mc["tie_embeddings"], DTYPES[dtype], n_vocab)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(mc, tok, dtype, n_vocab), f, indent=2)
    bos, eos = SPECIAL_IDS[tok]
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos}, f, indent=2)

    tokenizer_note = (f"The tokenizer files here encode text as nanokd's `{tok}` tokenizer does, except that "
                      f"special-token text such as `<|endoftext|>` becomes that token (nanokd reads it as plain text).")
    if with_tokenizer:
        try:
            path = tokenizer_path or (ckpt.get("config") or {}).get("tokenizer_path")
            hf_tokenizer(tok, path, mc["block_size"]).save_pretrained(out_dir)
        except Exception as e:  # no transformers, no llama3 file: the model is still usable
            print(f"export.py: tokenizer not written ({type(e).__name__}: {e})", file=sys.stderr)
            tokenizer_note = {
                "gpt2": "No tokenizer files were written: use GPT-2's, e.g. AutoTokenizer.from_pretrained('gpt2').",
                "llama3": "No tokenizer files were written: use Llama 3's, e.g. from meta-llama/Meta-Llama-3-8B.",
                "bytes": "No tokenizer files were written: token ids are UTF-8 bytes (0-255), 256 is end-of-text.",
            }[tok]
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(f"# nanokd export\n\nFrom `{src}`: step {ckpt.get('step')}, {ckpt.get('tokens_seen')} tokens seen, "
                f"{config_name(mc)}, tokenizer `{tok}` ({n_vocab} tokens). nanokd's model had "
                f"{mc['vocab_size']} embedding rows; the {mc['vocab_size'] - n_vocab} padding rows were never "
                f"trained as targets and are left out here, so the logits are exactly the tokenizer's "
                f"{n_vocab} and a softmax over them is the one nanokd's eval.py takes.\n\n{tokenizer_note}\n\nTraining documents were separated by the end-of-text "
                f"token (id {eos}) and no begin-of-text token was added, so prompts read most naturally after it.\n")
    return out_dir


def config_name(mc):
    return (f"{mc['n_layer']} layers, d={mc['n_embd']}, {mc['n_head']}/{mc['n_kv_head']} heads"
            + (", QK-norm" if mc["qk_norm"] else "") + (", tied" if mc["tie_embeddings"] else ", untied"))


def main(argv=None):
    from checkpoint import CheckpointError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="a nanokd checkpoint (out/<run>/ckpt.pt)")
    ap.add_argument("--out", required=True, help="folder to write (created)")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--tokenizer_path", default=None, help="llama3's tokenizer.model (default: the run's)")
    ap.add_argument("--no_tokenizer", action="store_true", help="write only the model")
    args = ap.parse_args(argv)
    try:
        out = export(args.ckpt, args.out, args.dtype, args.tokenizer_path, not args.no_tokenizer)
    except CheckpointError as e:
        sys.exit(f"export.py: {e}")
    print(f"wrote {out}: " + ", ".join(sorted(os.listdir(out))))


if __name__ == "__main__":
    main()
