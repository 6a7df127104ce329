"""
Loading a checkpoint never runs code from whoever wrote it.

A crafted file whose pickle calls os.system (touching a marker file) is handed to every way nanokd reads a
checkpoint: eval.py --ckpt, train.py --teacher_ckpt and --resume, and export.py (the sharded (FSDP) path and
`checkpoint.py convert` are tests/test_sharded_safety.py's). Each must refuse it with a clear error, and the
marker must not exist afterwards. The first test shows the payload is live (plain unpickling does create the marker), so
the others can fail. Pre-v2 checkpoints (numpy RNG state) are refused with the conversion command, which
then turns them into loadable ones holding the same values.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import checkpoint
from checkpoint import CheckpointError, load_checkpoint
from test_train import ROOT, TINY, data_dir, teacher_ckpt, train  # noqa: F401  (fixtures)


class Payload:
    """Unpickled, this runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_malicious(path, marker):
    torch.save({"format": checkpoint.FORMAT, "model": {}, "model_config": {}, "payload": Payload(marker)}, path)


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_the_payload_is_live(tmp_path):
    # what the other tests guard against really happens when such a file is unpickled the unsafe way
    bad, marker = tmp_path / "ckpt.pt", tmp_path / "ran"
    write_malicious(bad, marker)
    proc = run("-c", f"import torch; torch.load({str(bad)!r}, weights_only=False)")
    assert marker.exists(), proc.stderr


def test_load_checkpoint_refuses_it(tmp_path):
    bad, marker = tmp_path / "ckpt.pt", tmp_path / "ran"
    write_malicious(bad, marker)
    with pytest.raises(CheckpointError, match="not loaded.*python checkpoint.py convert"):
        load_checkpoint(str(bad))
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["eval", "export", "teacher", "resume"])
def test_every_entry_point_refuses_it(tmp_path, data_dir, how):  # noqa: F811
    marker = tmp_path / "ran"
    out = tmp_path / "run"
    os.makedirs(out)
    bad = out / "ckpt.pt"
    write_malicious(bad, marker)
    if how == "eval":
        proc = run("eval.py", f"--ckpt={bad}", "--device=cpu")
    elif how == "export":
        proc = run("export.py", f"--ckpt={bad}", f"--out={tmp_path / 'hf'}")
    else:
        extra = [f"--teacher_ckpt={bad}", "--alpha=0.5", f"--out_dir={tmp_path / 'student'}"] if how == "teacher" \
            else ["--resume=True", f"--out_dir={out}"]
        proc = run("train.py", *TINY, f"--data_dir={data_dir}", "--max_iters=2", *extra)
    assert proc.returncode != 0
    assert "not loaded" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not marker.exists()


@pytest.mark.slow
def test_old_checkpoint_is_refused_then_converted(tmp_path, teacher_ckpt):  # noqa: F811
    # a v1 checkpoint as nanokd wrote it before: numpy's RNG state as its tuple with an ndarray
    new = load_checkpoint(teacher_ckpt)
    np.random.seed(7)
    legacy_numpy = np.random.get_state()
    old = {**new, "format": "nanokd-ckpt-v1", "rng": {**new["rng"], "numpy": legacy_numpy}}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"python checkpoint.py convert .*old.pt NEW.pt"):
        load_checkpoint(str(tmp_path / "old.pt"))
    proc = run("checkpoint.py", "convert", str(tmp_path / "old.pt"), str(tmp_path / "new.pt"))
    assert proc.returncode == 0, proc.stderr
    conv = load_checkpoint(str(tmp_path / "new.pt"))
    for k, v in new["model"].items():
        assert torch.equal(conv["model"][k], v), k
    assert conv["step"] == new["step"] and conv["data_state"] == new["data_state"]
    # the RNG continues exactly where the old file left it
    np.random.seed(0)
    checkpoint.set_rng_state(conv["rng"])
    after_converted = np.random.rand(5)
    np.random.set_state(legacy_numpy)
    assert np.array_equal(after_converted, np.random.rand(5))


def test_rng_state_round_trips():
    torch.manual_seed(3)
    np.random.seed(3)
    np.random.randn()   # leaves a cached gaussian, the state's last two fields
    state = checkpoint.rng_state()
    want_t, want_n, want_g = torch.rand(3), np.random.rand(3), np.random.randn()
    torch.manual_seed(0)
    np.random.seed(0)
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(3), want_t)
    assert np.array_equal(np.random.rand(3), want_n) and np.random.randn() == want_g
