"""
A grid's results in the paper's layout: for each teacher × α, perplexity on the
in-domain set and on every out-of-distribution set with their mean, each downstream
task's primary metric and the average, and the gain over the same seed's no-KD
baseline with its spread over seeds. sweep.py calls it after a sweep (and for
--report); it also rebuilds a report from a results.csv it wrote before:

    python sweep_report.py docs/laptop/results.csv --report_dir docs/laptop --name laptop

Writes <report_dir>/results.csv (one row per run), summary.md (the tables) and the
figures of sweep_plots.py.

What it reads is generic over eval.py's output: every task with a "loss" is a
perplexity set (in-domain: `val`, or a set whose name says fineweb; every other set
is OOD), every task with an "acc" is a downstream task whose primary metric is the
one the task names ("primary" or "metric": a key of the task, or a number), else
acc_norm. `paper_avg` (eval.py's average over the paper's 8 tasks, top level or
under "tasks") is shown where present; `mc_avg`, the mean acc_norm over what ran,
otherwise. Row keys: a set's loss under its own name (nats/token), its perplexity
under "PPL:<set>", a task's primary metric under "score:<task>".
"""

import argparse
import csv
import json
import math
import os
import statistics


def read_json(path):
    """The parsed file, or None if it is missing or unreadable (a half-written file is not done)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def eval_path(run, key):
    return os.path.join(run["out_dir"], f"eval_{key}.json")


# ---- one run's numbers ----------------------------------------------------------------------------

def is_loss(key):
    """A perplexity set's loss: `val`, the embedded corpus's ood_*, eval.py's ppl_<set> (derived keys excluded)."""
    return (key == "val" or key.startswith(("ood_", "ppl_"))) and key != "ood_avg" and ":" not in key


def is_in_domain(key):
    return key == "val" or "fineweb" in key.lower()


def number(x):
    """A metric as a float: a number itself, or a dict holding one under value/mean/avg (None if neither)."""
    if isinstance(x, dict):
        x = next((x[k] for k in ("value", "mean", "avg") if k in x), None)
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def primary(task):
    """(value, metric name) of a downstream task's primary metric."""
    for key in ("primary", "metric"):
        v = task.get(key)
        if isinstance(v, str) and number(task.get(v)) is not None:
            return number(task[v]), v
        if number(v) is not None:
            return number(v), task.get("primary_name", key)
    for key in ("acc_norm", "acc"):
        if key in task:
            return float(task[key]), key
    return None, None


def derive(m):
    """Perplexities, the OOD means and the accuracy averages from a run's raw numbers (in place)."""
    splits = [k for k in m if is_loss(k) and isinstance(m[k], float)]
    for k in splits:
        m.setdefault(f"PPL:{k}", math.exp(min(m[k], 50.0)))
    ood = [k for k in splits if not is_in_domain(k)]
    if ood:
        m["ood_avg"] = statistics.mean(m[k] for k in ood)             # mean loss, for the figures
        m["PPL:ood_mean"] = statistics.mean(m[f"PPL:{k}"] for k in ood)  # mean perplexity, the paper's column
    for k in [k for k in m if k.endswith("_acc_norm") and not k.startswith("gain_")]:
        m.setdefault(f"score:{k[:-len('_acc_norm')]}", m[k])          # runs from an older CSV: acc_norm
    accs = [m[k] for k in m if k.endswith("_acc_norm") and not k.startswith("gain_")]
    if accs:
        m["mc_avg"] = statistics.mean(accs)
    return m


def run_metrics(run, evals):
    """{metric: value} for one run, from train.py's final.json and eval.py's eval_<key>.json files."""
    m = {}
    final = read_json(os.path.join(run["out_dir"], "final.json"))
    if final:
        m.update(final["eval"])  # train.py's own final eval (eval_iters batches); eval.py's, if present, wins
        m["tokens"], m["train_loss"], m["minutes"] = final["tokens_seen"], final["train_loss"], final["minutes"]
        if "step" in final:
            m["steps"] = final["step"]
    for key in evals:
        results = read_json(eval_path(run, key)) or {}
        tasks = dict(results.get("tasks", {}))
        avg = results.get("paper_avg", tasks.pop("paper_avg", None))
        if number(avg) is not None:
            m["paper_avg"] = number(avg)
            missing = avg.get("missing") if isinstance(avg, dict) else None
            if missing:
                m["paper_avg_missing"] = " ".join(missing)
        for task, t in tasks.items():
            if "loss" in t:
                m[task] = float(t["loss"])
                if "ppl" in t:
                    m[f"PPL:{task}"] = float(t["ppl"])
            elif "acc" in t:
                m[f"{task}_acc"] = float(t["acc"])
                if "acc_norm" in t:
                    m[f"{task}_acc_norm"] = float(t["acc_norm"])
                value, metric = primary(t)
                if value is not None:
                    m[f"score:{task}"], m[f"metric:{task}"] = value, metric
    return derive(m)


# ---- rows, gains, groups --------------------------------------------------------------------------

def higher_is_better(key):
    return key.startswith("score:") or key.endswith(("_acc", "_acc_norm")) or key in ("mc_avg", "paper_avg")


def gainable(key):
    return not key.startswith("gain_") and (is_loss(key) or key == "ood_avg" or key.startswith("PPL:")
                                            or higher_is_better(key))


def add_gains(rows):
    """The teacher's size/tokens/val on each student row, and its gain over the same student's plain baseline of
    the same seed: baseline − run for losses and perplexities, run − baseline for accuracies (positive = better)."""
    by_name = {r["name"]: r for r in rows}
    teachers = {r["teacher"]: r for r in rows if r["kind"] == "teacher"}
    for row in rows:
        if row["kind"] != "student":
            continue
        t = teachers.get(row["teacher"]) if row["teacher"] else None
        if t:
            row.update(teacher_params=t["params"], teacher_tokens=t.get("tokens"), teacher_val=t.get("val"))
        base = by_name.get(f"{row['student']}_noKD_s{row['seed']}")
        if base and base is not row:
            for k, v in list(row.items()):
                if gainable(k) and isinstance(v, float) and isinstance(base.get(k), float):
                    row[f"gain_{k}"] = v - base[k] if higher_is_better(k) else base[k] - v
    return rows


def collect(runs, evals):
    """One row per finished run (its numbers and what the report needs to place it), gains included."""
    from model import GPT, config_from_preset  # noqa: deferred, torch is only needed for reports
    import torch

    def n_params(model_name):
        if model_name.startswith("hf:"):   # a Hugging Face teacher: its own config.json
            from hf_checkpoint import gpt_config_from_hf
            with open(os.path.join(model_name[3:], "config.json")) as f:
                cfg = gpt_config_from_hf(json.load(f))
        else:
            cfg = config_from_preset(model_name, 264, 256)
        with torch.device("meta"):
            return GPT(cfg).num_params(non_embedding=True)

    rows = []
    for r in runs:
        m = run_metrics(r, evals)
        if "train_loss" not in m and not ("hf" in r and m):   # unfinished; an HF teacher has only its eval
            continue
        rows.append(dict(name=r["name"], kind=r["kind"], student=r["student"], teacher=r["teacher"],
                         alpha=r["alpha"], variant=r["variant"], seed=r["seed"], model=r["model"],
                         params=n_params(r["model"]), **m))
    return add_gains(rows)


def aggregate(rows):
    """Rows grouped over seeds: (student, teacher, alpha, variant) -> mean and sample std of every number."""
    groups = {}
    for row in rows:
        if row["kind"] == "student":
            groups.setdefault((row["student"], row["teacher"], row["alpha"], row["variant"]), []).append(row)
    out = []
    for (s, t, a, v), members in groups.items():
        g = dict(student=s, teacher=t, alpha=a, variant=v, n=len(members), seeds=[m["seed"] for m in members])
        numbers = {k for m in members for k, x in m.items()
                   if isinstance(x, (int, float)) and not isinstance(x, bool) and k not in ("seed", "alpha")}
        for k in numbers:
            xs = [m[k] for m in members if isinstance(m.get(k), (int, float))]
            g[k] = statistics.mean(xs)
            g[k + "_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
            g[k + "_n"] = len(xs)
        for k in {k for m in members for k, x in m.items() if k.startswith(("metric:", "paper_avg_missing"))}:
            g[k] = members[0].get(k, "")
        out.append(g)
    return sorted(out, key=lambda g: (g["student"], g["teacher"] != "", g["teacher"], g["variant"], g["alpha"]))


# ---- what the tables show -------------------------------------------------------------------------

def columns(rows):
    """The report's columns: (in-domain sets, OOD sets, downstream tasks, the average), each a list of row keys."""
    keys = {k for row in rows for k in row}
    splits = [k for k in keys if is_loss(k)]
    in_domain = sorted((k for k in splits if is_in_domain(k)), key=lambda k: (k != "val", k))
    ood = sorted(k for k in splits if not is_in_domain(k))
    tasks = sorted(k[len("score:"):] for k in keys if k.startswith("score:"))
    avg = ["paper_avg"] if "paper_avg" in keys else ["mc_avg"] if "mc_avg" in keys else []
    return in_domain, ood, tasks, avg


def metric_names(rows):
    """Losses (splits and their OOD mean) and accuracies (acc_norm per task, the averages) for the figures."""
    in_domain, ood, tasks, avg = columns(rows)
    keys = {k for row in rows for k in row}
    losses = in_domain + ood + ["ood_avg"] * ("ood_avg" in keys)
    accs = sorted(k for k in keys if k.endswith("_acc_norm") and not k.startswith("gain_"))
    return losses, accs + [k for k in ("mc_avg", "paper_avg") if k in keys]


def fmt(g, k, gain=False, digits=3):
    if not isinstance(g.get(k), (int, float)):
        return ""
    pm = f" ± {g[k + '_std']:.{digits}f}" if g.get(k + "_n", 1) > 1 else ""
    return f"{g[k]:+.{digits}f}{pm}" if gain else f"{g[k]:.{digits}f}{pm}"


def short(split):
    return split[len("ppl_"):] if split.startswith("ppl_") else split[len("ood_"):] if split.startswith("ood_") else split


def write_report(rows, report_dir, grid_name):
    os.makedirs(report_dir, exist_ok=True)
    in_domain, ood, tasks, avg = columns(rows)
    metric = {t: next((r[f"metric:{t}"] for r in rows if f"metric:{t}" in r), "acc_norm") for t in tasks}
    shown = ([f"PPL:{k}" for k in in_domain] + [f"PPL:{k}" for k in ood] + ["PPL:ood_mean"] * bool(ood)
             + [f"score:{t}" for t in tasks] + avg)
    heads = ([f"{k} PPL (ID)" for k in in_domain] + [f"{short(k)} PPL" for k in ood] + ["OOD mean PPL"] * bool(ood)
             + [f"{t} ({metric[t]})" for t in tasks] + avg)

    losses, accs = metric_names(rows)
    meta = ["name", "kind", "student", "teacher", "alpha", "variant", "seed", "model", "params", "steps", "tokens",
            "train_loss"]
    teacher_cols = ["teacher_params", "teacher_tokens", "teacher_val"]
    numbers = losses + shown + [k for k in accs if k not in shown]
    cols = meta + numbers + teacher_cols + [f"gain_{k}" for k in numbers] + ["minutes"]
    cols += sorted({k for r in rows for k in r if k.startswith(("metric:", "paper_avg_missing"))})
    with open(os.path.join(report_dir, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in row.items()})

    groups = aggregate(rows)
    kd = [g for g in groups if g["teacher"]]
    row_head = "| student | teacher | α | variant | seeds | "
    md = [f"# {grid_name}: results", "",
          "Perplexity (lower is better) on the in-domain set"
          + (f" ({', '.join(in_domain)})" if in_domain else "") + f" and {len(ood)} out-of-distribution set(s) with "
          "their mean; downstream, each task's primary metric and "
          + ("`paper_avg` (eval.py's average over the paper's 8 tasks)" if avg == ["paper_avg"]
             else "`mc_avg` (mean acc_norm over the tasks that ran)" if avg else "no average") + ". "
          "Losses in nats per token, per run and split, are in results.csv.", "",
          "## Teachers", "",
          "| teacher | model | params (non-emb.) | tokens | " + " | ".join(heads) + " |",
          "|---|---|---:|---:|" + "---:|" * len(shown)]
    for row in rows:
        if row["kind"] == "teacher":
            tokens = f"{row['tokens']:,}" if row.get("tokens") is not None else "—"   # an HF teacher's: not known
            md.append(f"| {row['teacher']} | {row['model']} | {row['params'] / 1e6:.2f}M | {tokens} | "
                      + " | ".join(fmt(row, k) for k in shown) + " |")
    md += ["", "## Students", "", "Mean ± sample std over seeds; α = 0 without a teacher is the no-KD baseline.", "",
           row_head + " | ".join(heads) + " |", "|---|---|---:|---|---:|" + "---:|" * len(shown)]
    for g in groups:
        md.append(f"| {g['student']} | {g['teacher'] or '—'} | {g['alpha']:g} | {g['variant']} | {g['n']} | "
                  + " | ".join(fmt(g, k) for k in shown) + " |")
    md += ["", "## Gain over the no-KD baseline", "",
           "Per seed against that seed's baseline, then mean ± sample std over seeds: baseline − student for "
           "perplexity, student − baseline for accuracy. Positive = distillation helped.", "",
           row_head + " | ".join(f"Δ {h}" for h in heads) + " |", "|---|---|---:|---|---:|" + "---:|" * len(shown)]
    for g in kd:
        md.append(f"| {g['student']} | {g['teacher']} | {g['alpha']:g} | {g['variant']} | {g['n']} | "
                  + " | ".join(fmt(g, f"gain_{k}", gain=True) for k in shown) + " |")
    missing = sorted({r["paper_avg_missing"] for r in rows if r.get("paper_avg_missing")})
    if missing:
        md += ["", f"paper_avg leaves out what could not run: {'; '.join(missing)}."]
    with open(os.path.join(report_dir, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    from sweep_plots import plot_all
    figures = plot_all(rows, groups, losses, accs, report_dir)
    print(f"report: {len(rows)} runs -> {report_dir}/results.csv, summary.md, {', '.join(figures) or 'no figures'}")
    return groups


# ---- a report from an earlier results.csv ---------------------------------------------------------

def rows_from_csv(path):
    """results.csv (this file's or an earlier version's) back into rows: numbers as numbers, gains recomputed."""
    ints = {"seed", "params", "tokens", "steps", "teacher_params", "teacher_tokens"}
    rows = []
    with open(path) as f:
        for raw in csv.DictReader(f):
            row = {}
            for k, v in raw.items():
                if k.startswith("gain_") or v in ("", None):
                    continue
                if k in ("name", "kind", "student", "teacher", "variant", "model") or k.startswith(("metric:", "paper_avg_m")):
                    row[k] = v
                else:
                    row[k] = int(float(v)) if k in ints else float(v)
            for k in ("teacher", "variant", "student"):
                row.setdefault(k, "")
            row.setdefault("alpha", None if row["kind"] == "teacher" else 0.0)
            rows.append(derive(row))
    return add_gains(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="a results.csv written by an earlier report")
    ap.add_argument("--report_dir", required=True)
    ap.add_argument("--name", default="grid", help="the grid's name, for the title")
    args = ap.parse_args(argv)
    write_report(rows_from_csv(args.csv), args.report_dir, args.name)


if __name__ == "__main__":
    main()
