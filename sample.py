"""
Sample from a model: a nanokd checkpoint, or a Hugging Face folder (a teacher you downloaded, or
what export.py wrote).

    python sample.py --ckpt out/tiny_student/ckpt.pt --prompt "The history of"
    python sample.py --ckpt hf/SmolLM2-135M --prompt_file prompt.txt --num_samples 3 \\
        --max_new_tokens 200 --temperature 0.8 --top_p 0.95 --seed 1

The text streams to stdout as it is generated; what it cost (tokens per second) and any note go to
stderr, so `> out.txt` keeps only the samples.

- The prompt starts a new document: it follows the tokens that end (and begin) a document in the
  model's training data, end-of-text for nanokd's own tokenizers, BOS for Llama-3.
- A sample ends at the tokenizer's end-of-text (or the folder's eos ids), unless --no_stop.
- --temperature 0 is greedy; otherwise top-k, then top-p (the smallest set of most likely tokens
  whose probability reaches p), then a draw. --seed fixes the draws: the same seed gives the same
  samples on the same machine.
- The model reads at most its context (block_size) of tokens. A longer prompt keeps only its last
  block_size/2 tokens, and when prompt plus sample fill the context the window moves on to the
  last block_size/2 tokens and is read again. Halving, rather than sliding one token at a time,
  means one re-read per block_size/2 new tokens instead of one per token; the price is a context
  that varies between half and all of block_size. The output says when this happens.
- Generation reads the prompt once (the prefill) and then feeds one token at a time, with the
  keys and values of the earlier tokens kept in a KVCache (model.py). generate(use_cache=False)
  reads the whole window again for every token: slower, and the reference the tests compare with.
"""

import argparse
import os
import sys
import time

import torch

from model import KVCache


# ---- choosing the next token ---------------------------------------------------------------------

def filter_logits(logits, top_k=0, top_p=1.0):
    """logits [..., V] with every token outside the top_k and outside the top_p nucleus set to -inf
    (top_k=0 and top_p=1 keep all). The nucleus is the fewest most likely tokens whose probabilities
    sum to at least top_p: a token is kept while the mass ranked above it is still under top_p.
    Tokens tied with the k-th are all kept."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        above = probs.cumsum(-1) - probs   # mass of the tokens ranked above each one
        drop = torch.zeros_like(above, dtype=torch.bool).scatter(-1, order, above >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits, temperature, top_k, top_p, generator):
    """One id from a row of logits: argmax at temperature 0, else a draw after filtering."""
    if temperature == 0:
        return int(logits.argmax())
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    # drawn on the CPU with a CPU generator, so a seed gives the same draw whatever device ran the model
    return int(torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator))


# ---- generation ----------------------------------------------------------------------------------

@torch.no_grad()
def generate(model, prompt, max_new_tokens, *, n_vocab, temperature=1.0, top_k=0, top_p=1.0, generator=None,
             stop_ids=(), use_cache=True):
    """Yield up to max_new_tokens ids continuing `prompt` (a list of ids), one at a time; the last is the
    first one in stop_ids, if any comes. Only the tokenizer's n_vocab ids are ever chosen (rows past it are
    padding). The window the model reads is at most block_size tokens (see the module doc)."""
    assert len(prompt) > 0, "generation needs at least one token to continue"
    block = model.config.block_size
    keep = max(1, block // 2)
    device, dtype = model.embed_tokens.weight.device, model.embed_tokens.weight.dtype
    seq, start, cache = list(prompt), 0, None
    for step in range(max_new_tokens):
        if len(seq) - start > block:   # the window is full: move on to its last `keep` tokens, read afresh
            start, cache = len(seq) - keep, None
        if not use_cache:
            x = seq[start:]
        elif cache is None:   # the prefill: the whole window once, sized for the rest of this window's tokens
            x = seq[start:]
            cache = KVCache(model.config, 1, min(block, len(x) + max_new_tokens - step), device, dtype)
        else:
            x = seq[-1:]   # the token just chosen; everything before it is in the cache
        hidden = model(torch.tensor([x], device=device), cache=cache)[:, -1]   # only the last position's logits
        token = next_token(model.lm_head(hidden)[0, :n_vocab], temperature, top_k, top_p, generator)
        seq.append(token)
        yield token
        if token in stop_ids:
            return


def window_note(n_prompt, max_new_tokens, block):
    """What stderr says when prompt plus sample do not fit the context (None when they do)."""
    if n_prompt + max_new_tokens <= block:
        return None
    how = (f"the prompt is cropped to its last {max(1, block // 2)} tokens" if n_prompt > block else
           f"once the context is full, the model reads only the last {max(1, block // 2)} tokens")
    return (f"note: the prompt ({n_prompt} tokens) plus up to {max_new_tokens} new tokens is longer than the model's "
            f"context of {block} tokens: {how}, and again each time the window fills")


class TextStream:
    """Token ids in, text safe to print out: never half of a UTF-8 character. A character can be cut
    across tokens (byte tokens, byte-level BPE); the tokenizer's decode then ends in U+FFFD until its
    last byte arrives, so text ending in U+FFFD is held back. The tokenizer's own decode does the work,
    from a token or so before the new ones: SentencePiece decoders drop the leading space of the first
    token they see, which would lose the space between prompt and sample. With byte tokens the printed
    pieces join to decode(all ids) exactly, broken UTF-8 included (tests/test_sample.py checks it)."""

    def __init__(self, decode, context=()):
        self.decode = decode
        self.ids = list(context)[-1:]
        self.done = len(self.ids)   # ids[:done] decode to text already printed (or the prompt's)

    def push(self, token):
        self.ids.append(token)
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        return self._release(text)

    def flush(self):
        return self._release(self.decode(self.ids))

    def _release(self, text):
        printed = self.decode(self.ids[:self.done])
        self.ids = self.ids[self.done:]   # the tokens released now are the context for the next ones
        self.done = len(self.ids)
        return text[len(printed):]


# ---- loading -------------------------------------------------------------------------------------

def load_model(path, device, dtype, tokenizer_path=None):
    """(model, tokenizer, n_vocab, stop ids) from a nanokd checkpoint or a Hugging Face folder."""
    from checkpoint import load_checkpoint, model_from_checkpoint
    from hf_checkpoint import is_hf_folder, model_from_hf
    from data.hf_tokenizer import HFTokenizer

    if is_hf_folder(path):
        model, info = model_from_hf(path, dtype=dtype, device=device)
        if info["tokenizer_state"] is None:
            raise ValueError(f"{path} has no tokenizer.json, which sample.py needs to encode the prompt")
        tokenizer = HFTokenizer.from_state(info["tokenizer_state"])
        eos = info["special_ids"][1]   # config.json's eos_token_id: an id, a list of them, or None
        stop = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    else:
        ckpt = load_checkpoint(path, mmap=True)
        model = model_from_checkpoint(ckpt, device, dtype).eval()
        info, stop = ckpt, set()
        if ckpt.get("tokenizer_state") and not tokenizer_path:   # a Hugging Face tokenizer, carried along
            tokenizer = HFTokenizer.from_state(ckpt["tokenizer_state"])
        else:
            from data.tokenizer import get_tokenizer
            run_config = ckpt.get("config") or {}
            tokenizer = get_tokenizer(ckpt["tokenizer"], path=tokenizer_path or run_config.get("tokenizer_path"))
    stop |= {tokenizer.eot} | ({tokenizer.eos} if getattr(tokenizer, "eos", None) is not None else set())
    return model, tokenizer, info["n_vocab"], stop


# ---- the command ---------------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line naming it (not a usage block)."""

    def error(self, message):
        sys.exit(f"sample.py: {message} (python sample.py --help lists them)")


def check_args(args):
    """Every setting in range before any work; a bad one is a one-line error naming it and what is allowed."""
    def bad(name, allowed):
        sys.exit(f"sample.py: --{name}={getattr(args, name)!r} is not allowed: {allowed}")
    if not os.path.exists(args.ckpt):
        bad("ckpt", "no such file or folder (a nanokd checkpoint such as out/<run>/ckpt.pt, or a Hugging Face "
                    "folder with config.json, model.safetensors and tokenizer.json)")
    if os.path.isdir(args.ckpt) and not os.path.isfile(os.path.join(args.ckpt, "config.json")):
        bad("ckpt", "a folder must be a Hugging Face model folder with a config.json")
    if args.prompt is not None and args.prompt_file is not None:
        sys.exit("sample.py: give --prompt or --prompt_file, not both")
    if args.prompt_file is not None and not os.path.isfile(args.prompt_file):
        bad("prompt_file", "no such file")
    if args.num_samples < 1:
        bad("num_samples", "an integer >= 1")
    if args.max_new_tokens < 1:
        bad("max_new_tokens", "an integer >= 1")
    if not args.temperature >= 0 or args.temperature == float("inf"):
        bad("temperature", "a finite number >= 0 (0 = greedy)")
    if args.top_k < 0:
        bad("top_k", "an integer >= 0 (0 = no top-k)")
    if not 0 < args.top_p <= 1:
        bad("top_p", "a number in (0, 1] (1 = no top-p)")
    if not 0 <= args.seed < 2 ** 63:
        bad("seed", "an integer in [0, 2**63)")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        bad("device", "cpu, cuda or cuda:N")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        bad("device", "cpu here: this machine has no CUDA GPU")


def main(argv=None):
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="a nanokd checkpoint (out/<run>/ckpt.pt) or a Hugging Face folder")
    ap.add_argument("--prompt", default=None, help="the text to continue (default: none, a document's start)")
    ap.add_argument("--prompt_file", default=None, help="read the prompt from this UTF-8 file")
    ap.add_argument("--num_samples", type=int, default=1)
    ap.add_argument("--max_new_tokens", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    ap.add_argument("--top_k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    ap.add_argument("--top_p", type=float, default=1.0, help="keep the nucleus of probability p (1 = all)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--no_stop", action="store_true", help="go on past end-of-text to max_new_tokens")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="the model's weights and cache (default: bfloat16 on CUDA, float32 on CPU)")
    ap.add_argument("--tokenizer_path", default=None, help="llama3's tokenizer.model (default: the run's)")
    args = ap.parse_args(argv)
    check_args(args)
    if args.prompt_file is not None:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                args.prompt = f.read()
        except (OSError, UnicodeDecodeError) as e:
            sys.exit(f"sample.py: --prompt_file={args.prompt_file!r} cannot be read as UTF-8 text ({e})")
    prompt_text = args.prompt or ""

    from checkpoint import CheckpointError
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    try:
        model, tokenizer, n_vocab, stop_ids = load_model(args.ckpt, args.device, dtype, args.tokenizer_path)
    except (CheckpointError, ValueError, OSError, RuntimeError) as e:
        sys.exit(f"sample.py: cannot load --ckpt={args.ckpt!r}: {e}")
    # the prompt follows what ends one document and begins the next in the training data
    prompt = list(tokenizer.doc_suffix) + list(tokenizer.doc_prefix) + tokenizer.encode(prompt_text)
    if args.no_stop:
        stop_ids = set()
    note = window_note(len(prompt), args.max_new_tokens, model.config.block_size)
    if note:
        print(note, file=sys.stderr)

    generator = torch.Generator().manual_seed(args.seed)
    for i in range(args.num_samples):
        if i:
            print("\n---------------", flush=True)
        print(prompt_text, end="", flush=True)
        stream, n, why = TextStream(tokenizer.decode, prompt), 0, "max_new_tokens"
        t0 = time.perf_counter()
        for token in generate(model, prompt, args.max_new_tokens, n_vocab=n_vocab, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, generator=generator, stop_ids=stop_ids):
            n += 1
            if token in stop_ids:
                why = "end-of-text"
                break
            print(stream.push(token), end="", flush=True)
        print(stream.flush(), flush=True)
        dt = time.perf_counter() - t0
        print(f"[sample {i + 1}/{args.num_samples}: {n} tokens in {dt:.2f} s, {n / dt:.1f} tokens/s "
              f"(prompt read included), stopped at {why}]", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
