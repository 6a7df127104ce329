"""
Evaluation: in-domain and out-of-distribution loss / perplexity.

    python eval.py --ckpt out/<run>/ckpt.pt [--out results.json]

train.py calls `evaluate_loss` for its periodic validation. A data directory
holds `val.bin` (in-domain, held out from training) and any number of
`ood_<name>.bin` files (other domains); every one that exists is evaluated.
"""

import argparse
import glob
import json
import math
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.nn.functional as F

from data.loader import eval_batches


def loss_splits(data_dir):
    """{split name: token file} for the in-domain validation split and every OOD split present."""
    splits = {}
    if os.path.exists(os.path.join(data_dir, "val.bin")):
        splits["val"] = os.path.join(data_dir, "val.bin")
    for path in sorted(glob.glob(os.path.join(data_dir, "ood_*.bin"))):
        splits[os.path.basename(path)[:-len(".bin")]] = path
    return splits


@torch.no_grad()
def evaluate_loss(model, path, *, batch_size, block_size, n_vocab, tokenizer=None, max_batches=None,
                  device="cpu", autocast=nullcontext(), rank=0, world_size=1, rows_per_chunk=2048):
    """Mean next-token cross-entropy (nats/token) over a token file, and its perplexity.

    Logits are computed a chunk of rows at a time so a 128k vocabulary never needs
    [batch·block, vocab] memory; columns past n_vocab (padding) are dropped.
    """
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, tokens)
    w = model.lm_head.weight
    for x, y in eval_batches(path, batch_size, block_size, max_batches=max_batches, rank=rank,
                             world_size=world_size, tokenizer=tokenizer, vocab_size=n_vocab):
        x, y = x.to(device), y.to(device)
        with autocast:
            h = model(x)
        h, y = h.reshape(-1, h.shape[-1]), y.reshape(-1)
        for i in range(0, h.shape[0], rows_per_chunk):
            logits = (h[i:i + rows_per_chunk] @ w[:n_vocab].T.to(h.dtype)).float()
            total[0] += F.cross_entropy(logits, y[i:i + rows_per_chunk], reduction="sum").double()
        total[1] += y.numel()
    if world_size > 1:
        dist.all_reduce(total)
    model.train(was_training)
    loss = (total[0] / total[1].clamp(min=1)).item()
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": int(total[1].item())}


def main(argv=None):
    from checkpoint import load_checkpoint, model_from_checkpoint

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="a nanokd checkpoint (out/<run>/ckpt.pt)")
    ap.add_argument("--data_dir", default=None, help="where val.bin / ood_*.bin live (default: the run's data_dir)")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--max_batches", type=int, default=None, help="cap per split, for quick looks")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="JSON file (default: eval.json next to the checkpoint)")
    args = ap.parse_args(argv)

    ckpt = load_checkpoint(args.ckpt)
    model = model_from_checkpoint(ckpt, args.device)
    data_dir = args.data_dir or ckpt["config"]["data_dir"]
    block_size = ckpt["model_config"]["block_size"]
    splits = loss_splits(data_dir)
    if not splits:
        sys.exit(f"eval.py: no val.bin or ood_*.bin in {data_dir}; prepare the data first (see README)")
    results = {"ckpt": args.ckpt, "step": ckpt["step"], "tokens_seen": ckpt["tokens_seen"], "tasks": {}}
    for name, path in splits.items():
        t0 = time.time()
        r = evaluate_loss(model, path, batch_size=args.batch_size, block_size=block_size, n_vocab=ckpt["n_vocab"],
                          tokenizer=ckpt["tokenizer"], max_batches=args.max_batches, device=args.device)
        results["tasks"][name] = r
        print(f"{name:20s} loss {r['loss']:.4f}  ppl {r['ppl']:9.2f}  ({r['tokens']:,} tokens, {time.time() - t0:.1f}s)")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), "eval.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
