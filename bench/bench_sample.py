"""
What does the KV cache buy? sample.py's generate, greedy, on random weights (speed does not depend on
what they are), with the cache (one prefill, then one token per step) and without it (the whole window
read again for every token), interleaved round by round so machine noise hits both alike. Prints
tokens/s of each (median over rounds, prefill included) and the speedup.

    python bench/bench_sample.py                                   # tiny-128 on bytes, CPU
    python bench/bench_sample.py --model=gpt2-20m --block_size=1024 --prompt_len=64 --new_tokens=448
    python bench/bench_sample.py --model=llama3.1-05b --block_size=2048 --device=cuda --dtype=bfloat16

The cache's advantage grows with the sequence: a step without it costs a forward over the whole window,
with it a forward over one token plus attention over the cached keys.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, config_from_preset, preset_vocab  # noqa: E402
from sample import generate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-128", help="a model.py preset")
    ap.add_argument("--block_size", type=int, default=256)
    ap.add_argument("--prompt_len", type=int, default=32)
    ap.add_argument("--new_tokens", type=int, default=224, help="prompt_len + new_tokens <= block_size keeps one window")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()
    for name in ("block_size", "prompt_len", "new_tokens", "rounds"):
        if getattr(args, name) < 1:
            sys.exit(f"bench_sample.py: --{name}={getattr(args, name)} is not allowed: an integer >= 1")

    vocab = preset_vocab(args.model)
    torch.manual_seed(0)
    model = GPT(config_from_preset(args.model, vocab, args.block_size)).to(args.device, getattr(torch, args.dtype)).eval()
    prompt = torch.randint(0, vocab, (args.prompt_len,)).tolist()

    def tokens_per_s(use_cache):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = sum(1 for _ in generate(model, prompt, args.new_tokens, n_vocab=vocab, temperature=0, use_cache=use_cache))
        return n / (time.perf_counter() - t0)   # each step reads its token on the host, so the GPU is done

    tokens_per_s(True), tokens_per_s(False)   # warm-up
    cached, full = [], []
    for _ in range(args.rounds):
        cached.append(tokens_per_s(True))
        full.append(tokens_per_s(False))
    c, f = statistics.median(cached), statistics.median(full)
    print(f"{args.model} ({model.num_params() / 1e6:.1f}M params), block_size {args.block_size}, prompt "
          f"{args.prompt_len} + {args.new_tokens} new tokens, {args.device} {args.dtype}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds}")
    print(f"  with KV cache      {c:10.1f} tokens/s")
    print(f"  full forwards      {f:10.1f} tokens/s")
    print(f"  speedup            {c / f:10.2f}x")


if __name__ == "__main__":
    main()
