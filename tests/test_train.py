"""train.py end to end on tiny byte-level models: equivalences that must hold exactly
(teacher at α=0, DDP vs one process, kill-and-resume) and clear errors for bad input."""

import glob
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint, save_checkpoint
from data.tokenfile import load_tokens, write_tokens

pytestmark = pytest.mark.slow   # subprocess, torchrun or compile runs: pytest -m "not slow" leaves them out

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model=tiny-64", "--block_size=32", "--batch_size=4", "--batch_tokens=256", "--eval_iters=2",
        "--learning_rate=3e-3", "--device=cpu", "--log_interval=5"]


def train(*args, expect_ok=True, timeout=300, env_extra=None, torchrun=0):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    prefix = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
              if torchrun else [sys.executable])
    proc = subprocess.run(prefix + [os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def curve(out_dir):
    """step -> training record; the last record for a step wins (a resumed run rewrites steps after its checkpoint)."""
    recs = {}
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r:
                recs[r["step"]] = r
    return recs



# ---- comparing two runs -------------------------------------------------------------------------------------
# Two runs with the same math summed in another order (fused vs reference loss, 2 ranks vs 1, other numbers of
# micro-steps, compiled vs eager) agree only to rounding, so each comparison needs a bound that holds on every
# machine (another CPU, BLAS, thread count or SIMD width changes every summation order):
#
# - Rounding of one step, fp32 (u = 2^-24 ≈ 6e-8). A gradient element of these tiny models is a chain of
#   ~20 reductions of length ≤ 64-256 (2 blocks) plus the softmax over 257 and the sum over 256 tokens: the
#   worst-case linear bound on its error is ≈ (20·64 + 257 + 256)·u ≈ 1.1e-4 of the magnitudes it sums.
#   Norm-wise against the gradient itself, allow the cancellation of a mean over 256 tokens of mixed
#   sign (a factor ≈ √256 = 16): 1.7e-3.
# - Growth over steps. With AdamW none of this holds: m/(√v + ε) makes a parameter whose gradient is near zero
#   move by ~lr whatever its sign, so a rounding-level gradient difference becomes a step difference of
#   order lr (seen: 2e-5 after 8 steps on another machine). So these runs use plain SGD (--optim=sgd), where
#   the weight difference after k steps is Σ lr·δg_t amplified by at most (1 + lr·λ_max)^k; with lr = 0.05,
#   k ≤ 8 and the curvature of a tiny model at init (λ_max of a few) that factor is below 4.
# Hence the weight updates agree to UPDATE_RTOL = 1.7e-3 · 4 ≈ 7e-3 → 1e-2 (per tensor, relative to the norm
# of that tensor's update). A real bug (a mis-scaled micro-step, a wrong α or T², the teacher wired to the
# wrong model) changes updates by tens of percent.
# Losses at the same weights are sums of positive terms (no cancellation): 1.1e-4 relative, stated as 2e-4;
# after step 1 they also move with the weights, by at most UPDATE_RTOL of how far the loss itself has moved.
UPDATE_RTOL = 1e-2
LOSS_RTOL = 2e-4
SGD = ["--optim=sgd", "--learning_rate=0.05", "--warmup_frac=0.0"]


def initial_student(out_dir):
    """A run's freshly initialised student: train.py seeds torch with `seed` just before building it."""
    from model import GPT, GPTConfig
    cfg = json.load(open(os.path.join(out_dir, "config.json")))
    torch.manual_seed(cfg["config"]["seed"])
    return GPT(GPTConfig(**cfg["model_config"])).state_dict()


def assert_same_updates(init, path_a, path_b, rtol=UPDATE_RTOL):
    """Per tensor: ‖w_a − w_b‖ ≤ rtol·‖w_a − w_init‖; a failure names the worst tensor and its ratio."""
    a, b = load_checkpoint(str(path_a))["model"], load_checkpoint(str(path_b))["model"]
    assert sorted(a) == sorted(b)
    ratios = {}
    for k in a:
        update = (a[k].double() - init[k].double()).norm().item()
        assert update > 0, f"{k} never moved: the comparison would be empty"
        ratios[k] = (a[k].double() - b[k].double()).norm().item() / update
    worst = max(ratios, key=ratios.get)
    assert ratios[worst] <= rtol, f"weights differ beyond rounding: {worst} by {ratios[worst]:.2e} of its update (bound {rtol})"


def assert_same_curves(a, b, keys=("loss", "ce", "kd")):
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    first = min(a)
    for step in a:
        for key in keys:
            moved = abs(a[step][key] - a[first][key])
            bound = LOSS_RTOL * abs(a[step][key]) + UPDATE_RTOL * moved + 1e-7
            diff = abs(a[step][key] - b[step][key])
            assert diff <= bound, f"step {step} {key}: {a[step][key]} vs {b[step][key]} (differ by {diff:.2e}, bound {bound:.2e})"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Byte-level token files made from Python's own docs text: in-domain split plus one OOD split."""
    d = tmp_path_factory.mktemp("data")
    import pydoc_data.topics as topics
    text = "\n".join(topics.topics.values()).encode("utf-8")
    toks = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
    write_tokens(d / "train.bin", toks[:120_000], 257, "bytes")
    write_tokens(d / "val.bin", toks[120_000:130_000], 257, "bytes")
    news = np.frombuffer(("The markets rose today as investors weighed the news. " * 200).encode(), dtype=np.uint8)
    write_tokens(d / "ood_news.bin", news.astype(np.int64), 257, "bytes")
    return str(d)


@pytest.fixture(scope="module")
def teacher_ckpt(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=10", "--eval_interval=1000", "--seed=42")
    return str(out / "ckpt.pt")


def test_alpha_zero_with_teacher_equals_no_teacher(data_dir, teacher_ckpt, tmp_path):
    common = [*TINY, f"--data_dir={data_dir}", "--max_iters=12", "--eval_interval=1000", "--loss_impl=reference"]
    train(*common, f"--out_dir={tmp_path / 'plain'}")
    train(*common, f"--out_dir={tmp_path / 'teacher'}", f"--teacher_ckpt={teacher_ckpt}", "--teacher_model=tiny-64",
          "--alpha=0.0")
    plain, with_teacher = curve(tmp_path / "plain"), curve(tmp_path / "teacher")
    assert len(plain) == 12
    for step in plain:
        assert plain[step]["loss"] == with_teacher[step]["loss"], step
    assert with_teacher[12]["kd"] > 0  # the teacher really ran: its KD term is logged
    a = load_checkpoint(str(tmp_path / "plain" / "ckpt.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "teacher" / "ckpt.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_two_ranks_with_accumulation_equal_one_process(data_dir, teacher_ckpt, tmp_path):
    # one global batch of 8 sequences × 32 a step, cut three ways: 1 process × 4 micro-steps of 2,
    # 1 process × 1 micro-step of 8, and 2 ranks × 1 micro-step of 4 (the loader gives every split the same windows)
    common = [*TINY, *SGD, f"--data_dir={data_dir}", "--max_iters=6", "--eval_interval=3", "--batch_tokens=256",
              f"--teacher_ckpt={teacher_ckpt}", "--alpha=0.5"]
    train(*common, "--batch_size=2", f"--out_dir={tmp_path / 'accum'}")
    train(*common, "--batch_size=8", f"--out_dir={tmp_path / 'one'}")
    train(*common, "--batch_size=4", f"--out_dir={tmp_path / 'two'}", torchrun=2)
    for name, accum, world in (("accum", 4, 1), ("one", 1, 1), ("two", 1, 2)):
        cfg = json.load(open(tmp_path / name / "config.json"))
        assert (cfg["grad_accum_steps"], cfg["world_size"]) == (accum, world), name
    init = initial_student(tmp_path / "one")
    for other in ("accum", "two"):
        assert_same_curves(curve(tmp_path / "one"), curve(tmp_path / other))
        assert_same_updates(init, tmp_path / "one" / "ckpt.pt", tmp_path / other / "ckpt.pt")


def run_interrupted(common, out_dir, signal_at, torchrun=0):
    """Start a run that sends itself `signal_at` ("SIGKILL@23": after step 23) on every rank; return its process."""
    return train(*common, f"--out_dir={out_dir}", expect_ok=False, torchrun=torchrun,
                 env_extra={"NANOKD_TEST_SIGNAL": signal_at})


def assert_resumed_exactly(straight, resumed, resumed_from, proc):
    """The resumed run said where it resumed, and its curve and weights are bit-identical to the straight run's:
    both ran on this machine with the same thread count, so every sum was done in the same order."""
    assert f"resumed {resumed / 'ckpt.pt'} at step {resumed_from} " in proc.stdout, proc.stdout[-2000:]
    a, b = curve(straight), curve(resumed)
    assert sorted(a) == sorted(b)
    for step in a:
        assert a[step]["loss"] == b[step]["loss"], (step, a[step], b[step])
    wa = load_checkpoint(str(straight / "ckpt.pt"))["model"]
    wb = load_checkpoint(str(resumed / "ckpt.pt"))["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]


def test_sigkill_and_resume_reproduces_uninterrupted_run(data_dir, tmp_path):
    # a training file of 8 steps an epoch (64 windows of 33): the step-20 checkpoint is in epoch 2, so an exact
    # resume needs the loader's epoch as well as its position
    short = tmp_path / "short_epochs"
    short.mkdir()
    for name, n in (("train.bin", 64 * 33 + 5), ("val.bin", None)):
        write_tokens(short / name, load_tokens(os.path.join(data_dir, name))[:n], 257, "bytes")
    common = [*TINY, f"--data_dir={short}", "--max_iters=30", "--eval_interval=10"]
    train(*common, f"--out_dir={tmp_path / 'straight'}")
    killed = tmp_path / "killed"
    proc = run_interrupted(common, killed, "SIGKILL@23")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert max(curve(killed)) == 23  # killed mid-run, three steps past its step-20 checkpoint
    ck = load_checkpoint(str(killed / "ckpt.pt"))
    assert ck["step"] == 20 and ck["data_state"]["epoch"] == 2
    (killed / ".ckpt-killed.tmp").write_bytes(b"half a checkpoint, as a kill during a write leaves")
    for changed in ("--seed=44", "--max_iters=40"):   # what the data position and schedule mean: refused
        proc = train(*common, f"--out_dir={killed}", "--resume=True", changed, expect_ok=False)
        key, value = changed[2:].split("=")
        assert proc.returncode == 1 and f"--resume: {key}={value} but the checkpoint's run has {key}=" in proc.stderr
    proc = train(*common, f"--out_dir={killed}", "--resume=True")
    assert_resumed_exactly(tmp_path / "straight", killed, 20, proc)
    assert not list(killed.glob(".ckpt-*.tmp"))
    lines = [json.loads(line) for line in open(killed / "log.jsonl")]
    assert {"step": 20, "resumed": True} in lines
    assert len(lines) == len(open(tmp_path / "straight" / "log.jsonl").readlines()) + 1   # no step twice
    # the run is finished: another one into the same out_dir is refused, saying how to ask for it
    proc = train(*common, f"--out_dir={killed}", expect_ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "already holds a run (final.json, ckpt.pt); continue it with --resume=True, or replace it with " \
           "--overwrite=True" in proc.stderr, proc.stderr


@pytest.mark.parametrize("world,signame", [(1, "SIGTERM"), (2, "SIGTERM"), (1, "SIGINT")])
def test_sigterm_checkpoints_exits_143_and_resumes_exactly(data_dir, tmp_path, world, signame):
    # a scheduler's preemption or a first Ctrl-C: the signal lands during step 14 (sent at the end of step 13);
    # the run finishes that step, checkpoints at 14 (between the step-10 and step-20 evals) and exits 143
    common = [*TINY, f"--data_dir={data_dir}", "--max_iters=24", "--eval_interval=10", f"--batch_size={4 // world}"]
    train(*common, f"--out_dir={tmp_path / 'straight'}", torchrun=world if world > 1 else 0)
    stopped = tmp_path / "stopped"
    proc = run_interrupted(common, stopped, f"{signame}@13", torchrun=world if world > 1 else 0)
    assert proc.returncode in ((143,) if world == 1 else (1, 143)), (proc.returncode, proc.stderr[-2000:])
    assert "stopped by signal at step 14" in proc.stdout, proc.stdout[-2000:]
    assert max(curve(stopped)) == 14
    assert load_checkpoint(str(stopped / "ckpt.pt"))["step"] == 14
    proc = train(*common, f"--out_dir={stopped}", "--resume=True", torchrun=world if world > 1 else 0)
    assert_resumed_exactly(tmp_path / "straight", stopped, 14, proc)


def test_a_second_ctrl_c_aborts_at_once(data_dir, tmp_path):
    common = [*TINY, f"--data_dir={data_dir}", "--max_iters=24", "--eval_interval=10"]
    proc = run_interrupted(common, tmp_path, "SIGINT,SIGINT@13")
    assert proc.returncode == -signal.SIGINT, (proc.returncode, proc.stderr[-2000:])
    assert max(curve(tmp_path)) == 13 and "stopped by signal" not in proc.stdout
    assert load_checkpoint(str(tmp_path / "ckpt.pt"))["step"] == 10   # nothing written after the step-10 one


def test_crash_during_checkpoint_write_keeps_previous(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, {"step": 1, "model": {"w": torch.ones(3)}})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("simulated crash halfway through the write")

    with pytest.raises(RuntimeError, match="simulated crash"):
        save_checkpoint(path, {"step": 2, "model": {"w": torch.zeros(1000)}, "boom": Unpicklable()})
    ck = load_checkpoint(path)
    assert ck["step"] == 1 and torch.equal(ck["model"]["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temp file left behind


def test_a_diverged_run_keeps_its_last_good_checkpoint(data_dir, tmp_path):
    # An absurd learning rate blows the weights up within a few steps. The checkpoint left on disk must be one
    # whose weights give a finite loss and gradient on the very batch the run would train on next (recomputed
    # here in plain PyTorch from the file), and the error must name its step.
    proc = train(*TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--max_iters=50", "--eval_interval=1",
                 "--learning_rate=1e6", "--warmup_frac=0.0", "--grad_clip=1e30", expect_ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "is nan" in proc.stderr or "is inf" in proc.stderr, proc.stderr[-2000:]
    named = re.search(r"The last good checkpoint is (\S+), from step (\d+)\.$", proc.stderr.strip())
    assert named and named[1] == str(tmp_path / "ckpt.pt"), proc.stderr[-2000:]
    ck = load_checkpoint(str(tmp_path / "ckpt.pt"))
    assert ck["step"] == int(named[2]) >= 1
    from data.loader import open_training_data
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(**ck["model_config"]))
    model.load_state_dict(ck["model"])
    loader, n_vocab, _ = open_training_data(data_dir, 4, 32, seed=43, tokenizer="bytes")
    loader.load_state_dict(ck["data_state"])
    for _ in range(256 // (4 * 32)):   # the step's micro-batches
        x, y = loader.next_batch()
        logits = model.lm_head(model(x))[..., :n_vocab].double()
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        (loss / 2).backward()
        assert math.isfinite(loss.item()), loss
    grad_norm = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).double().norm()
    assert math.isfinite(grad_norm.item()), grad_norm


@pytest.mark.parametrize("args,message", [
    (["--no_such_key=1"], "unknown config key 'no_such_key'; valid keys are: "),
    (["--alpha=fast"], "alpha must be float"),
    (["--teacher_ckpt=/nonexistent/ckpt.pt", "--alpha=0.5"], "checkpoint not found: /nonexistent/ckpt.pt"),
    (["--alpha=0.5"], "alpha=0.5 weights a KD term but neither teacher_ckpt nor teacher_cache is set"),
    (["--tokenizer=gpt2"], "tokenizer 'bytes'"),
    # a bad setting is refused before any data is read: the data_dir below does not exist
    (["--grad_clip=-1", "--data_dir=/nonexistent"], "train.py: config error: grad_clip=-1.0; allowed: a finite number > 0"),
])
def test_bad_input_is_a_clear_error(data_dir, tmp_path, args, message):
    proc = train(*TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--max_iters=2", *args, expect_ok=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_teacher_with_another_tokenizer_is_refused(data_dir, teacher_ckpt, tmp_path):
    ck = load_checkpoint(teacher_ckpt)
    ck.update(tokenizer="gpt2", n_vocab=50257)
    save_checkpoint(str(tmp_path / "gpt2_teacher.pt"), ck)
    proc = train(*TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--max_iters=2", "--alpha=0.5",
                 f"--teacher_ckpt={tmp_path / 'gpt2_teacher.pt'}", expect_ok=False)
    assert "uses tokenizer 'gpt2' (50257 tokens) but the student uses 'bytes' (257 tokens)" in proc.stderr


def test_corrupt_data_file_is_refused(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_tokens(d / "train.bin", np.arange(5000) % 257, 257, "bytes")
    raw = bytearray((d / "train.bin").read_bytes())
    raw[:4] = b"JUNK"
    (d / "train.bin").write_bytes(bytes(raw))
    proc = train(*TINY, f"--data_dir={d}", f"--out_dir={tmp_path / 'out'}", "--max_iters=2", expect_ok=False)
    assert "training data:" in proc.stderr and "train.bin" in proc.stderr, proc.stderr[-2000:]
    # a header with another vocabulary than the tokenizer's: train.bin is blamed, at start-up, not val.bin later
    write_tokens(d / "train.bin", np.arange(5000) % 257, 300, "bytes")
    write_tokens(d / "val.bin", np.arange(5000) % 257, 257, "bytes")
    proc = train(*TINY, f"--data_dir={d}", f"--out_dir={tmp_path / 'out'}", "--max_iters=2", expect_ok=False)
    assert proc.returncode == 1 and "step" not in proc.stdout, proc.stdout
    assert proc.stderr.strip() == (f"train.py: error: training data: {d / 'train.bin'}: its header says vocabulary "
                                   "300, but tokenizer 'bytes' has 257: the file is corrupt or was written by another tool")


def test_dry_run_of_the_headline_config_prints_the_plan():
    from model import GPT, config_from_preset, count_params_formula
    proc = train("configs/student_1b_teacher_160m.py", "--dry_run=True")
    for name in ("gpt2-1b", "gpt2-160m"):
        cfg = config_from_preset(name, 50304, 1024)
        assert f"{count_params_formula(cfg):,} params" in proc.stdout, proc.stdout
    assert "tokens/step 2,097,152" in proc.stdout
    assert "memory/GPU" in proc.stdout and "FLOPs/step" in proc.stdout


def test_fused_and_reference_losses_give_the_same_training_curve(data_dir, teacher_ckpt, tmp_path):
    # through train.py under DDP (2 ranks) with 2 micro-steps of accumulation, KD at T=2; bounds: see UPDATE_RTOL
    common = [*TINY, *SGD, f"--data_dir={data_dir}", "--batch_size=2", "--max_iters=8", "--eval_interval=1000",
              f"--teacher_ckpt={teacher_ckpt}", "--alpha=0.5", "--temperature=2.0"]
    train(*common, f"--out_dir={tmp_path / 'ref'}", "--loss_impl=reference", torchrun=2)
    train(*common, f"--out_dir={tmp_path / 'fused'}", "--loss_impl=fused", torchrun=2)
    ref, fused = curve(tmp_path / "ref"), curve(tmp_path / "fused")
    assert sorted(ref) == list(range(1, 9))
    assert_same_curves(ref, fused)
    assert_same_updates(initial_student(tmp_path / "ref"), tmp_path / "ref" / "ckpt.pt", tmp_path / "fused" / "ckpt.pt")


# ---- every option that reaches the loss, checked end to end -------------------------------------------------
# At step 1 the student is its fresh initialisation, so the ce and kd train.py logs can be recomputed here, in
# float64, from the teacher checkpoint, that initial student and the first batch, with the loss written out
# below (not distill_loss.py). Bound: train.py computes in fp32; each logit of these tiny models sums ≤ 64
# products of O(1)·0.02-sized terms after ~20 reductions of length ≤ 256, an error ≲ 1e-5 absolute; CE and KD
# are Lipschitz in the logits with constant ≤ 2 and ≤ 2T² (T·‖pT − qT‖₁ ≤ 2T per logit, times T for the
# teacher's side at T) in the max-norm, and the mean over tokens adds ~1e-6 of the value; so CE and KD are good
# to ≈ 4e-5·max(1, T²): stated as 1e-4·max(1, T²).

def float64_losses(teacher_path, student_state, model_config, x, y, *, temperature, kl, top_k, label_smoothing,
                   top_k_variant="teacher", jsd_beta=0.5, n_vocab=257):
    from model import GPT, GPTConfig
    student = GPT(GPTConfig(**model_config)).double()
    student.load_state_dict({k: v.double() for k, v in student_state.items()})
    with torch.no_grad():
        s = student.logits(x).double()[..., :n_vocab].reshape(-1, n_vocab)
        teacher = None
        if teacher_path:
            ck = load_checkpoint(teacher_path)
            teacher = GPT(GPTConfig(**ck["model_config"])).double()
            teacher.load_state_dict({k: v.double() for k, v in ck["model"].items()})
            t = teacher.logits(x).double()[..., :n_vocab].reshape(-1, n_vocab)
    y = y.reshape(-1)
    log_p = s.log_softmax(-1)
    nll = -log_p[torch.arange(len(y)), y]
    ce = ((1 - label_smoothing) * nll - label_smoothing * log_p.mean(-1)).mean().item()
    if teacher is None:
        return ce, 0.0
    T = temperature
    if T == 0:  # the teacher's argmax is the label
        return ce, (-log_p[torch.arange(len(y)), t.argmax(-1)]).mean().item()
    log_pT = (s / T).log_softmax(-1)
    log_qT = (t / T).log_softmax(-1)
    qT, pT = log_qT.exp(), log_pT.exp()
    if top_k:  # K = the teacher's top_k tokens, per row
        keep = torch.zeros_like(t, dtype=torch.bool).scatter_(1, t.topk(top_k, dim=-1).indices, True)
        q_K = (t / T).masked_fill(~keep, -math.inf).log_softmax(-1)    # teacher renormalised over K
        if top_k_variant == "teacher":    # student over the whole vocabulary
            kd = torch.where(keep, q_K.exp() * (q_K - log_pT), 0.0).sum(-1)
        elif top_k_variant == "both":     # student renormalised over K too
            p_K = (s / T).masked_fill(~keep, -math.inf).log_softmax(-1)
            kd = torch.where(keep, q_K.exp() * (q_K - p_K), 0.0).sum(-1)
        else:                             # "bucket": no renormalisation, the rest is one OTHER entry each
            eps = torch.finfo(torch.float32).eps
            q_o, p_o = torch.where(keep, 0.0, qT).sum(-1), torch.where(keep, 0.0, pT).sum(-1)
            kd = (torch.where(keep, qT * (log_qT - log_pT), 0.0).sum(-1)
                  + q_o * (q_o.clamp(min=eps).log() - p_o.clamp(min=eps).log()))
    elif kl == "forward":
        kd = (qT * (log_qT - log_pT)).sum(-1)
    elif kl == "reverse":
        kd = (pT * (log_pT - log_qT)).sum(-1)
    else:  # "jsd": β·KL(q ‖ m) + (1 − β)·KL(p ‖ m), m = β·q + (1 − β)·p
        b = jsd_beta
        m = b * qT + (1 - b) * pT
        kd = b * (qT * (log_qT - m.log())).sum(-1) + (1 - b) * (pT * (log_pT - m.log())).sum(-1)
    return ce, (T * T * kd).mean().item()


OPTIONS = {  # name: (train.py arguments, what the float64 loss needs to know)
    "forward_T1_fused": (["--alpha=0.5", "--loss_impl=fused"], dict(temperature=1.0, kl="forward")),
    "forward_T1_reference": (["--alpha=0.5", "--loss_impl=reference"], dict(temperature=1.0, kl="forward")),
    "forward_T2": (["--alpha=0.5", "--temperature=2.0"], dict(temperature=2.0, kl="forward")),
    "reverse_kl": (["--alpha=0.5", "--kd_loss=reverse"], dict(temperature=1.0, kl="reverse")),
    "hard_T0": (["--alpha=0.5", "--temperature=0.0"], dict(temperature=0.0, kl="forward")),
    # 0.006·257 = 1.54: round(p·V) keeps 2, truncation would keep 1
    "top_k_fraction": (["--alpha=0.5", "--top_k=0.006"], dict(temperature=1.0, kl="forward", top_k=2)),
    "label_smoothing": (["--label_smoothing=0.1", "--teacher_ckpt="], dict(temperature=1.0, kl="forward", label_smoothing=0.1)),
    "top_k_both": (["--alpha=0.5", "--top_k=3", "--top_k_variant=both"],
                   dict(temperature=1.0, kl="forward", top_k=3, top_k_variant="both")),
    "top_k_bucket": (["--alpha=0.5", "--top_k=3", "--top_k_variant=bucket", "--temperature=2.0"],
                     dict(temperature=2.0, kl="forward", top_k=3, top_k_variant="bucket")),
    "jsd": (["--alpha=0.5", "--kd_loss=jsd", "--jsd_beta=0.3"], dict(temperature=1.0, kl="jsd", jsd_beta=0.3)),
    "smoothing_beside_teacher": (["--alpha=0.5", "--label_smoothing=0.1"],
                                 dict(temperature=1.0, kl="forward", label_smoothing=0.1)),
    "alpha_schedule": (["--alpha=0.2", "--alpha_end=0.8"], dict(temperature=1.0, kl="forward")),
}
# which path train.py must take for each: the kernel does forward KL at T > 0 and plain CE, the chunked loss
# everything else, and "reference" the full logits
EXPECTED_PATH = {"forward_T1_fused": "fused", "forward_T1_reference": "reference", "forward_T2": "fused",
                 "alpha_schedule": "fused"}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_option_reaches_the_loss_as_defined(data_dir, teacher_ckpt, tmp_path, name):
    from data.loader import TokenLoader
    args, spec = OPTIONS[name]
    spec = {"top_k": None, "label_smoothing": 0.0, **spec}
    steps = 4
    proc = train(*TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", f"--max_iters={steps}",
                 "--eval_interval=1000", "--batch_size=8", f"--teacher_ckpt={teacher_ckpt}", *args)
    assert "Traceback" not in proc.stderr
    path = EXPECTED_PATH.get(name, "chunked")
    assert f"{path} loss" in proc.stdout + proc.stderr, (path, proc.stdout[-2000:])
    cfg = json.load(open(tmp_path / "config.json"))["config"]
    has_teacher = bool(cfg["teacher_ckpt"])
    log = curve(tmp_path)
    assert sorted(log) == list(range(1, steps + 1))
    # α as configured, step by step (step s is logged after optimizer step s−1 → α at iteration s−1)
    for s, rec in log.items():
        a = cfg["alpha"] if cfg["alpha_end"] < 0 else cfg["alpha"] + (cfg["alpha_end"] - cfg["alpha"]) * (s - 1) / steps
        assert abs(rec["alpha"] - a) < 1e-12, (s, rec["alpha"], a)
        want = rec["ce"] if not has_teacher else (1 - a) * rec["ce"] + a * rec["kd"]
        assert abs(rec["loss"] - want) <= 1e-6 * abs(want), (s, rec)   # fp32 rounding of one multiply-add
        assert math.isfinite(rec["loss"])
    # step 1 against the float64 definition
    loader = TokenLoader(sorted(glob.glob(os.path.join(data_dir, "train*.bin"))), cfg["batch_size"],
                         cfg["block_size"], seed=cfg["seed"], tokenizer="bytes", vocab_size=257)
    x, y = loader.next_batch()
    mc = json.load(open(tmp_path / "config.json"))["model_config"]
    ce, kd = float64_losses(teacher_ckpt if has_teacher else "", initial_student(tmp_path), mc, x, y, **spec)
    tol = 1e-4 * max(1.0, spec["temperature"] ** 2)
    assert abs(log[1]["ce"] - ce) <= tol, (log[1]["ce"], ce)
    assert abs(log[1]["kd"] - kd) <= tol, (log[1]["kd"], kd)
    if has_teacher:
        assert kd > 0.01   # a real teacher, really different from the student: the check above has teeth
    assert log[steps]["loss"] < log[1]["loss"] + 0.5   # and it trains (no blow-up) through the whole loop


# ---- under autocast, the fused and chunked losses get the autocast dtype ------------------------------------
# The residual stream stays fp32 under autocast (the embedding and residual adds are not autocast ops), so
# without a cast in train.py the lm_head GEMMs inside the fused loss would run on fp32 activations: TF32 on a
# GPU, and fp32 gradient buffers. CPU bf16 autocast shows the same dtypes; the GEMM itself is a GPU test.
SPY = """
import json, runpy, sys
import chunked_loss, fused_kd
seen = []
def spy(fn):
    def wrapped(x_s, w_s, labels, x_t=None, w_t=None, **kw):
        seen.append([fn.__name__, str(x_s.dtype), str(x_t.dtype) if x_t is not None else None])
        return fn(x_s, w_s, labels, x_t, w_t, **kw)
    return wrapped
chunked_loss.fused_linear_kd_ce = spy(chunked_loss.fused_linear_kd_ce)   # what linear_kd_ce calls
chunked_loss.chunked_linear_kd_ce = spy(chunked_loss.chunked_linear_kd_ce)
sys.argv = ["train.py", *json.loads(sys.argv[1])]
try:
    runpy.run_path("train.py", run_name="__main__")
finally:
    print("SEEN " + json.dumps(seen))
"""


@pytest.mark.parametrize("kd_loss,path", [("forward", "fused_linear_kd_ce"), ("reverse", "chunked_linear_kd_ce")])
def test_autocast_activations_reach_the_fused_loss_in_its_dtype(data_dir, teacher_ckpt, tmp_path, kd_loss, path):
    args = [*TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--max_iters=2", "--eval_interval=1000",
            f"--teacher_ckpt={teacher_ckpt}", "--alpha=0.5", f"--kd_loss={kd_loss}", "--dtype=bfloat16"]
    proc = subprocess.run([sys.executable, "-c", SPY, json.dumps(args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = json.loads(proc.stdout.split("SEEN ")[-1])
    assert len(seen) >= 2, seen   # one call per training step (eval is off)
    assert all(s == [path, "torch.bfloat16", "torch.bfloat16"] for s in seen), seen
