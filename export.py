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
plus the per-head q_norm/k_norm this repo's qk_norm adds. The mapping lives in
hf_checkpoint.py, which also imports such folders (export and import are inverses).
tests/test_export.py checks that transformers' logits match ours.

The tokenizer is rebuilt for `tokenizers` from what this repo encodes with:
tiktoken's BPE file for gpt2 and llama3 (via transformers' TikTokenConverter),
and a 256-byte vocabulary plus end-of-text for bytes; a Hugging Face tokenizer
(hf-..., data/hf_tokenizer.py) is written back as the checkpoint carries it. Needs transformers;
without it the model is still written and the README says what to pair it with.
"""

import argparse
import json
import os
import sys

import torch

from hf_checkpoint import hf_config, hf_state_dict  # noqa: F401  (the name mapping, shared with the importer)

# bos/eos per tokenizer. gpt2 and bytes have one end-of-text mark, used for both as GPT-2 does
SPECIAL_IDS = {"bytes": (256, 256), "gpt2": (50256, 50256), "llama3": (128000, 128001)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def hf_tokenizer_of(ckpt):
    """The checkpoint's Hugging Face tokenizer (data/hf_tokenizer.py), or None for nanokd's own."""
    state = ckpt.get("tokenizer_state")
    if not state:
        return None
    from data.hf_tokenizer import HFTokenizer
    return HFTokenizer.from_state(state)


def special_ids(ckpt):
    """(bos, eos) for config.json: an imported folder's own, nanokd's tokenizers' table, or the HF tokenizer's."""
    from checkpoint import CheckpointError
    if "special_ids" in ckpt:  # imported from a Hugging Face folder: its config.json's, as they were
        return tuple(ckpt["special_ids"])
    if ckpt.get("tokenizer") in SPECIAL_IDS:
        return SPECIAL_IDS[ckpt["tokenizer"]]
    tok = hf_tokenizer_of(ckpt)
    if tok is None:
        if str(ckpt.get("tokenizer")).startswith("hf-"):
            raise CheckpointError(f"the checkpoint's tokenizer {ckpt['tokenizer']} is not stored in it: pass "
                                  f"--tokenizer_path with the folder (or tokenizer.json) its data was prepared with")
        raise CheckpointError(f"unknown tokenizer {ckpt.get('tokenizer')!r} in the checkpoint and no tokenizer_state; "
                              f"export knows {', '.join(SPECIAL_IDS)} and Hugging Face tokenizers")
    return tok.bos, (tok.eos if tok.eos is not None else tok.eot)


def export(ckpt, out_dir, dtype="float32", tokenizer_path=None, with_tokenizer=True):
    from safetensors.torch import save_file
    from checkpoint import CheckpointError, clean_state_dict, load_checkpoint

    if isinstance(ckpt, (str, os.PathLike)):
        src, ckpt = str(ckpt), load_checkpoint(ckpt)
    else:
        src = "(in memory)"
    mc, tok = ckpt["model_config"], ckpt["tokenizer"]
    if tok.startswith("hf-") and not ckpt.get("tokenizer_state") and tokenizer_path:
        from data.tokenizer import get_tokenizer   # an hf checkpoint that carries no tokenizer: the one named
        try:
            ckpt = {**ckpt, "tokenizer_state": get_tokenizer(tok, tokenizer_path).state()}
        except (ValueError, OSError) as e:
            raise CheckpointError(f"--tokenizer_path {tokenizer_path}: {e}") from e
    bos, eos = special_ids(ckpt)
    os.makedirs(out_dir, exist_ok=True)
    n_vocab = ckpt.get("n_vocab") or mc["vocab_size"]
    tensors = hf_state_dict(clean_state_dict(ckpt["model"]), mc["tie_embeddings"], DTYPES[dtype], n_vocab)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(mc, bos, eos, dtype, n_vocab), f, indent=2)
    pad = eos[0] if isinstance(eos, list) else eos
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}, f, indent=2)

    tokenizer_note = (f"The tokenizer files here encode text as nanokd's `{tok}` tokenizer does, except that "
                      f"special-token text such as `<|endoftext|>` becomes that token (nanokd reads it as plain text).")
    hf_tok = hf_tokenizer_of(ckpt)
    delimiting = (f"Training documents were separated by the end-of-text token (id {eos}) and no begin-of-text "
                  f"token was added, so prompts read most naturally after it.")
    if hf_tok is not None:
        delimiting = (f"Training documents were delimited as the tokenizer's config says: ids {hf_tok.doc_prefix} "
                      f"before each and {hf_tok.doc_suffix} after.")
    if with_tokenizer and hf_tok is not None:
        hf_tok.save(out_dir, model_max_length=mc["block_size"])  # as the checkpoint carries it, at this context
    elif with_tokenizer and tok not in SPECIAL_IDS:
        tokenizer_note = "No tokenizer files were written: the checkpoint carries no tokenizer."
    elif with_tokenizer:
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
                f"{n_vocab} and a softmax over them is the one nanokd's eval.py takes.\n\n{tokenizer_note}\n\n{delimiting}\n")
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
    ap.add_argument("--tokenizer_path", default=None,
                    help="llama3's tokenizer.model (default: the run's); hf: the tokenizer folder, for a checkpoint "
                         "that does not carry its tokenizer")
    ap.add_argument("--no_tokenizer", action="store_true", help="write only the model")
    args = ap.parse_args(argv)
    above = os.path.abspath(args.out)
    while not os.path.exists(above):   # the nearest part of --out that exists must be a folder
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        sys.exit(f"export.py: --out={args.out!r}; allowed: a folder to write (made if missing), but {above} is a file")
    try:
        out = export(args.ckpt, args.out, args.dtype, args.tokenizer_path, not args.no_tokenizer)
    except CheckpointError as e:
        sys.exit(f"export.py: {e}")
    print(f"wrote {out}: " + ", ".join(sorted(os.listdir(out))))


if __name__ == "__main__":
    main()
