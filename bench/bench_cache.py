"""
Teacher caches, measured: bytes on disk per token for each method and k (byte-level and GPT-2 vocabularies),
the training step from a cache against online KD and against a student step without a teacher, and the
paper-scale arithmetic for configs/grids/paper_size_alpha.py. Writes one JSON; --table prints the README's
markdown from that JSON (so the README's numbers are never typed by hand).

    python bench/bench_cache.py --out bench/results/teacher_cache_cpu_2026-12-06.json
    python bench/bench_cache.py --table bench/results/teacher_cache_cpu_2026-12-06.json
    python bench/bench_cache.py --grid out/laptop_cache --out bench/results/laptop_cache_grid_2026-12-06.json

Storage comes from real teacher_cache.py runs over the first windows of data/embedded_<tok>/train.bin with a
randomly initialised teacher: a row's layout is fixed by method, k and vocabulary (kd_cache.row_layout), so
the teacher's weights do not change the bytes. Steps: train_step.micro_batch_loss forward + backward, the
cached step including reading its rows from the memory-mapped cache, medians of interleaved rounds.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import teacher_cache  # noqa: E402
from checkpoint import save_checkpoint  # noqa: E402
from data.tokenfile import load_tokens, write_tokens  # noqa: E402
from data.tokenizer import padded_vocab_size  # noqa: E402
from kd_cache import TeacherCache, bytes_per_row  # noqa: E402
from model import GPT, config_from_preset  # noqa: E402
from train_step import micro_batch_loss  # noqa: E402

VOCABS = {"bytes": dict(n_vocab=257, teacher="tiny-96", student="tiny-128"),
          "gpt2": dict(n_vocab=50257, teacher="gpt2-20m", student="gpt2-20m")}
BLOCK = 256


def make_run(root, tok, n_windows, seed=0):
    """A data folder with the first n_windows windows of the embedded corpus, and a random teacher checkpoint."""
    V = VOCABS[tok]["n_vocab"]
    data = os.path.join(root, f"data_{tok}")
    os.makedirs(data, exist_ok=True)
    write_tokens(os.path.join(data, "train.bin"),
                 np.asarray(load_tokens(f"data/embedded_{tok}/train.bin")[:n_windows * (BLOCK + 1)]), V, tok)
    torch.manual_seed(seed)
    cfg = config_from_preset(VOCABS[tok]["teacher"], padded_vocab_size(V), BLOCK)
    ckpt = os.path.join(root, f"teacher_{tok}.pt")
    save_checkpoint(ckpt, dict(model=GPT(cfg).state_dict(), model_config=asdict(cfg), tokenizer=tok, n_vocab=V,
                               config={}, step=0, tokens_seen=0))
    return data, ckpt


def storage(root, tok, n_windows):
    data, ckpt = make_run(root, tok, n_windows)
    V = VOCABS[tok]["n_vocab"]
    settings = [("top-k", k, "float32") for k in (4, 16, 64)] + [("top-k", k, "float16") for k in (4, 16, 64)]
    settings += [("sampled", k, "float32") for k in (4, 16, 64)]
    if tok == "bytes":
        settings.append(("top-k", V, "float32"))
    rows = []
    for method, k, vd in settings:
        out = os.path.join(root, f"cache_{tok}_{method}_{k}_{vd}")
        teacher_cache.main([f"--teacher_ckpt={ckpt}", f"--data_dir={data}", f"--tokenizer={tok}", f"--out={out}",
                            f"--method={method}", f"--k={k}", f"--value_dtype={vd}", f"--block_size={BLOCK}",
                            "--device=cpu", "--batch_size=4"])
        with open(os.path.join(out, "summary.json")) as f:
            s = json.load(f)
        rows.append(dict(vocab=tok, n_vocab=V, method=method, k=k, value_dtype=vd if method == "top-k" else "-",
                         tokens=s["tokens"], bytes=s["bytes"], bytes_per_token=s["bytes"] / s["tokens"],
                         gb_per_billion_tokens=s["bytes"] / s["tokens"], minutes=s["minutes_rank0"]))
        shutil.rmtree(out)
    return rows


def step_times(root, tok, batch_size, rounds):
    """ms per micro-batch, forward + backward, for: no teacher, online KD, and cached top-16 / sampled-16."""
    V = VOCABS[tok]["n_vocab"]
    n_windows = max(batch_size * 2, 8)
    data, ckpt = make_run(root, tok, n_windows)
    caches = {}
    for name, method in (("top16", "top-k"), ("smp16", "sampled")):
        out = os.path.join(root, f"step_{tok}_{name}")
        teacher_cache.main([f"--teacher_ckpt={ckpt}", f"--data_dir={data}", f"--tokenizer={tok}", f"--out={out}",
                            f"--method={method}", "--k=16", f"--block_size={BLOCK}", "--device=cpu"])
        caches[name] = TeacherCache(out)
    torch.manual_seed(1)
    student = GPT(config_from_preset(VOCABS[tok]["student"], padded_vocab_size(V), BLOCK))
    teacher = GPT(config_from_preset(VOCABS[tok]["teacher"], padded_vocab_size(V), BLOCK)).eval().requires_grad_(False)
    tokens = np.asarray(load_tokens(os.path.join(data, "train.bin")))[:batch_size * (BLOCK + 1)]
    buf = torch.from_numpy(tokens.astype(np.int64)).view(batch_size, BLOCK + 1)
    x, y = buf[:, :-1], buf[:, 1:]
    windows = np.arange(batch_size)
    opts = dict(temperature=1.0, vocab_size=V)

    def no_teacher():
        return micro_batch_loss(student, student.lm_head, x, y, 0.0, **opts)

    def online():
        return micro_batch_loss(student, student.lm_head, x, y, 0.5, teacher=teacher, teacher_head=teacher.lm_head, **opts)

    def cached(name, top_k):
        c = caches[name]
        return lambda: micro_batch_loss(student, student.lm_head, x, y, 0.5, **opts, top_k=top_k,
                                        cached=dict(targets=c.targets(windows), method=c.method, k=c.k))
    contenders = {"student step (no teacher)": no_teacher, "online KD": online,
                  "cached top-16 (teacher variant)": cached("top16", 16), "cached sampled-16": cached("smp16", None)}
    times = {n: [] for n in contenders}
    for _ in range(rounds):
        for n, fn in contenders.items():
            student.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            loss, _, _ = fn()
            loss.backward()
            times[n].append(time.perf_counter() - t0)
    base = statistics.median(times["student step (no teacher)"])
    return [dict(vocab=tok, n_vocab=V, contender=n, student=VOCABS[tok]["student"], teacher=VOCABS[tok]["teacher"],
                 tokens=batch_size * BLOCK, ms=1e3 * statistics.median(t), vs_no_teacher=statistics.median(t) / base)
            for n, t in times.items()]


def paper_arithmetic():
    """paper_size_alpha: 4 teachers × 6 α students of 52.4B tokens. Teacher-forward GPU-hours at 40% MFU of an H100's
    989 bf16 TFLOP/s (the README's assumption), and what a cache of each kind costs on disk per teacher."""
    tokens, peak, mfu = 25_000 * 2_097_152, 989e12, 0.40
    V = 128_256
    teachers = {"0.7b": "llama3.1-05b", "1.7b": "llama3.1-1b", "3.8b": "llama3.1-3b", "8b": "llama3.1-8b"}
    rows = []
    for name, preset in teachers.items():
        with torch.device("meta"):
            cfg = config_from_preset(preset, padded_vocab_size(V), 8192)
            flops = GPT(cfg).flops_per_token(8192, backward=False)
        rows.append(dict(teacher=name, forward_gpu_hours=flops * tokens / (mfu * peak) / 3600))
    fwd = sum(r["forward_gpu_hours"] for r in rows)
    cache_kinds = [("sampled", 16, "float16"), ("sampled", 64, "float16"), ("top-k", 20, "float16"),
                   ("top-k", 1283, "float16")]
    disk = [dict(method=m, k=k, value_dtype=vd if m == "top-k" else "-", bytes_per_token=bytes_per_row(m, k, V, vd),
                 tb_per_teacher=bytes_per_row(m, k, V, vd) * tokens / 1e12,
                 tb_grid=4 * bytes_per_row(m, k, V, vd) * tokens / 1e12) for m, k, vd in cache_kinds]
    return dict(tokens=tokens, students_per_teacher=6, mfu=mfu, peak_flops=peak, teachers=rows,
                teacher_forward_gpu_hours_online=6 * fwd, teacher_forward_gpu_hours_cached=fwd,
                gpu_hours_saved=5 * fwd, storage=disk)


ARMS = {"no KD": "s128_noKD_s{seed}", "online KD": "s128_t96x2_a0.3_s{seed}",
        "top-k 4": "s128_t96x2_a0.3_top4_s{seed}", "top-k 16": "s128_t96x2_a0.3_top16_s{seed}",
        "sampled 4": "s128_t96x2_a0.3_smp4_s{seed}", "sampled 16": "s128_t96x2_a0.3_smp16_s{seed}"}
SPLITS = ("val", "ood_news", "ood_pydocs")


def grid_summary(root, seeds=(43, 44)):
    """configs/grids/laptop_cache.py's finished runs: each arm's eval losses per seed, its gain over the no-KD run
    of the same seed, and that gain as a fraction of the online-KD gain of the same seed (seeds both have)."""
    def losses(run):
        path = os.path.join(root, run, "eval_loss.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            tasks = json.load(f)["tasks"]
        return {k: tasks[k]["loss"] for k in SPLITS}
    per = {arm: {seed: losses(pat.format(seed=seed)) for seed in seeds} for arm, pat in ARMS.items()}
    rows = []
    for arm in ARMS:
        row = dict(arm=arm, seeds=[s for s in seeds if per[arm][s]])
        for split in SPLITS:
            have = row["seeds"]
            row[split] = statistics.mean(per[arm][s][split] for s in have) if have else None
            both = [s for s in have if per["no KD"][s] and per["online KD"][s]]
            gains = [per["no KD"][s][split] - per[arm][s][split] for s in both]
            online = [per["no KD"][s][split] - per["online KD"][s][split] for s in both]
            row[f"gain_{split}"] = statistics.mean(gains) if gains else None
            row[f"fraction_of_online_gain_{split}"] = (sum(gains) / sum(online)) if gains and sum(online) else None
            row[f"seeds_compared_{split}"] = both
        rows.append(row)
    caches = {}
    for c in ("top4", "top16", "smp4", "smp16"):
        path = os.path.join(root, f"cache_t96x2_{c}", "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                caches[c] = json.load(f)
    return dict(grid="configs/grids/laptop_cache.py", root=root, arms=rows, caches=caches)


def grid_table(g):
    out = ["| arm | seeds | val | ood_news | ood_pydocs | val gain | val gain ÷ online-KD val gain | ood_pydocs gain | ood_news gain |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def f(v, d=3):
        return "–" if v is None else f"{v:.{d}f}"
    for r in g["arms"]:
        frac = r["fraction_of_online_gain_val"]
        out.append(f"| {r['arm']} | {', '.join(map(str, r['seeds'])) or 'not run'} | {f(r['val'])} | {f(r['ood_news'])} | "
                   f"{f(r['ood_pydocs'])} | {f(r['gain_val'], 4)} | {'–' if frac is None else f'{100 * frac + 0.0:.0f}%'} | "
                   f"{f(r['gain_ood_pydocs'], 4)} | {f(r['gain_ood_news'], 4)} |")
    if g["caches"]:
        out += ["", "| cache (every window of the grid's 700K-byte corpus) | bytes/token on disk | MB | minutes to write |",
                "|---|---:|---:|---:|"]
        out += [f"| {c}: {s['method']} k={s['k']} | {s['bytes_per_token']:.1f} | {s['bytes'] / 1e6:.1f} | "
                f"{s['minutes_rank0']:.1f} |" for c, s in g["caches"].items()]
    return "\n".join(out)


def table(path):
    with open(path) as f:
        r = json.load(f)
    if "arms" in r:
        return grid_table(r)
    out = ["| vocabulary | method | k | values | bytes/token | GB per 10⁹ tokens |", "|---|---|---:|---|---:|---:|"]
    for s in r["storage"]:
        out.append(f"| {s['vocab']} ({s['n_vocab']:,}) | {s['method']} | {s['k']} | {s['value_dtype']} | "
                   f"{s['bytes_per_token']:.1f} | {s['gb_per_billion_tokens']:.1f} |")
    out += ["", "| vocabulary | step (forward + backward of one micro-batch) | ms | × no-teacher step |", "|---|---|---:|---:|"]
    for s in r["steps"]:
        out.append(f"| {s['vocab']} ({s['student']} student, {s['teacher']} teacher, {s['tokens']:,} tokens) | "
                   f"{s['contender']} | {s['ms']:.0f} | {s['vs_no_teacher']:.2f} |")
    p = r["paper"]
    out += ["", "| paper_size_alpha | GPU-hours (H100, 40% MFU) |", "|---|---:|"]
    out += [f"| teacher {t['teacher']} forward over 52.4B tokens | {t['forward_gpu_hours']:,.0f} |" for t in p["teachers"]]
    out += [f"| teacher forwards, online (6 students per teacher) | {p['teacher_forward_gpu_hours_online']:,.0f} |",
            f"| teacher forwards, cached (once per teacher) | {p['teacher_forward_gpu_hours_cached']:,.0f} |",
            f"| saved | {p['gpu_hours_saved']:,.0f} |"]
    out += ["", "| cache at paper scale (Llama-3, 128,256 ids) | bytes/token | TB per teacher | TB for 4 teachers |",
            "|---|---:|---:|---:|"]
    out += [f"| {s['method']} k={s['k']}{' ' + s['value_dtype'] if s['value_dtype'] != '-' else ''} | {s['bytes_per_token']} | "
            f"{s['tb_per_teacher']:.1f} | {s['tb_grid']:.1f} |" for s in p["storage"]]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="")
    ap.add_argument("--table", default="", help="print the README tables from this JSON and exit")
    ap.add_argument("--windows", type=int, default=16, help="windows of 256 tokens each storage cache covers")
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--grid", default="", help="summarise configs/grids/laptop_cache.py's runs under this folder "
                                              "(e.g. out/laptop_cache) into --out instead of measuring")
    args = ap.parse_args()
    if args.table:
        return print(table(args.table))
    if args.grid:
        g = grid_summary(args.grid)
        if args.out:
            with open(args.out, "w") as f:
                f.write(json.dumps(g, indent=2) + "\n")
        return print(grid_table(g))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = tempfile.mkdtemp(prefix="bench_cache_")
    try:
        result = dict(device="cpu", threads=torch.get_num_threads(), torch=torch.__version__,
                      date=time.strftime("%Y-%m-%d"), note="shared 2-core machine under load from other jobs",
                      storage=storage(root, "bytes", args.windows) + storage(root, "gpt2", args.windows),
                      steps=step_times(root, "bytes", args.batch_size, args.rounds)
                      + step_times(root, "gpt2", args.batch_size, args.rounds),
                      paper=paper_arithmetic())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
