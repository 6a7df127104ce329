"""train.py with packing=True: DDP ≡ one process ≡ gradient accumulation while rows carry different padding (the
step's loss divided by the tokens it scores over micro-steps and ranks), and a killed run resumes bit for bit."""

import os
import signal

import numpy as np
import pytest

from data.tokenfile import write_tokens
from test_train import (SGD, TINY, assert_resumed_exactly, assert_same_curves, assert_same_updates, curve,
                        initial_student, run_interrupted, train)
from checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def packed_dir(tmp_path_factory):
    """Python's topics as documents (end-of-text 256 after each), cut to 10-60 bytes so a 32-byte row holds a
    few and padding varies from row to row."""
    import pydoc_data.topics as topics
    d = tmp_path_factory.mktemp("packed")
    rng = np.random.default_rng(0)
    docs = [t.encode("utf-8")[:int(rng.integers(10, 60))] for t in topics.topics.values()]
    toks = np.concatenate([np.append(np.frombuffer(b, dtype=np.uint8), 256) for b in docs * 4]).astype(np.int64)
    write_tokens(d / "train.bin", toks, 257, "bytes")
    write_tokens(d / "val.bin", toks[:4000], 257, "bytes")
    return str(d)


@pytest.fixture(scope="module")
def packed_teacher(packed_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(*TINY, f"--data_dir={packed_dir}", f"--out_dir={out}", "--max_iters=5", "--eval_interval=1000",
          "--seed=42", "--packing=True")
    return str(out / "ckpt.pt")


def test_packed_ddp_and_accumulation_equal_one_process(packed_dir, packed_teacher, tmp_path):
    common = [*TINY, *SGD, f"--data_dir={packed_dir}", "--max_iters=6", "--eval_interval=1000", "--batch_tokens=256",
              f"--teacher_ckpt={packed_teacher}", "--alpha=0.5", "--packing=True"]
    train(*common, "--batch_size=2", f"--out_dir={tmp_path / 'accum'}")
    train(*common, "--batch_size=8", f"--out_dir={tmp_path / 'one'}")
    train(*common, "--batch_size=4", f"--out_dir={tmp_path / 'two'}", torchrun=2)
    init = initial_student(tmp_path / "one")
    for other in ("accum", "two"):
        assert_same_curves(curve(tmp_path / "one"), curve(tmp_path / other))
        assert_same_updates(init, tmp_path / "one" / "ckpt.pt", tmp_path / other / "ckpt.pt")


def test_packed_run_killed_resumes_exactly(packed_dir, tmp_path):
    common = [*TINY, f"--data_dir={packed_dir}", "--max_iters=14", "--eval_interval=5", "--packing=True"]
    train(*common, f"--out_dir={tmp_path / 'straight'}")
    killed = tmp_path / "killed"
    proc = run_interrupted(common, killed, "SIGKILL@12")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert load_checkpoint(str(killed / "ckpt.pt"))["data_state"]["packing"] is True
    proc = train(*common, f"--out_dir={killed}", "--resume=True")
    assert_resumed_exactly(tmp_path / "straight", killed, 10, proc)
    assert os.path.exists(killed / "final.json")
