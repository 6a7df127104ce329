"""train.py end to end on tiny byte-level models: equivalences that must hold exactly
(teacher at α=0, DDP vs one process, kill-and-resume) and clear errors for bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint, save_checkpoint
from data.tokenfile import write_tokens

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


def test_kd_changes_training(data_dir, teacher_ckpt, tmp_path):
    common = [*TINY, f"--data_dir={data_dir}", "--max_iters=6", "--eval_interval=1000", "--loss_impl=reference"]
    train(*common, f"--out_dir={tmp_path / 'kd'}", f"--teacher_ckpt={teacher_ckpt}", "--alpha=0.5")
    train(*common, f"--out_dir={tmp_path / 'plain'}")
    assert curve(tmp_path / "kd")[6]["loss"] != curve(tmp_path / "plain")[6]["loss"]


def test_ddp_two_ranks_with_accumulation_equal_one_process(data_dir, teacher_ckpt, tmp_path):
    # global batch 4 sequences × 32 × 2 accumulation; one process takes all 4 per micro-step, each rank 2
    common = [*TINY, f"--data_dir={data_dir}", "--max_iters=6", "--eval_interval=3", "--batch_tokens=256",
              f"--teacher_ckpt={teacher_ckpt}", "--alpha=0.5"]
    train(*common, "--batch_size=4", f"--out_dir={tmp_path / 'one'}", "--block_size=32")
    train(*common, "--batch_size=2", f"--out_dir={tmp_path / 'two'}", torchrun=2)
    cfg = json.load(open(tmp_path / "two" / "config.json"))
    assert cfg["world_size"] == 2 and cfg["grad_accum_steps"] == 2
    one, two = curve(tmp_path / "one"), curve(tmp_path / "two")
    for step in one:
        assert abs(one[step]["loss"] - two[step]["loss"]) < 1e-5, (step, one[step], two[step])
    a = load_checkpoint(str(tmp_path / "one" / "ckpt.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "two" / "ckpt.pt"))["model"]
    # the same data and math; only the order of floating-point sums differs between the two
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_sigkill_and_resume_reproduces_uninterrupted_run(data_dir, tmp_path):
    common = [*TINY, f"--data_dir={data_dir}", "--max_iters=30", "--eval_interval=10"]
    train(*common, f"--out_dir={tmp_path / 'straight'}")
    # start the same run, kill -9 it once it is past its step-20 checkpoint, then resume
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *common, f"--out_dir={killed}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if os.path.exists(killed / "log.jsonl") and max(curve(killed), default=0) >= 23:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    last = max(curve(killed))
    assert 23 <= last < 30, f"the kill should land mid-run, after the step-20 checkpoint (last step {last})"
    assert load_checkpoint(str(killed / "ckpt.pt"))["step"] == 20
    train(*common, f"--out_dir={killed}", "--resume=True")
    straight, resumed = curve(tmp_path / "straight"), curve(killed)
    assert sorted(resumed) == list(range(1, 31))
    for step in straight:
        assert straight[step]["loss"] == resumed[step]["loss"], step
    a = load_checkpoint(str(tmp_path / "straight" / "ckpt.pt"))["model"]
    b = load_checkpoint(str(killed / "ckpt.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


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


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
    # an absurd learning rate blows the weights up within a few steps
    proc = train(*TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--max_iters=50", "--eval_interval=1",
                 "--learning_rate=1e30", "--warmup_frac=0.0", "--grad_clip=1e30", expect_ok=False)
    assert proc.returncode != 0
    assert "is nan" in proc.stderr or "is inf" in proc.stderr, proc.stderr[-2000:]
    ck = load_checkpoint(str(tmp_path / "ckpt.pt"))
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


@pytest.mark.parametrize("args,message", [
    (["--no_such_key=1"], "unknown config key 'no_such_key'; valid keys are: "),
    (["--alpha=1.5"], "alpha must be in [0, 1]"),
    (["--temperature=-1.0"], "temperature must be >= 0"),
    (["--alpha=fast"], "alpha must be float"),
    (["--teacher_ckpt=/nonexistent/ckpt.pt", "--alpha=0.5"], "checkpoint not found: /nonexistent/ckpt.pt"),
    (["--tokenizer=gpt2"], "tokenizer 'bytes'"),
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


def test_dry_run_of_the_headline_config_prints_the_plan():
    from model import GPT, config_from_preset, count_params_formula
    proc = train("configs/student_1b_teacher_160m.py", "--dry_run=True")
    for name in ("gpt2-1b", "gpt2-160m"):
        cfg = config_from_preset(name, 50304, 1024)
        assert f"{count_params_formula(cfg):,} params" in proc.stdout, proc.stdout
    assert "tokens/step 2,097,152" in proc.stdout
    assert "memory/GPU" in proc.stdout and "FLOPs/step" in proc.stdout


def test_fused_and_reference_losses_give_the_same_training_curve(data_dir, teacher_ckpt, tmp_path):
    # through train.py under DDP (2 ranks) with 2 micro-steps of accumulation, KD at T=2
    common = [*TINY, f"--data_dir={data_dir}", "--batch_size=2", "--max_iters=8", "--eval_interval=1000",
              f"--teacher_ckpt={teacher_ckpt}", "--alpha=0.5", "--temperature=2.0"]
    train(*common, f"--out_dir={tmp_path / 'ref'}", "--loss_impl=reference", torchrun=2)
    train(*common, f"--out_dir={tmp_path / 'fused'}", "--loss_impl=fused", torchrun=2)
    ref, fused = curve(tmp_path / "ref"), curve(tmp_path / "fused")
    assert sorted(ref) == sorted(fused) == list(range(1, 9))
    for step in ref:  # same math in another order: fp32 agreement to ~1e-6, stated as 1e-5
        for key in ("loss", "ce", "kd"):
            assert abs(ref[step][key] - fused[step][key]) < 1e-5 * max(1.0, abs(ref[step][key])), (step, key)
    a = load_checkpoint(str(tmp_path / "ref" / "ckpt.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "fused" / "ckpt.pt"))["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
