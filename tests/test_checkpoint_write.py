"""
Writing checkpoints: a full disk is a one-line error naming the file, its size and the free space, and the
previous checkpoint stays whole; new files respect the umask like any other file; a leftover
`ckpt_sharded.old` (a kill during its removal) does not block later sharded saves.
"""

import contextlib
import errno
import os
import re
import resource
import signal
import warnings

import pytest
import torch
import torch.distributed as dist

import checkpoint
from checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from parallel import find_sharded, load_sharded, save_sharded

MB = 4   # the checkpoint's tensor, so its file is ~4 MB: far beyond the limits below


def ckpt(step):
    return {"step": step, "model": {"w": torch.full((MB * 250_000,), float(step))}}


class FillsUp:
    """A file that takes `room` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def reported_mb(message):
    return float(re.search(r"it needs about ([\d,.]+) MB", message).group(1).replace(",", ""))


def assert_previous_is_whole(tmp_path, path):
    assert load_checkpoint(str(path))["step"] == 1 and torch.equal(load_checkpoint(str(path))["model"]["w"],
                                                                   ckpt(1)["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]   # no temp file left behind


def test_a_full_disk_is_a_one_line_error_and_the_previous_checkpoint_stays(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), ckpt(1))
    real_size = os.path.getsize(path)
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FillsUp(real_fdopen(fd, mode), room=1_000_000))
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(str(path), ckpt(2))
    msg = str(e.value)
    assert "\n" not in msg and "inline_container" not in msg
    assert re.fullmatch(rf"could not write {re.escape(str(path))}: No space left on device \(ENOSPC\); it needs about "
                        rf"[\d,.]+ MB and [\d,.]+ MB are free in {re.escape(str(tmp_path))}; the previous checkpoint "
                        r"there is left unchanged", msg), msg
    # the size said is the file's: it differs by the pickle and zip records (a few kB) and the rounding (0.05 MB)
    assert abs(reported_mb(msg) - real_size / 1e6) < 0.06
    assert_previous_is_whole(tmp_path, path)


@contextlib.contextmanager
def file_size_limit(nbytes):
    """The kernel's own error, not a simulated one: RLIMIT_FSIZE with SIGXFSZ ignored makes write() fail (EFBIG)."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_file_size_limit_is_reported_the_same_way(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), ckpt(1))
    with file_size_limit(1_000_000), pytest.raises(
            CheckpointError, match=r"could not write .*ckpt.pt: File too large \(EFBIG\); it needs about [\d,.]+ MB "
                                   r"and [\d,.]+ MB are free in .*; the previous"):
        save_checkpoint(str(path), ckpt(2))
    assert_previous_is_whole(tmp_path, path)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_checkpoints_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        save_checkpoint(str(tmp_path / "ckpt.pt"), {"step": 1})
        with open(tmp_path / "other", "w"):   # what any other file the run writes gets
            pass
    finally:
        os.umask(old)
    mode = os.stat(tmp_path / "ckpt.pt").st_mode & 0o777
    assert mode == 0o666 & ~umask == os.stat(tmp_path / "other").st_mode & 0o777


@pytest.fixture
def one_process_group(tmp_path):
    """A real gloo process group of one process, as torchrun would make for save_sharded's collectives."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_leftover_old_sharded_checkpoint_does_not_block_saves(tmp_path, one_process_group):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    directory = str(tmp_path / "ckpt_sharded")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_sharded(directory, model, optimizer, {"step": 1})
        # a kill during the removal of .old: part of an older checkpoint is still there
        os.makedirs(directory + ".old")
        with open(os.path.join(directory + ".old", "__0_0.distcp"), "wb") as f:
            f.write(b"half removed")
        for step in (2, 3):
            save_sharded(directory, model, optimizer, {"step": step})
        assert find_sharded(directory) == directory and not os.path.exists(directory + ".old")
        assert load_sharded(directory, model, optimizer)["step"] == 3


def test_a_full_disk_during_a_sharded_save_is_a_one_line_error(tmp_path, one_process_group):
    torch.manual_seed(0)
    model = torch.nn.Linear(1000, MB * 250)   # 4 MB of weights, 12 MB with AdamW's moments
    optimizer = torch.optim.AdamW(model.parameters())
    directory = str(tmp_path / "ckpt_sharded")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_sharded(directory, model, optimizer, {"step": 1})
        before = {name: os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)}
        with file_size_limit(1_000_000), pytest.raises(CheckpointError) as e:
            save_sharded(directory, model, optimizer, {"step": 2})
        assert "\n" not in str(e.value)
        assert re.fullmatch(r"could not write .*ckpt_sharded.tmp: File too large \(EFBIG\); it needs about [\d,.]+ MB "
                            r"and [\d,.]+ MB are free in .*; the previous checkpoint there is left unchanged",
                            str(e.value)), str(e.value)
        assert 12 <= reported_mb(str(e.value)) <= 12.1   # weights and both moments, 4 MB each (+ 4 kB of biases)
        assert sorted(os.listdir(tmp_path)) == ["ckpt_sharded", "store"]   # the partial one removed
        assert {name: os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)} == before
        assert load_sharded(directory, model, optimizer)["step"] == 1


def test_the_size_counts_shared_storage_once():
    w = torch.zeros(1000)
    assert checkpoint.tensor_bytes({"a": w, "b": [w, w[:10]], "c": (torch.zeros(10, dtype=torch.int8), 3)}) == 4010
