"""
The tables and figures of an analysis.json (analyze.py's results): <out>/analysis.md, the KD gain per bucket of
every breakdown beside its bootstrap interval, and <out>/gain_by_<breakdown>.png. analyze.py writes them after
scoring; `python analyze.py --replot DIR` redraws them from DIR/analysis.json alone, with no model loaded.
"""

import math
import os

import numpy as np

# Named in the tables as well as used by the scoring: analyze.py imports them from here so that imports run one
# way (this file needs neither torch nor the models).
AUTHORS = ("TaiMingLu/maxtext-distillation, rebuttal/logit_analysis.py @ 5748b58b1e6e0ec3fb83cd4d6b0a065546bcab12")
KINDS = ("all", "teacher_entropy", "baseline_entropy", "teacher_correct", "frequency", "position")
TEACHER_KINDS = ("teacher_entropy", "teacher_correct")   # bucketed by the arm's teacher: one table per teacher
TITLES = dict(all="split (all tokens)", teacher_entropy="teacher-entropy decile (nats)",
              baseline_entropy="baseline-entropy quintile (nats; the authors' bins)",
              teacher_correct="teacher's top-1", frequency="training-frequency bucket (equal token mass, frequent first)",
              position="position in the window")


def clean(x):
    """JSON-ready: numpy scalars as Python numbers, NaN (an empty bucket) as null, int seed keys as strings."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(x) else round(float(x), 6)
    return x.item() if isinstance(x, np.generic) else x


def fmt(v, lo=None, hi=None):
    if v is None or not math.isfinite(v):
        return "–"
    text = f"{v:+.3f}"
    if lo is None:
        return text
    text += f" [{lo:+.3f}, {hi:+.3f}]"
    return f"**{text}**" if lo > 0 or hi < 0 else text   # bold: the interval excludes 0


def groups_of(setup, kind):
    """(title, arms) per table/row of panels: per teacher where buckets depend on the teacher, else all arms."""
    if kind in TEACHER_KINDS:
        return [(f"teacher {t}", [a for a in setup["arms"] if a["teacher"] == t]) for t in setup["teachers"]]
    return [("", setup["arms"])]


def write_markdown(res, setup, path):
    splits = list(res["splits"])
    lines = [f"# Where does distillation help? Token-level analysis: {res['name']}", "",
             f"Written by `analyze.py` ({res['command']}). KD gain = same-seed no-KD baseline loss − student loss, "
             f"nats/token (> 0: KD helped); mean over seeds {res['seeds']}; [95% bootstrap interval over windows"
             f"{' and seeds' if len(res['seeds']) > 1 else ''}], **bold** where it excludes 0. Controls (no teacher): "
             f"{', '.join(setup['controls']) or 'none'}; 'beyond' = control loss − student loss. Quantities and the "
             f"baseline-entropy bins follow {AUTHORS}. Bucket edges from the first split ({splits[0]}).", "",
             "| split | tokens | windows |", "|---|---:|---:|"]
    lines += [f"| {s} | {r['tokens']:,} | {r['windows']} |" for s, r in res["splits"].items()]
    for kind in KINDS:
        lines += ["", f"## Gain by {TITLES[kind]}"]
        for title, arms in groups_of(setup, kind):
            if not arms:
                continue
            ctrl = [c for c in setup["controls"] if c in res["splits"][splits[0]]["arms"][arms[0]["label"]][kind][0]["controls"]]
            head = ["split", "bucket", "tokens", "H teacher"] + [a["label"] for a in arms] + \
                   [f"{c} (no teacher)" for c in ctrl] + [f"{a['label']} beyond {c}" for c in ctrl for a in arms]
            lines += (["", f"**{title}**"] if title else []) + ["", "| " + " | ".join(head) + " |",
                      "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
            for s in splits:
                rows = [res["splits"][s]["arms"][a["label"]][kind] for a in arms]
                for i, r0 in enumerate(rows[0]):
                    bucket = r0["bucket"] + (f" ({r0['distinct_ids']} ids, {100 * r0['train_mass']:.0f}% of training tokens)"
                                             if kind == "frequency" else "")
                    cells = [s, bucket, f"{r0['tokens']:,.0f}", fmt(r0["teacher_entropy"]).lstrip("+")]
                    cells += [fmt(r[i]["gain"], *r[i]["ci"]) for r in rows]
                    cells += [fmt(r0["controls"][c]["gain"], *r0["controls"][c]["ci"]) for c in ctrl]
                    cells += [fmt(r[i]["controls"][c]["teacher_beyond"], *r[i]["controls"][c]["teacher_beyond_ci"])
                              for c in ctrl for r in rows]
                    lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Every model (the authors' per-model means)", "",
              "| split | model | loss | entropy | max prob | rank of y: mean | median | effective vocab |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for s, r in res["splits"].items():
        lines += [f"| {s} | {m} | {v['loss']:.4f} | {v['entropy_mean']:.3f} | {v['max_prob_mean']:.3f} | "
                  f"{v['gt_rank_mean']:.2f} | {v['gt_rank_median']:.0f} | {v['effective_vocab_mean']:.1f} |"
                  for m, v in r["models"].items()]
    lines += ["", "## Pairs of models (the authors' pairwise means; a|b)", "",
              "| split | a | b | KL(a‖b) | KL(b‖a) | JS | top-1 agree | top-5 overlap | prob overlap |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for s, r in res["splits"].items():
        lines += [f"| {s} | {k.split('|')[0]} | {k.split('|')[1]} | {v['kl_ab']:.4f} | {v['kl_ba']:.4f} | {v['js']:.4f} | "
                  f"{v['top1_agree']:.3f} | {v['top5_overlap']:.3f} | {v['prob_overlap']:.3f} |" for k, v in r["pairs"].items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_figures(res, setup, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    splits, files = list(res["splits"]), []
    colors = dict(zip([a["label"] for a in setup["arms"]], plt.rcParams["axes.prop_cycle"].by_key()["color"] * 9))
    for kind in KINDS:
        groups = [(t, arms) for t, arms in groups_of(setup, kind) if arms]
        single = kind == "all"
        ncols = 1 if single else len(splits)
        fig, axes = plt.subplots(len(groups), ncols, figsize=(4.2 * ncols + (2 if single else 0), 3.2 * len(groups)),
                                 squeeze=False, sharey="row")
        for g, (title, arms) in enumerate(groups):
            for c in range(ncols):
                ax, panel_splits = axes[g][c], splits if single else [splits[c]]
                lines = [(a["label"], [res["splits"][s]["arms"][a["label"]][kind] for s in panel_splits], "gain", "ci",
                          dict(color=colors[a["label"]], marker="o")) for a in arms]
                for ctl in setup["controls"]:
                    rows = [res["splits"][s]["arms"][arms[0]["label"]][kind] for s in panel_splits]
                    if ctl in rows[0][0]["controls"]:
                        lines.append((f"{ctl} (no teacher)", [[dict(gain=r["controls"][ctl]["gain"], ci=r["controls"][ctl]["ci"])
                                                               for r in rs] for rs in rows], "gain", "ci",
                                      dict(color="0.4", linestyle="--", marker="s")))
                for k, (label, per_split, key, ci_key, style) in enumerate(lines):
                    rows = [r for rs in per_split for r in rs]
                    x = np.arange(len(rows)) + (k - (len(lines) - 1) / 2) * 0.06
                    y = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
                    lo = np.array([np.nan if r[ci_key][0] is None else r[ci_key][0] for r in rows], dtype=float)
                    hi = np.array([np.nan if r[ci_key][1] is None else r[ci_key][1] for r in rows], dtype=float)
                    ax.errorbar(x, y, yerr=[y - lo, hi - y], capsize=2, markersize=3.5, linewidth=1.2, label=label, **style)
                ax.axhline(0, color="k", linewidth=0.6)
                first = res["splits"][panel_splits[0]]["arms"][arms[0]["label"]][kind]
                ticks = panel_splits if single else [r["bucket"] + (f" ({r['distinct_ids']} ids)" if "distinct_ids" in r else "")
                                                     for r in first]
                ax.set_xticks(range(len(ticks)), ticks, rotation=0 if single or kind == "teacher_correct" else 60,
                              fontsize=7, ha="center" if single or kind == "teacher_correct" else "right")
                ax.set_title((f"{title}, " if title else "") + ("" if single else splits[c]), fontsize=9)
                if c == 0:
                    ax.set_ylabel("KD gain (nats/token)")
            axes[g][-1].legend(fontsize=7, loc="best")
        fig.suptitle(f"{res['name']}: KD gain by {TITLES[kind]} (95% bootstrap CI)", fontsize=10)
        fig.tight_layout()
        name = "gain_by_split.png" if single else f"gain_by_{kind}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        files.append(name)
    return files
