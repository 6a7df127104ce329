"""
The paper's kinds of figure, drawn from sweep.py's rows (one per run) and groups
(mean and std over seeds). Each function writes one PNG and returns its file name,
or None when the sweep has nothing to draw for it yet.

    alpha_<student>.png        student loss (and mean downstream accuracy) against α, one line per teacher;
                               α = 0 is the no-KD baseline every line starts from
    gain_vs_teacher_size.png   gain over the baseline against teacher size, one line per α
    gain_vs_teacher_tokens.png the same against the tokens the teacher was trained on
    gain_id_vs_ood.png         in-domain gain beside OOD and downstream gain, per teacher and α
    variants.png               gain per ablation variant (temperature, top-k, ...) when the grid has some

Gains are improvements: baseline − run for losses, run − baseline for accuracies.
Error bars are the sample std over seeds (absent with one seed).
"""

import os

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402


def label(metric):
    if metric == "val":
        return "in-domain val loss"
    if metric == "ood_avg":
        return "OOD loss (mean of splits)"
    if metric.startswith("ood_"):
        return f"OOD {metric[4:]} loss"
    if metric == "mc_avg":
        return "downstream acc_norm (mean)"
    if metric == "paper_avg":
        return "downstream, the paper's 8-task average"
    return metric


def kd_groups(groups, student=None):
    return [g for g in groups if g["teacher"] and not g["variant"] and (student is None or g["student"] == student)]


def errorbar(ax, xs, gs, key, **kw):
    ys = [g.get(key) for g in gs]
    keep = [i for i, y in enumerate(ys) if y is not None]
    if not keep:
        return
    err = [gs[i].get(key + "_std", 0.0) if gs[i].get(key + "_n", 1) > 1 else 0.0 for i in keep]
    ax.errorbar([xs[i] for i in keep], [ys[i] for i in keep], yerr=err if any(err) else None, marker="o",
                capsize=3, **kw)


def panels(n, cols=3):
    """n axes in rows of at most `cols`; unused ones hidden."""
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, min(n, cols), figsize=(4.2 * min(n, cols), 3.4 * rows), squeeze=False)
    axes = [ax for row in axes for ax in row]
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def plot_alpha(groups, student, metrics, path):
    base = next((g for g in groups if g["student"] == student and not g["teacher"] and not g["variant"]), None)
    kd = kd_groups(groups, student)
    if not kd:
        return None
    fig, axes = panels(len(metrics))
    for ax, metric in zip(axes, metrics):
        for teacher in sorted({g["teacher"] for g in kd}):
            gs = sorted((g for g in kd if g["teacher"] == teacher), key=lambda g: g["alpha"])
            name = teacher + (f" (val {gs[0]['teacher_val']:.2f})" if gs[0].get("teacher_val") else "")
            line = ([base] if base else []) + gs  # every teacher's line starts at the no-KD baseline, α = 0
            errorbar(ax, [g["alpha"] for g in line], line, metric, label=name)
        if base and metric in base:
            ax.axhline(base[metric], color="gray", ls="--", lw=1, label="no KD")
        ax.set_xlabel("α (weight of KD)")
        ax.set_title(label(metric), fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"student {student}: metric against α", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.path.basename(path)


def plot_gain_vs(groups, x_key, other_key, metrics, path, xlabel):
    """Gain against one property of the teacher (size or tokens), one colour per α. Teachers that share the
    other property (and student) are joined by a line, as in the paper's curves; every point is named."""
    kd = [g for g in kd_groups(groups) if x_key in g]
    if len({g[x_key] for g in kd}) < 2:
        return None  # one teacher: nothing to draw a line through
    alphas = sorted({g["alpha"] for g in kd})
    colors = {a: f"C{i % 10}" for i, a in enumerate(alphas)}
    many_students = len({g["student"] for g in kd}) > 1
    fig, axes = panels(len(metrics))
    for ax, metric in zip(axes, metrics):
        key = f"gain_{metric}"
        lines = {(g["student"], g["alpha"], g.get(other_key)) for g in kd if key in g}
        for student, alpha, other in sorted(lines, key=str):
            gs = sorted((g for g in kd if (g["student"], g["alpha"], g.get(other_key)) == (student, alpha, other)
                         and key in g), key=lambda g: g[x_key])
            errorbar(ax, [g[x_key] for g in gs], gs, key, color=colors[alpha])
            for g in gs:
                name = g["teacher"] + (f"→{student}" if many_students else "")
                ax.annotate(name, (g[x_key], g[key]), xytext=(3, 3), textcoords="offset points", fontsize=6)
        ax.axhline(0, color="gray", ls="--", lw=1)
        ax.set_xscale("log")
        xs = sorted({g[x_key] for g in kd})  # ticks at the teachers themselves, in words
        ax.set_xticks(xs, [human(x) for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_title(f"gain: {label(metric)}", fontsize=10)
    axes[0].legend(handles=[Line2D([], [], color=colors[a], marker="o", label=f"α={a:g}") for a in alphas], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.path.basename(path)


def plot_id_vs_ood(groups, losses, accs, path):
    kd = sorted(kd_groups(groups), key=lambda g: (g["student"], g["teacher"], g["alpha"]))
    if not kd or not any(f"gain_{m}" in g for g in kd for m in losses):
        return None
    many_students = len({g["student"] for g in kd}) > 1
    names = [f"{g['teacher']}\nα={g['alpha']:g}" + (f"\n{g['student']}" if many_students else "") for g in kd]
    panels = [losses] + [[m] for m in averages(accs)]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6, 0.9 * len(kd)) + 3 * (len(panels) - 1), 4),
                             squeeze=False, gridspec_kw={"width_ratios": [3] + [1] * (len(panels) - 1)})
    for ax, metrics in zip(axes[0], panels):
        width = 0.8 / len(metrics)
        for j, metric in enumerate(metrics):
            xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(kd))]
            ys = [g.get(f"gain_{metric}", 0.0) for g in kd]
            err = [g.get(f"gain_{metric}_std", 0.0) if g.get(f"gain_{metric}_n", 1) > 1 else 0.0 for g in kd]
            ax.bar(xs, ys, width, yerr=err if any(err) else None, capsize=2, label=label(metric))
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(kd)))
        narrow = metrics is not losses  # the downstream panel: one bar per run, names turned to fit
        ax.set_xticklabels([n.replace("\n", " ") for n in names] if narrow else names, fontsize=7,
                           rotation=90 if narrow else 0)
        ax.set_ylabel("gain over no-KD (nats)" if metrics is losses else "gain (accuracy)")
        ax.legend(fontsize=7)
    fig.suptitle("in-domain gain beside OOD and downstream gain (positive = better)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.path.basename(path)


def plot_variants(groups, metric, path):
    vs = [g for g in groups if g["teacher"] and g["variant"]]
    if not vs:
        return None
    plain = kd_groups(groups)
    keys = sorted({(g["teacher"], g["alpha"]) for g in vs})
    variants = [""] + sorted({g["variant"] for g in vs})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(variants) * len(keys) / 2), 4))
    width = 0.8 / len(keys)
    for j, (teacher, alpha) in enumerate(keys):
        gs = {g["variant"]: g for g in plain + vs if g["teacher"] == teacher and g["alpha"] == alpha}
        xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(variants))]
        ax.bar(xs, [gs[v].get(f"gain_{metric}", 0.0) if v in gs else 0.0 for v in variants], width,
               label=f"{teacher}, α={alpha:g}")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels([v or "default" for v in variants], fontsize=8)
    ax.set_ylabel(f"gain: {label(metric)}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.path.basename(path)


def human(n):
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}K"


def averages(accs):
    """The downstream average to draw: the paper's 8-task one where eval.py gave it, else the mean acc_norm."""
    return ["paper_avg"] if "paper_avg" in accs else ["mc_avg"] if "mc_avg" in accs else []


def plot_all(rows, groups, losses, accs, out_dir):
    oods = [m for m in losses if m.startswith("ood_")]
    gain_metrics = (["val"] * ("val" in losses) + (["ood_avg"] if "ood_avg" in oods else oods[:1])
                    + averages(accs))
    figures = [plot_alpha(groups, s, losses + averages(accs), os.path.join(out_dir, f"alpha_{s}.png"))
               for s in sorted({g["student"] for g in groups})]
    figures += [
        plot_gain_vs(groups, "teacher_params", "teacher_tokens", gain_metrics,
                     os.path.join(out_dir, "gain_vs_teacher_size.png"), "teacher parameters (non-embedding)"),
        plot_gain_vs(groups, "teacher_tokens", "teacher_params", gain_metrics,
                     os.path.join(out_dir, "gain_vs_teacher_tokens.png"), "teacher training tokens"),
        plot_id_vs_ood(groups, losses, accs, os.path.join(out_dir, "gain_id_vs_ood.png")),
        plot_variants(groups, "val", os.path.join(out_dir, "variants.png")),
    ]
    return [f for f in figures if f]
