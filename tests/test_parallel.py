"""FSDP2 against DDP, FSDP kill-and-resume, gathering shards, and torch.compile against eager —
all on CPU with gloo and tiny byte-level models."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from checkpoint import load_checkpoint
from test_train import ROOT, TINY, curve, data_dir, teacher_ckpt, train  # noqa: F401  (fixtures)


def assert_same_weights(a, b, rtol=1e-4, atol=1e-6):
    a, b = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


@pytest.mark.parametrize("loss_impl", ["reference", "fused"])
def test_fsdp_matches_ddp_with_a_teacher(data_dir, teacher_ckpt, tmp_path, loss_impl):
    common = [*TINY, f"--data_dir={data_dir}", "--batch_size=2", "--max_iters=6", "--eval_interval=3",
              f"--teacher_ckpt={teacher_ckpt}", "--alpha=0.5", f"--loss_impl={loss_impl}"]
    train(*common, f"--out_dir={tmp_path / 'ddp'}", torchrun=2)
    train(*common, f"--out_dir={tmp_path / 'fsdp'}", "--parallel=fsdp", "--fsdp_teacher=True", torchrun=2)
    ddp, fsdp = curve(tmp_path / "ddp"), curve(tmp_path / "fsdp")
    for step in ddp:
        assert abs(ddp[step]["loss"] - fsdp[step]["loss"]) < 1e-5, step
    # the gathered single-file checkpoint FSDP writes holds the same weights DDP reached
    assert_same_weights(tmp_path / "ddp" / "ckpt.pt", tmp_path / "fsdp" / "ckpt.pt")


def test_fsdp_killed_and_resumed_matches_uninterrupted(data_dir, tmp_path):
    common = [*TINY, f"--data_dir={data_dir}", "--batch_size=2", "--max_iters=16", "--eval_interval=8",
              "--parallel=fsdp"]
    train(*common, f"--out_dir={tmp_path / 'straight'}", torchrun=2)
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "train.py"), *common, f"--out_dir={killed}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.exists(killed / "log.jsonl") and max(curve(killed), default=0) >= 10):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks at once
    proc.wait()
    assert 10 <= max(curve(killed)) < 16
    train(*common, f"--out_dir={killed}", "--resume=True", torchrun=2)
    straight, resumed = curve(tmp_path / "straight"), curve(killed)
    for step in straight:
        assert straight[step]["loss"] == resumed[step]["loss"], step
    assert_same_weights(tmp_path / "straight" / "ckpt.pt", killed / "ckpt.pt", rtol=0, atol=0)
    # and the shards gather offline into the same single-file checkpoint
    subprocess.run([sys.executable, os.path.join(ROOT, "parallel.py"), "gather", str(killed / "ckpt_sharded"),
                    str(tmp_path / "gathered.pt")], check=True, cwd=ROOT)
    assert_same_weights(killed / "ckpt.pt", tmp_path / "gathered.pt", rtol=0, atol=0)


def test_compiled_and_eager_steps_agree(data_dir, tmp_path):
    common = [*TINY, f"--data_dir={data_dir}", "--max_iters=4", "--eval_interval=1000"]
    train(*common, f"--out_dir={tmp_path / 'eager'}")
    train(*common, f"--out_dir={tmp_path / 'compiled'}", "--compile=True", timeout=600)
    eager, compiled = curve(tmp_path / "eager"), curve(tmp_path / "compiled")
    assert sorted(eager) == sorted(compiled) == [1, 2, 3, 4]
    for step in eager:  # inductor fuses and reorders float math; agreement is close, not bitwise
        assert abs(eager[step]["loss"] - compiled[step]["loss"]) < 1e-4, step
    assert_same_weights(tmp_path / "eager" / "ckpt.pt", tmp_path / "compiled" / "ckpt.pt", rtol=1e-3, atol=1e-5)
