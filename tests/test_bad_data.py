"""
Bad input found where it enters, with an error that names it: a token id past the vocabulary (a corrupt file,
or one another tool wrote with a valid header), a teacher whose context is shorter than the student's, and a
data directory without val.bin.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data.loader import TokenLoader, check_file, eval_batches
from data.tokenfile import HEADER_SIZE, TokenFileError
from test_train import ROOT, TINY, data_dir, teacher_ckpt, train  # noqa: F401  (fixtures)


def poke(path, offset, token):
    """Overwrite token `offset` of a uint16 token file in place, header untouched (what a corrupt block does)."""
    with open(path, "r+b") as f:
        f.seek(HEADER_SIZE + 2 * offset)
        f.write(np.array([token], dtype=np.uint16).tobytes())


@pytest.fixture
def corrupt_dir(data_dir, tmp_path):  # noqa: F811
    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    return d


def test_loader_names_file_and_offset(corrupt_dir):
    path = str(corrupt_dir / "train.bin")
    poke(path, 5_000, 300)   # vocabulary 257
    loader = TokenLoader([path], batch_size=4, block_size=32, seed=1, vocab_size=257)
    with pytest.raises(TokenFileError, match=rf"train.bin: token 300 at offset 5000 .*vocabulary of 257"):
        for _ in range(loader.batches_per_epoch):   # one epoch visits every window, so the bad one too
            loader.next_batch()


@pytest.mark.slow
def test_eval_batches_and_whole_file_check_name_the_offset(corrupt_dir):
    path = str(corrupt_dir / "val.bin")
    poke(path, 777, 65_000)
    with pytest.raises(TokenFileError, match="val.bin: token 65000 at offset 777 "):
        list(eval_batches(path, batch_size=4, block_size=32, vocab_size=257))
    with pytest.raises(TokenFileError, match="at offset 777 "):
        check_file(path)
    assert check_file(str(corrupt_dir / "ood_news.bin")) > 0   # a good file passes
    proc = subprocess.run([sys.executable, "-m", "data.loader", "check", path], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "offset 777" in proc.stderr


@pytest.mark.slow
def test_train_and_eval_say_which_file(corrupt_dir, teacher_ckpt, tmp_path):  # noqa: F811
    train_bin = str(corrupt_dir / "train.bin")
    n = (os.path.getsize(train_bin) - HEADER_SIZE) // 2
    for off in range(0, n, 40):   # one bad id in every window of 33, so the first batch meets one
        poke(train_bin, off, 400)
    proc = train(*TINY, f"--data_dir={corrupt_dir}", f"--out_dir={tmp_path / 'run'}", "--max_iters=2", expect_ok=False)
    assert proc.returncode != 0
    assert "train.bin: token 400 at offset" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]

    poke(str(corrupt_dir / "val.bin"), 10, 500)
    proc = subprocess.run([sys.executable, "eval.py", f"--ckpt={teacher_ckpt}", f"--data_dir={corrupt_dir}",
                           "--tasks=val", "--device=cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "val.bin: token 500 at offset 10 " in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_teacher_with_a_shorter_context_is_a_config_error(data_dir, teacher_ckpt, tmp_path):  # noqa: F811
    # the teacher was trained at block_size=32 (TINY)
    args = [a for a in TINY if not a.startswith("--block_size")]
    proc = train(*args, "--block_size=64", f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--max_iters=1",
                 f"--teacher_ckpt={teacher_ckpt}", "--alpha=0.5", expect_ok=False)
    assert proc.returncode != 0
    assert "context of 32 tokens, shorter than the student's block_size=64" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_missing_val_bin_is_said(data_dir, tmp_path):  # noqa: F811
    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    os.remove(d / "val.bin")
    proc = train(*TINY, f"--data_dir={d}", f"--out_dir={tmp_path / 'run'}", "--max_iters=1")
    assert proc.stderr.count("no val.bin") == 1, proc.stderr[-2000:]
    os.remove(d / "ood_news.bin")
    proc = train(*TINY, f"--data_dir={d}", f"--out_dir={tmp_path / 'run2'}", "--max_iters=1")
    assert "no val.bin" in proc.stderr and "evaluates nothing at all" in proc.stderr
