"""
Where does distillation help? A token-level look at KD students beside their same-seed no-KD baseline
and their teacher, on every prepared split (val, each ood_*, each ppl_*).

    python analyze.py --teacher out/g/teacher_t192/ckpt.pt --baselines out/g/s128_noKD_s43/ckpt.pt,... \
        --students out/g/s128_t192_a0.3_s43/ckpt.pt,... [--controls out/g/s128_noKD_ls0.1_s43/ckpt.pt,...]
    python analyze.py --grid configs/grids/laptop_analysis.py --out docs/analysis   # every (teacher, α) of a grid
    torchrun --nproc_per_node=8 analyze.py ...                                      # windows shared out over ranks
    python analyze.py --replot docs/analysis       # tables and figures again from analysis.json (no scoring)

A checkpoint says what it is (its run config: seed, alpha, teacher_ckpt, label_smoothing): students are paired
with the baseline and control of their own seed, and grouped by (teacher, α) over seeds. With --grid the runs
come from sweep.py's expansion of the grid (trained ones only); --only keeps runs whose name holds a substring.

Per token, in windows of block_size+1 tokens scored on their last block_size (eval.py's evaluate_loss), the
logits a chunk of rows at a time (never [tokens, vocab] for a whole batch):
  every model   loss = −log p(y); entropy; max probability; rank of y (1 + tokens more probable); effective
                vocabulary (tokens with p > 1/V); top-1
  pairs (a, b)  KL(a‖b), KL(b‖a), JS (½, ½), top-1 agreement, top-5 overlap (|top5(a) ∩ top5(b)| / 5: the
                authors' "top5_jaccard"), probability overlap Σ min(p_a, p_b); for (student, its teacher),
                (student, its baseline), (teacher, baseline), (control, teacher), (control, baseline)
  the token     its count in the training data (data/token_counts.py), its position in the window
These quantities, and 5 quantile bins of the baseline's entropy, follow the authors' analysis ("Exp 5":
TaiMingLu/maxtext-distillation, rebuttal/logit_analysis.py @ 5748b58b1e6e0ec3fb83cd4d6b0a065546bcab12).

KD gain = baseline loss − student loss (nats/token; > 0: KD helped), by bucket of
  teacher_entropy   deciles of the teacher's entropy (T = 1)
  baseline_entropy  quintiles of the same-seed baseline's entropy (the authors' bins: np.quantile, np.digitize)
  teacher_correct   whether y is the teacher's top-1
  frequency         buckets of equal training-token mass, most frequent first (each says how many ids it holds)
  position          equal ranges of the position in the window
  all               the whole split
Bucket edges come from the first split (val): a bucket is the same entropy range on every split, so splits
compare bucket by bucket (on val the bins are the authors'). Each row also holds each control's gain (a
no-teacher student, e.g. label smoothing, against the same baseline) and the teacher's gain beyond it (control
loss − student loss). 95% intervals: percentile bootstrap over windows, and over seeds where there are several
(each replicate draws windows and seeds with replacement; with two seeds the seed part is coarse).

Writes <out>/analysis.json, <out>/analysis.md and <out>/gain_by_<breakdown>.png (gain per bucket, one row of
panels per teacher, one panel per split); --save_tokens adds every per-token array (tokens_<split>.npz).
"""

import argparse
import json
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from analyze_report import AUTHORS, KINDS, clean, write_figures, write_markdown
from checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from data.loader import eval_batches
from data.token_counts import load_counts
from data.tokenfile import read_header
from eval import loss_splits
from fused_kd import _to_fp32_logits
from parallel import exit_cleanly, init_processes

MODEL_KEYS = ("loss", "entropy", "max_prob", "rank", "eff_vocab", "top1")
PAIR_KEYS = ("kl_ab", "kl_ba", "js", "top1_agree", "top5_overlap", "prob_overlap")


# ---- per-token quantities of one chunk of rows ---------------------------------------------------------------

def model_stats(logits, y):
    """logits [C, V] (fp32 or wider), labels y [C] -> ({quantity: [C]}, log-probabilities [C, V])."""
    logp = F.log_softmax(logits, -1)
    p = logp.exp()
    stats = dict(loss=-logp.gather(1, y[:, None])[:, 0], entropy=-(p * logp).sum(-1), max_prob=p.max(-1).values,
                 rank=(logits > logits.gather(1, y[:, None])).sum(-1) + 1, eff_vocab=(p > 1.0 / logits.shape[1]).sum(-1),
                 top1=logits.argmax(-1))
    return stats, logp


def pair_stats(logp_a, logp_b, top1_a, top1_b, top5_a, top5_b):
    """Two models' agreement on the same rows (the authors' compute_pairwise_stats; JS with log m exact)."""
    p_a, p_b = logp_a.exp(), logp_b.exp()
    log_m = torch.logaddexp(logp_a, logp_b) - math.log(2.0)
    return dict(kl_ab=(p_a * (logp_a - logp_b)).sum(-1), kl_ba=(p_b * (logp_b - logp_a)).sum(-1),
                js=0.5 * (p_a * (logp_a - log_m)).sum(-1) + 0.5 * (p_b * (logp_b - log_m)).sum(-1),
                top1_agree=top1_a == top1_b,
                top5_overlap=(top5_a[:, :, None] == top5_b[:, None, :]).any(-1).sum(-1) / top5_a.shape[1],
                prob_overlap=torch.minimum(p_a, p_b).sum(-1))


def chunk_logits(h, w):
    """[C, V] logits, at least fp32; from bf16 on CUDA the fp32 accumulator itself (fused_kd.py's GEMM)."""
    if h.is_cuda and h.dtype in (torch.bfloat16, torch.float16):
        out = torch.empty(h.shape[0], w.shape[0], device=h.device, dtype=torch.float32)
        _to_fp32_logits(h, w.to(h.dtype), out)
        return out
    return (h @ w.to(h.dtype).T).to(torch.promote_types(h.dtype, torch.float32))


def token_keys(models, pairs):
    return (["window", "position", "target"] + [f"{m}/{k}" for m in models for k in MODEL_KEYS]
            + [f"{a}|{b}/{k}" for a, b in pairs for k in PAIR_KEYS])


@torch.no_grad()
def score_split(models, pairs, path, *, n_vocab, block_size, batch_size, tokenizer=None, max_batches=None,
                device="cpu", autocast=nullcontext(), rows_per_chunk=None, rank=0, world_size=1, progress=None):
    """Per-token arrays over a split's windows (this rank's share): window, position, target, "<model>/<key>" for
    every model and "<a>|<b>/<key>" for every pair. models: {name: GPT}; pairs: [(a, b)] of names."""
    V = n_vocab
    C = rows_per_chunk or max(16, min(8192, (256 << 20) // (8 * V * len(models))))   # ~256 MiB of logits per chunk
    weights = {name: m.lm_head.weight[:V] for name, m in models.items()}
    k5 = min(5, V)
    acc = {k: [] for k in token_keys(models, pairs)}
    for j, (x, y) in enumerate(eval_batches(path, batch_size, block_size, max_batches=max_batches, rank=rank,
                                            world_size=world_size, tokenizer=tokenizer, vocab_size=V)):
        first = (rank + j * world_size) * batch_size   # this batch's first window in the file
        B, T = x.shape
        acc["window"].append(np.repeat(np.arange(first, first + B, dtype=np.int32), T))
        acc["position"].append(np.tile(np.arange(T, dtype=np.int32), B))
        acc["target"].append(y.reshape(-1).numpy().astype(np.int32))
        x, y = x.to(device), y.reshape(-1).to(device)
        hidden = {}
        for name, m in models.items():
            with autocast:
                hidden[name] = m(x).reshape(B * T, -1)
        for i in range(0, B * T, C):
            yc, logp, top1, top5 = y[i:i + C], {}, {}, {}
            for name in models:
                logits = chunk_logits(hidden[name][i:i + C], weights[name])
                stats, logp[name] = model_stats(logits, yc)
                top1[name], top5[name] = stats["top1"], logits.topk(k5, -1).indices
                for k, v in stats.items():
                    acc[f"{name}/{k}"].append(v)
            for a, b in pairs:
                for k, v in pair_stats(logp[a], logp[b], top1[a], top1[b], top5[a], top5[b]).items():
                    acc[f"{a}|{b}/{k}"].append(v)
        if progress:
            progress(B * T)
    out = {}
    for k, parts in acc.items():
        if parts and isinstance(parts[0], torch.Tensor):
            v = torch.cat(parts).cpu()
            integer = k.split("/")[-1] in ("rank", "eff_vocab", "top1")   # floats as computed: fp32, fp64 in tests
            out[k] = v.numpy().astype(np.int32) if integer else v.numpy().astype(np.promote_types(v.numpy().dtype, np.float32))
        else:
            out[k] = np.concatenate(parts) if parts else np.zeros(0, np.int32 if "/" not in k else np.float32)
    return out


def gather(tokens, world_size):
    """Every rank's tokens on every rank, in window order (as one process would have them)."""
    if world_size == 1:
        return tokens
    parts = [None] * world_size
    dist.all_gather_object(parts, tokens)
    joined = {k: np.concatenate([p[k] for p in parts]) for k in tokens}
    order = np.lexsort((joined["position"], joined["window"]))
    return {k: v[order] for k, v in joined.items()}


class Progress:
    """Tokens scored over all splits, with a rate and an ETA, every `every` seconds (rank 0 counts its share)."""

    def __init__(self, total, every=10.0, log=print):
        self.total, self.done, self.every, self.log = total, 0, every, log
        self.t0 = self.last = time.time()

    def __call__(self, n):
        self.done += n
        now = time.time()
        if now - self.last >= self.every or self.done >= self.total:
            self.last, rate = now, self.done / max(now - self.t0, 1e-9)
            self.log(f"  {self.done:,}/{self.total:,} tokens ({100 * self.done / max(self.total, 1):.0f}%), "
                     f"{rate:,.0f} tokens/s, ETA {(self.total - self.done) / max(rate, 1e-9):.0f}s", flush=True)


# ---- buckets and the bootstrap --------------------------------------------------------------------------------

def quantile_edges(x, n):
    """The authors' bins: n+1 quantiles of x; a value goes to np.digitize(x, edges[1:-1]) (0 .. n-1)."""
    return np.quantile(x, np.linspace(0, 1, n + 1))


def frequency_buckets(counts, n):
    """Token id -> one of n buckets of equal training-token mass, most frequent first: ids in order of count,
    each in the bucket holding the middle of its share of the mass (unseen ids fall in the last)."""
    order = np.argsort(-counts, kind="stable")
    c = counts[order].astype(np.float64)
    middle = (np.cumsum(c) - c / 2) / max(c.sum(), 1.0)
    bucket = np.empty(len(counts), dtype=np.int64)
    bucket[order] = np.minimum((middle * n).astype(np.int64), n - 1)
    return bucket


def bootstrap_draws(n_windows, n_boot, seed):
    """Window multiplicities [n_boot, W] of a resample with replacement (shared by every quantity of a split)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_windows, np.full(n_windows, 1.0 / n_windows), size=n_boot).astype(np.float64)


def bucket_stats(values, buckets, window, nb, draws=None, seed=0):
    """Mean of `values` per bucket, averaged over seeds. values, buckets: one [N] array per seed (same windows).
    With draws: (estimate, 2.5% and 97.5% bootstrap percentiles, per-seed estimates); else the estimate."""
    W = int(window.max()) + 1 if len(window) else 1
    S = np.stack([np.bincount(window * nb + b, weights=v, minlength=W * nb).reshape(W, nb)
                  for v, b in zip(values, buckets)])        # [seeds, W, nb] sums
    Cn = np.stack([np.bincount(window * nb + b, minlength=W * nb).reshape(W, nb) for b in buckets])
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = S.sum(1) / Cn.sum(1)
        estimate = per_seed.mean(0)
        if draws is None:
            return estimate
        rep = np.einsum("rw,swb->srb", draws, S) / np.einsum("rw,swb->srb", draws, Cn)   # [seeds, R, nb]
    n_seeds, R = len(values), draws.shape[0]
    picks = np.random.default_rng([seed, n_seeds]).integers(n_seeds, size=(R, n_seeds))   # seeds, with replacement
    with warnings.catch_warnings():   # a bucket no replicate has a token in stays NaN (null in the JSON)
        warnings.simplefilter("ignore", RuntimeWarning)
        boot = np.nanmean(rep[picks, np.arange(R)[:, None], :], axis=1) if n_seeds > 1 else rep[0]
        lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
    return estimate, lo, hi, per_seed


# ---- what is compared -----------------------------------------------------------------------------------------

def describe(path):
    """A checkpoint's part in the analysis, read from its own run config."""
    cfg = load_checkpoint(path, mmap=True).get("config") or {}
    return dict(name=os.path.basename(os.path.dirname(os.path.abspath(path))), path=path, seed=cfg.get("seed"),
                alpha=float(cfg.get("alpha", 0.0)), teacher_ckpt=cfg.get("teacher_ckpt") or "",
                label_smoothing=float(cfg.get("label_smoothing", 0.0)), data_dir=cfg.get("data_dir"))


def setup_from_paths(teachers, students, baselines, controls):
    """{models: {name: path}, teachers: {label: name}, arms: [...], controls: {label: {seed: name}}, data_dir}.
    An arm is a (teacher, α) over seeds: {label, teacher, alpha, students: {seed: name}, baselines: {seed: name}}."""
    t = {d["name"].removeprefix("teacher_"): d for d in map(describe, teachers)}
    by_path = {os.path.realpath(d["path"]): label for label, d in t.items()}
    base = {d["seed"]: d for d in map(describe, baselines)}
    setup = dict(models={}, teachers={label: d["name"] for label, d in t.items()}, arms=[], controls={},
                 data_dir=next(iter(t.values()))["data_dir"] if t else None)
    for d in list(t.values()) + list(base.values()):
        setup["models"][d["name"]] = d["path"]
    arms = {}
    for d in map(describe, students):
        teacher = by_path.get(os.path.realpath(d["teacher_ckpt"])) if d["teacher_ckpt"] else None
        teacher = teacher or (next(iter(t)) if len(t) == 1 else None)
        if teacher is None:
            raise ValueError(f"{d['path']}: its teacher {d['teacher_ckpt']!r} is not one of --teacher")
        if d["seed"] not in base:
            raise ValueError(f"{d['path']}: no --baselines checkpoint has its seed {d['seed']}")
        arm = arms.setdefault((teacher, d["alpha"]), dict(label=f"{teacher} α={d['alpha']:g}", teacher=teacher,
                                                          alpha=d["alpha"], students={}, baselines={}))
        if d["seed"] in arm["students"]:
            raise ValueError(f"two students of {arm['label']} have seed {d['seed']}: give one per seed")
        arm["students"][d["seed"]], arm["baselines"][d["seed"]] = d["name"], base[d["seed"]]["name"]
        setup["models"][d["name"]] = d["path"]
    setup["arms"] = sorted(arms.values(), key=lambda a: (list(t).index(a["teacher"]), a["alpha"]))
    for d in map(describe, controls):
        label = f"ls{d['label_smoothing']:g}" if d["label_smoothing"] else d["name"].rsplit("_s", 1)[0]
        setup["controls"].setdefault(label, {})[d["seed"]] = d["name"]
        setup["models"][d["name"]] = d["path"]
    return setup


def setup_from_grid(path, only=""):
    """Every (teacher, α) of a sweep.py grid, from its trained runs: the baselines are its no-KD runs without a
    variant, the controls those with one (e.g. label smoothing)."""
    import sweep
    runs = sweep.select(sweep.expand(sweep.load_grid(path)), only)
    done = [r for r in runs if os.path.exists(os.path.join(r["out_dir"], "ckpt.pt"))]
    for r in runs:
        if r not in done:
            print(f"analyze.py: {r['name']} is not trained yet, left out", flush=True)
    ckpt = {r["name"]: os.path.join(r["out_dir"], "ckpt.pt") for r in done}
    pick = lambda cond: [ckpt[r["name"]] for r in done if cond(r)]   # noqa: E731
    trained_teachers = {r["teacher"] for r in done if r["kind"] == "teacher"}
    return setup_from_paths(pick(lambda r: r["kind"] == "teacher"),
                            pick(lambda r: r["kind"] == "student" and r["teacher"] in trained_teachers),
                            pick(lambda r: r["kind"] == "student" and not r["teacher"] and not r["variant"]),
                            pick(lambda r: r["kind"] == "student" and not r["teacher"] and r["variant"]))


def pairs_of(setup):
    """(a, b) pairs scored per token: (student, teacher), (student, baseline), (teacher, baseline), controls'."""
    pairs = []
    for arm in setup["arms"]:
        for seed, s in arm["students"].items():
            pairs += [(s, setup["teachers"][arm["teacher"]]), (s, arm["baselines"][seed])]
    baselines = sorted({b for arm in setup["arms"] for b in arm["baselines"].values()})
    for t in setup["teachers"].values():
        pairs += [(t, b) for b in baselines]
    seed_base = {seed: b for arm in setup["arms"] for seed, b in arm["baselines"].items()}
    for seeds in setup["controls"].values():
        for seed, c in seeds.items():
            pairs += [(c, t) for t in setup["teachers"].values()] + ([(c, seed_base[seed])] if seed in seed_base else [])
    return list(dict.fromkeys(pairs))


# ---- one split's breakdowns -----------------------------------------------------------------------------------

def buckets_for(kind, tok, arm, setup, edges, freq, n_pos, block_size):
    """Per seed of the arm: bucket of every token, the number of buckets and their labels."""
    seeds = sorted(arm["students"])
    teacher = setup["teachers"][arm["teacher"]]
    if kind == "all":
        return [np.zeros(len(tok["target"]), np.int64)] * len(seeds), 1, ["all tokens"]
    if kind in ("teacher_entropy", "baseline_entropy"):
        names = [teacher] * len(seeds) if kind == "teacher_entropy" else [arm["baselines"][s] for s in seeds]
        e = np.mean([edges[n] for n in names], axis=0)
        labels = [f"< {e[1]:.2f}"] + [f"{e[i]:.2f}–{e[i + 1]:.2f}" for i in range(1, len(e) - 2)] + [f"≥ {e[-2]:.2f}"]
        return [np.digitize(tok[f"{n}/entropy"], edges[n][1:-1]) for n in names], len(e) - 1, labels
    if kind == "teacher_correct":
        right = (tok[f"{teacher}/top1"] == tok["target"]).astype(np.int64)
        return [1 - right] * len(seeds), 2, ["teacher top-1 = y", "teacher top-1 ≠ y"]
    if kind == "frequency":
        bucket, nb = freq
        return [bucket[tok["target"]]] * len(seeds), nb, [f"mass {i + 1}/{nb}" for i in range(nb)]
    width = math.ceil(block_size / n_pos)
    return ([(tok["position"] // width).astype(np.int64)] * len(seeds), n_pos,
            [f"{i * width}–{min((i + 1) * width, block_size) - 1}" for i in range(n_pos)])


def analyse_split(tok, setup, edges, freq, counts, args, block_size):
    """{arm label: {kind: [row per bucket]}}, and the authors' per-model and per-pair means, for one split."""
    window = tok["window"].astype(np.int64)
    draws = bootstrap_draws(int(window.max()) + 1, args.n_boot, args.boot_seed)
    ci = lambda vals, b, nb: bucket_stats(vals, b, window, nb, draws, args.boot_seed)   # noqa: E731
    mean = lambda vals, b, nb: bucket_stats(vals, b, window, nb)                        # noqa: E731
    arms = {}
    for arm in setup["arms"]:
        seeds, t = sorted(arm["students"]), setup["teachers"][arm["teacher"]]
        stu, base = [arm["students"][s] for s in seeds], [arm["baselines"][s] for s in seeds]
        loss = lambda names: [tok[f"{n}/loss"] for n in names]   # noqa: E731
        gain = [b - s for b, s in zip(loss(base), loss(stu))]
        arms[arm["label"]] = out = {}
        for kind in KINDS:
            b, nb, labels = buckets_for(kind, tok, arm, setup, edges, freq, args.position_bins, block_size)
            g, lo, hi, per_seed = ci(gain, b, nb)
            desc = dict(tokens=np.mean([np.bincount(x, minlength=nb) for x in b], axis=0),
                        teacher_entropy=mean([tok[f"{t}/entropy"]] * len(seeds), b, nb),
                        baseline_loss=mean(loss(base), b, nb), student_loss=mean(loss(stu), b, nb),
                        kl_teacher_student=mean([tok[f"{s}|{t}/kl_ba"] for s in stu], b, nb),
                        kl_teacher_baseline=mean([tok[f"{t}|{x}/kl_ab"] for x in base], b, nb),
                        entropy_change=mean([tok[f"{s}/entropy"] - tok[f"{x}/entropy"] for s, x in zip(stu, base)], b, nb))
            rows = []
            for i in range(nb):
                row = dict(bucket=labels[i], gain=g[i], ci=[lo[i], hi[i]], per_seed=dict(zip(seeds, per_seed[:, i])),
                           **{k: v[i] for k, v in desc.items()}, controls={})
                if kind == "frequency":
                    row.update(distinct_ids=int((freq[0] == i).sum()), train_mass=float(counts[freq[0] == i].sum() / counts.sum()))
                rows.append(row)
            for label, cseeds in setup["controls"].items():
                common = [k for k, s in enumerate(seeds) if s in cseeds]
                if not common:
                    continue
                ctrl = [tok[f"{cseeds[seeds[k]]}/loss"] for k in common]
                cg = ci([loss(base)[k] - c for k, c in zip(common, ctrl)], [b[k] for k in common], nb)
                beyond = ci([c - loss(stu)[k] for k, c in zip(common, ctrl)], [b[k] for k in common], nb)
                for i, row in enumerate(rows):
                    row["controls"][label] = dict(gain=cg[0][i], ci=[cg[1][i], cg[2][i]], teacher_beyond=beyond[0][i],
                                                  teacher_beyond_ci=[beyond[1][i], beyond[2][i]])
            out[kind] = rows
    models = {m: dict(loss=float(tok[f"{m}/loss"].mean()), ppl=float(np.exp(tok[f"{m}/loss"].mean())),
                      entropy_mean=float(tok[f"{m}/entropy"].mean()), entropy_std=float(tok[f"{m}/entropy"].std()),
                      entropy_median=float(np.median(tok[f"{m}/entropy"])), max_prob_mean=float(tok[f"{m}/max_prob"].mean()),
                      gt_logprob_mean=float(-tok[f"{m}/loss"].mean()), gt_logprob_std=float(tok[f"{m}/loss"].std()),
                      gt_rank_mean=float(tok[f"{m}/rank"].mean()), gt_rank_median=float(np.median(tok[f"{m}/rank"])),
                      effective_vocab_mean=float(tok[f"{m}/eff_vocab"].mean()))
              for m in setup["models"]}
    pairs = {f"{a}|{b}": {k: float(tok[f"{a}|{b}/{k}"].mean()) for k in PAIR_KEYS} for a, b in pairs_of(setup)}
    return dict(tokens=int(len(window)), windows=int(window.max()) + 1, arms=arms, models=models, pairs=pairs)


# ---- the command line ----------------------------------------------------------------------------------------

def paths(text):
    return [p for p in text.split(",") if p]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="", help="a sweep.py grid file: every (teacher, α) of its trained runs")
    ap.add_argument("--only", default="", help="with --grid: runs whose name holds one of these (comma-separated)")
    ap.add_argument("--teacher", default="", help="teacher checkpoint(s), comma-separated")
    ap.add_argument("--students", default="", help="KD student checkpoints (any seeds, any α)")
    ap.add_argument("--baselines", default="", help="the no-KD baselines, one per student seed")
    ap.add_argument("--controls", default="", help="no-teacher controls, e.g. the label-smoothing students")
    ap.add_argument("--data_dir", default="", help="default: the teacher's run data_dir")
    ap.add_argument("--splits", default="", help="comma-separated (default: val, every ood_* and ppl_*)")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--max_batches", type=int, default=None, help="per split and rank (default: every window)")
    ap.add_argument("--block_size", type=int, default=None, help="default: the smallest model context")
    ap.add_argument("--position_bins", type=int, default=8)
    ap.add_argument("--frequency_bins", type=int, default=5)
    ap.add_argument("--n_boot", type=int, default=1000)
    ap.add_argument("--boot_seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="default bf16 on CUDA, else fp32")
    ap.add_argument("--out", default="", help="output folder (default: <grid out_root>/<name>/analysis, or ./analysis)")
    ap.add_argument("--name", default="", help="title of the report (default: the grid's name)")
    ap.add_argument("--save_tokens", action="store_true", help="also write every per-token array (tokens_<split>.npz)")
    ap.add_argument("--no_figures", action="store_true", help="JSON and markdown only")
    ap.add_argument("--replot", default="", help="a folder with analysis.json: rewrite its markdown and figures only")
    args = ap.parse_args(argv)
    if args.replot:   # the tables and figures are a function of the JSON alone
        res = json.load(open(os.path.join(args.replot, "analysis.json")))
        write_markdown(res, res["setup"], os.path.join(args.replot, "analysis.md"))
        return print(f"rewrote {args.replot}/analysis.md, {', '.join(write_figures(res, res['setup'], args.replot))}")
    ddp, rank, world_size, device = init_processes(args.device)
    log = print if rank == 0 else (lambda *a, **k: None)
    try:
        if args.grid:
            import sweep
            grid = sweep.load_grid(args.grid)
            setup = setup_from_grid(args.grid, args.only)
            out_dir = args.out or os.path.join(grid.get("out_root", "out"), grid["name"], "analysis")
            name = args.name or grid["name"]
        else:
            setup = setup_from_paths(paths(args.teacher), paths(args.students), paths(args.baselines), paths(args.controls))
            out_dir, name = args.out or "analysis", args.name or "analysis"
    except (ValueError, CheckpointError, OSError) as e:
        sys.exit(f"analyze.py: {e}")
    if not setup["arms"]:
        sys.exit("analyze.py: nothing to compare: give a teacher, its students and their same-seed baselines")

    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    autocast = torch.autocast(device.split(":")[0], getattr(torch, dtype)) if dtype != "float32" else nullcontext()
    models, meta = {}, {}
    for m, p in setup["models"].items():
        ck = load_checkpoint(p, mmap=True)
        models[m] = model_from_checkpoint(ck, device).eval()
        meta[m] = (ck["tokenizer"], ck["n_vocab"])
    if len(set(meta.values())) > 1:
        sys.exit(f"analyze.py: the models use different vocabularies: {meta}")
    tokenizer, n_vocab = next(iter(meta.values()))
    block_size = args.block_size or min(m.config.block_size for m in models.values())
    data_dir = args.data_dir or setup["data_dir"]
    splits = loss_splits(data_dir)
    if args.splits:
        missing = [s for s in paths(args.splits) if s not in splits]
        if missing:
            sys.exit(f"analyze.py: no split {', '.join(missing)} in {data_dir} (present: {', '.join(splits)})")
        splits = {s: splits[s] for s in paths(args.splits)}
    if rank == 0:
        counts = load_counts(data_dir, n_vocab, log=log)   # counted here once if the prepare step did not
    if ddp:
        dist.barrier()
    counts = load_counts(data_dir, n_vocab)
    freq = (frequency_buckets(counts, args.frequency_bins), args.frequency_bins)
    pairs = pairs_of(setup)
    seeds = sorted({s for a in setup["arms"] for s in a["students"]})
    log(f"analyze.py: {len(models)} models ({', '.join(models)}), {len(setup['arms'])} (teacher, α) arms, "
        f"{len(pairs)} pairs; splits {', '.join(splits)} of {data_dir}; {world_size} process(es) on {device}")

    def n_tokens(path):   # this rank's share, for the ETA
        n_win = read_header(path)["n_tokens"] // (block_size + 1)
        n_bat = math.ceil(n_win / args.batch_size)
        n_bat = min(n_bat, args.max_batches) if args.max_batches else n_bat
        mine = len(range(rank, n_bat, world_size))
        return min(mine * args.batch_size, n_win) * block_size
    progress = Progress(sum(n_tokens(p) for p in splits.values()), log=log)
    command = "python analyze.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res = dict(name=name, command=command, authors=AUTHORS, seeds=seeds, block_size=block_size, data_dir=data_dir,
               setup=setup, n_boot=args.n_boot, splits={})
    edges = {}
    os.makedirs(out_dir, exist_ok=True)
    for split, path in splits.items():
        log(f"{split}: scoring", flush=True)
        tok = score_split(models, pairs, path, n_vocab=n_vocab, block_size=block_size, batch_size=args.batch_size,
                          tokenizer=tokenizer, max_batches=args.max_batches, device=device, autocast=autocast,
                          rank=rank, world_size=world_size, progress=progress)
        tok = gather(tok, world_size)
        if rank != 0:
            continue
        if not edges:   # from the first split, for all
            for t in setup["teachers"].values():
                edges[t] = quantile_edges(tok[f"{t}/entropy"], 10)
            for b in {b for a in setup["arms"] for b in a["baselines"].values()}:
                edges[b] = quantile_edges(tok[f"{b}/entropy"], 5)
        res["splits"][split] = analyse_split(tok, setup, edges, freq, counts, args, block_size)
        if args.save_tokens:
            np.savez_compressed(os.path.join(out_dir, f"tokens_{split}.npz"), **tok)
    if rank == 0:
        res["edges"] = edges
        with open(os.path.join(out_dir, "analysis.json"), "w") as f:
            json.dump(clean(res), f, indent=1)
        write_markdown(clean(res), setup, os.path.join(out_dir, "analysis.md"))
        figures = [] if args.no_figures else write_figures(clean(res), setup, out_dir)
        log(f"wrote {out_dir}/analysis.json, analysis.md, {', '.join(figures)}")
    if ddp:   # Gloo's teardown can SIGABRT a finished rank (see parallel.exit_cleanly): leave as eval.py does
        exit_cleanly(0)
    return res


if __name__ == "__main__":
    main()
