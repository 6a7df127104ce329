"""analyze.py on tiny random GPTs saved as a grid's checkpoints: every per-token quantity against a direct
float64 computation on the full logits written here, each model's mean loss against eval.py's evaluate_loss on
the same windows, the buckets and the bootstrap on known numbers, the report end to end (one process and two
torchrun ranks giving the same tokens), and a grid's runs paired by seed."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import analyze
from checkpoint import model_from_checkpoint, save_checkpoint
from data.tokenfile import load_tokens, write_tokens
from eval import evaluate_loss
from model import GPT, config_from_preset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, BLOCK = 257, 32
GRID = """
name = "g"
out_root = {out_root!r}
common = dict(data_dir={data_dir!r}, tokenizer="bytes", block_size={block}, device="cpu")
teachers = {{"t": dict(config="configs/tiny_teacher.py", model="tiny-64")}}
students = {{"s": dict(config="configs/tiny_student.py", model="tiny-64")}}
alphas = [0.3]
seeds = [43, 44]
baselines = {{"": {{}}, "ls0.1": dict(label_smoothing=0.1)}}
"""


def random_gpt(seed, scale):
    """A tiny GPT with weights large enough for peaked, varied distributions (an initialised one is near uniform)."""
    torch.manual_seed(seed)
    model = GPT(config_from_preset("tiny-64", 264, BLOCK))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0, scale)
    return model


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A data dir and the grid layout sweep.py would leave: teacher, 2 baselines, 2 KD students, 2 controls."""
    tmp = tmp_path_factory.mktemp("analyze")
    data = tmp / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    zipf = np.minimum(rng.zipf(1.3, 60_000) - 1, V - 1)            # skewed, like text: frequency buckets differ
    write_tokens(data / "train.bin", zipf, V, "bytes")
    write_tokens(data / "val.bin", np.minimum(rng.zipf(1.3, 7 * (BLOCK + 1) + 5) - 1, V - 1), V, "bytes")
    write_tokens(data / "ood_other.bin", rng.integers(0, V, 5 * (BLOCK + 1)), V, "bytes")
    root = tmp / "out" / "g"
    runs = {"teacher_t": (42, 0.0, "", 0.0, 0.5), "s_noKD_s43": (43, 0.0, "", 0.0, 0.3),
            "s_noKD_s44": (44, 0.0, "", 0.0, 0.3), "s_t_a0.3_s43": (143, 0.3, "t", 0.0, 0.3),
            "s_t_a0.3_s44": (144, 0.3, "t", 0.0, 0.3), "s_noKD_ls0.1_s43": (243, 0.0, "", 0.1, 0.2),
            "s_noKD_ls0.1_s44": (244, 0.0, "", 0.1, 0.2)}
    for name, (init, alpha, teacher, ls, scale) in runs.items():
        model = random_gpt(init, scale)
        config = dict(seed=init % 100 if init > 100 else init, alpha=alpha, label_smoothing=ls, data_dir=str(data),
                      teacher_ckpt=str(root / "teacher_t" / "ckpt.pt") if teacher else "")
        save_checkpoint(str(root / name / "ckpt.pt"), dict(model=model.state_dict(), model_config=model.config.__dict__,
                                                           tokenizer="bytes", n_vocab=V, config=config, step=0,
                                                           tokens_seen=0, optimizer=None))
    grid_file = tmp / "grid.py"
    grid_file.write_text(GRID.format(out_root=str(tmp / "out"), data_dir=str(data), block=BLOCK))
    return dict(tmp=tmp, data=data, root=root, grid=grid_file, names=list(runs))


def load(grid, dtype=None):
    return {n: model_from_checkpoint(str(grid["root"] / n / "ckpt.pt"), dtype=dtype).eval() for n in grid["names"]}


def reference(models, pairs, path, batch_size, dtype=torch.float64):
    """Every quantity from the [tokens, V] logits of the whole file's windows at once, in float64."""
    tok = np.asarray(load_tokens(path), dtype=np.int64)
    n = len(tok) // (BLOCK + 1)
    win = torch.from_numpy(tok[:n * (BLOCK + 1)].reshape(n, BLOCK + 1))
    x, y = win[:, :-1], win[:, 1:].reshape(-1)
    out, p, logits = {}, {}, {}
    with torch.no_grad():
        for name, m in models.items():
            s = (m(x).to(dtype) @ m.lm_head.weight[:V].to(dtype).T).reshape(-1, V).double()
            e = torch.exp(s - s.max(-1, keepdim=True).values)
            p[name], logits[name] = e / e.sum(-1, keepdim=True), s
            pm, py = p[name], p[name][torch.arange(len(y)), y]
            out.update({f"{name}/loss": -torch.log(py), f"{name}/entropy": -(pm * torch.log(pm)).sum(-1),
                        f"{name}/max_prob": pm.max(-1).values, f"{name}/rank": (pm > py[:, None]).sum(-1) + 1,
                        f"{name}/eff_vocab": (pm > 1 / V).sum(-1), f"{name}/top1": pm.argmax(-1)})
    for a, b in pairs:
        pa, pb = p[a], p[b]
        m = (pa + pb) / 2
        t5a, t5b = logits[a].topk(5).indices.tolist(), logits[b].topk(5).indices.tolist()
        out.update({f"{a}|{b}/kl_ab": (pa * torch.log(pa / pb)).sum(-1), f"{a}|{b}/kl_ba": (pb * torch.log(pb / pa)).sum(-1),
                    f"{a}|{b}/js": ((pa * torch.log(pa / m)).sum(-1) + (pb * torch.log(pb / m)).sum(-1)) / 2,
                    f"{a}|{b}/top1_agree": (pa.argmax(-1) == pb.argmax(-1)).double(),
                    f"{a}|{b}/top5_overlap": torch.tensor([len(set(i) & set(j)) / 5 for i, j in zip(t5a, t5b)]),
                    f"{a}|{b}/prob_overlap": torch.minimum(pa, pb).sum(-1)})
    out = {k: v.numpy() for k, v in out.items()}
    out.update(window=np.repeat(np.arange(n), BLOCK), position=np.tile(np.arange(BLOCK), n), target=y.numpy())
    return out


def test_every_per_token_quantity_against_full_logits_in_float64(grid):
    setup = analyze.setup_from_grid(str(grid["grid"]))
    pairs = analyze.pairs_of(setup)
    assert {("s_t_a0.3_s43", "teacher_t"), ("s_t_a0.3_s43", "s_noKD_s43"), ("teacher_t", "s_noKD_s44"),
            ("s_noKD_ls0.1_s44", "teacher_t"), ("s_noKD_ls0.1_s44", "s_noKD_s44")} <= set(pairs)
    path = str(grid["data"] / "val.bin")
    # batch of 3 windows (7 in the file: the last batch is short), 40 rows a chunk (not a divisor of 3·32)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-4)):
        models = load(grid, dtype)
        got = analyze.score_split(models, pairs, path, n_vocab=V, block_size=BLOCK, batch_size=3, rows_per_chunk=40)
        want = reference(models, pairs, path, 3, dtype)
        assert set(got) == set(want)
        for key, w in want.items():
            g = got[key]
            assert g.shape == w.shape, key
            if key.split("/")[-1] in ("rank", "eff_vocab", "top1", "top5_overlap", "top1_agree") or "/" not in key:
                # integers: exact in float64; in float32 a near-tie may flip, in a few tokens at most
                wrong = (g != w).mean()
                assert wrong == 0 if dtype == torch.float64 else wrong < 0.01, (key, wrong)
            else:
                np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=key)
    # the quantities are not degenerate: the test would notice ranks, entropies or KLs that were all alike
    assert len(np.unique(got["teacher_t/rank"])) > 10 and got["teacher_t/entropy"].std() > 0.3
    assert got["s_t_a0.3_s43|teacher_t/kl_ab"].min() > 0 and 0 < got["teacher_t/eff_vocab"].mean() < V


def test_mean_loss_of_each_model_is_eval_pys_on_the_same_windows(grid):
    models = load(grid)
    for split, max_batches in (("val.bin", None), ("ood_other.bin", 1)):
        path = str(grid["data"] / split)
        tok = analyze.score_split(models, [], path, n_vocab=V, block_size=BLOCK, batch_size=2, max_batches=max_batches)
        for name, m in models.items():
            want = evaluate_loss(m, path, batch_size=2, block_size=BLOCK, n_vocab=V, max_batches=max_batches)
            assert len(tok[f"{name}/loss"]) == want["tokens"]
            assert tok[f"{name}/loss"].astype(np.float64).mean() == pytest.approx(want["loss"], rel=1e-6)


def test_buckets_and_bootstrap_on_known_numbers():
    # frequency: equal mass, most frequent first, unseen ids last
    counts = np.array([50, 0, 25, 10, 10, 5, 0, 0])
    b = analyze.frequency_buckets(counts, 2)
    assert b[0] == 0 and list(b[[2, 3, 4, 5, 1, 6, 7]]) == [1] * 7
    assert list(analyze.frequency_buckets(np.array([1, 1, 1, 1]), 4)) == [0, 1, 2, 3]
    # the authors' quantile bins: equal counts of distinct values
    x = np.random.default_rng(1).normal(size=1000)
    assert np.bincount(np.digitize(x, analyze.quantile_edges(x, 5)[1:-1])).tolist() == [200] * 5
    # bucket means: per seed, then averaged over seeds; each window once in every draw -> the interval is the point
    window = np.array([0, 0, 1, 1, 2, 2])
    bucket = np.array([0, 1, 0, 1, 0, 0])
    v1, v2 = np.array([1., 2, 3, 4, 5, 6]), np.array([0., 0, 1, 0, 1, 1])
    est, lo, hi, per_seed = analyze.bucket_stats([v1, v2], [bucket, bucket], window, 2, np.ones((3, 3)))
    assert per_seed.tolist() == [[(1 + 3 + 5 + 6) / 4, 3.0], [0.75, 0.0]]
    assert est.tolist() == pytest.approx([(3.75 + 0.75) / 2, 1.5])
    # a draw of window 1 only (three times) gives that window's means; the percentiles bracket the draws
    draws = np.array([[0., 3, 0], [1, 1, 1]])
    _, lo, hi, _ = analyze.bucket_stats([v1], [bucket], window, 2, draws)
    assert lo.tolist() == pytest.approx([3.0 + 0.025 * 0.75, 3.0 + 0.025]) and hi.tolist() == pytest.approx([3.75 - 0.025 * 0.75, 4.0 - 0.025])
    # seeds are resampled too: with two seeds far apart the interval covers both
    _, lo, hi, _ = analyze.bucket_stats([v1, v1 + 10], [bucket, bucket], window, 2, np.ones((200, 3)))
    assert lo[0] == pytest.approx(3.75) and hi[0] == pytest.approx(13.75)


@pytest.mark.slow
def test_report_end_to_end_and_torchrun_gives_the_same_tokens(grid):
    out1, out2 = grid["tmp"] / "a1", grid["tmp"] / "a2"
    args = ["--grid", str(grid["grid"]), "--batch_size", "2", "--n_boot", "50", "--save_tokens"]
    res = analyze.main(args + ["--out", str(out1)])
    files = sorted(os.listdir(out1))
    assert {"analysis.json", "analysis.md", "gain_by_split.png", "gain_by_teacher_entropy.png",
            "gain_by_frequency.png", "tokens_val.npz"} <= set(files)
    report = json.load(open(out1 / "analysis.json"))
    models = load(grid)
    losses = {}   # split -> model -> evaluate_loss's mean loss, the independent reference for the report
    for split in ("val", "ood_other"):
        path = str(grid["data"] / f"{split}.bin")
        ev = losses[split] = {n: evaluate_loss(m, path, batch_size=2, block_size=BLOCK, n_vocab=V)["loss"]
                              for n, m in models.items()}
        arm = report["splits"][split]["arms"]["t α=0.3"]
        whole = arm["all"][0]
        gains = [ev[f"s_noKD_s{s}"] - ev[f"s_t_a0.3_s{s}"] for s in (43, 44)]
        assert whole["gain"] == pytest.approx(np.mean(gains), abs=2e-6)
        assert [whole["per_seed"][str(s)] for s in (43, 44)] == pytest.approx(gains, abs=2e-6)
        assert whole["ci"][0] <= whole["gain"] <= whole["ci"][1]
        ls = whole["controls"]["ls0.1"]
        ls_gains = [ev[f"s_noKD_s{s}"] - ev[f"s_noKD_ls0.1_s{s}"] for s in (43, 44)]
        assert ls["gain"] == pytest.approx(np.mean(ls_gains), abs=2e-6)
        assert ls["teacher_beyond"] == pytest.approx(np.mean(gains) - np.mean(ls_gains), abs=2e-6)
        # every breakdown partitions the split's tokens, and the token-weighted bucket gains give back the whole
        for kind in analyze.KINDS:
            rows = arm[kind]
            assert sum(r["tokens"] for r in rows) == report["splits"][split]["tokens"], kind
            if kind not in ("baseline_entropy",):   # (its buckets differ per seed)
                total = sum(r["tokens"] * r["gain"] for r in rows if r["gain"] is not None)
                assert total / whole["tokens"] == pytest.approx(whole["gain"], abs=2e-6), kind
        freq = arm["frequency"]
        assert sum(r["distinct_ids"] for r in freq) == V and sum(r["train_mass"] for r in freq) == pytest.approx(1)
        assert report["splits"][split]["models"]["teacher_t"]["loss"] == pytest.approx(ev["teacher_t"], rel=1e-6)
    md = open(out1 / "analysis.md").read()
    assert "t α=0.3" in md and "ls0.1 (no teacher)" in md and "5748b58b" in md
    # the split table's cells sit under their own headings: each row's gains against evaluate_loss's numbers
    table = md.split("## Gain by split (all tokens)")[1].split("\n## ")[0]
    head, _, *rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.strip().splitlines()
                      if line.startswith("|")]
    by_split = {row[0]: dict(zip(head, row)) for row in rows}
    assert set(by_split) == {"val", "ood_other"} and all(r["bucket"] == "all tokens" for r in by_split.values())
    for split, cells in by_split.items():
        ev = losses[split]
        kd = np.mean([ev[f"s_noKD_s{s}"] - ev[f"s_t_a0.3_s{s}"] for s in (43, 44)])
        ls = np.mean([ev[f"s_noKD_s{s}"] - ev[f"s_noKD_ls0.1_s{s}"] for s in (43, 44)])
        for heading, want in (("t α=0.3", kd), ("ls0.1 (no teacher)", ls), ("t α=0.3 beyond ls0.1", kd - ls)):
            got = float(cells[heading].strip("*").split(" [")[0])
            assert abs(got - want) <= 0.0005 + 2e-6, (split, heading, cells[heading], want)   # printed to 3 decimals
    os.remove(out1 / "analysis.md")
    analyze.main(["--replot", str(out1)])          # tables and figures from the JSON alone: the same tables
    assert open(out1 / "analysis.md").read() == md
    # two ranks, each a share of the windows, gathered: the same tokens as one process
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           os.path.join(ROOT, "analyze.py"), *args, "--out", str(out2), "--splits", "val", "--no_figures"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    one, two = np.load(out1 / "tokens_val.npz"), np.load(out2 / "tokens_val.npz")
    assert set(one.files) == set(two.files)
    for k in one.files:
        np.testing.assert_array_equal(one[k], two[k], err_msg=k)
    assert json.load(open(out2 / "analysis.json"))["splits"]["val"]["arms"] == report["splits"]["val"]["arms"]
    assert res["seeds"] == [43, 44]


def test_grid_runs_are_paired_by_seed(grid):
    setup = analyze.setup_from_grid(str(grid["grid"]))
    assert setup["teachers"] == {"t": "teacher_t"}
    (arm,) = setup["arms"]
    assert arm["label"] == "t α=0.3" and arm["alpha"] == 0.3
    assert arm["students"] == {43: "s_t_a0.3_s43", 44: "s_t_a0.3_s44"}
    assert arm["baselines"] == {43: "s_noKD_s43", 44: "s_noKD_s44"}
    assert setup["controls"] == {"ls0.1": {43: "s_noKD_ls0.1_s43", 44: "s_noKD_ls0.1_s44"}}
    with pytest.raises(ValueError, match="no --baselines checkpoint has its seed 44"):
        ck = lambda n: str(grid["root"] / n / "ckpt.pt")   # noqa: E731
        analyze.setup_from_paths([ck("teacher_t")], [ck("s_t_a0.3_s44")], [ck("s_noKD_s43")], [])
