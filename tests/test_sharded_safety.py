"""
Sharded (FSDP) checkpoints and `checkpoint.py convert` run no code from the files they read.

Three crafted inputs, each built here from a real file:
- a DCP `.metadata` whose pickle (protocol 4) calls `os.system` named as an attribute path through
  torch.distributed.checkpoint.metadata, a module DCP's records live in and which imports os;
- a DCP folder whose optimizer param_groups hold a pickled object, written by DCP itself as a BYTE_IO item;
- a v1 ("old") nanokd checkpoint holding a pickled object next to its numpy RNG state.
Each test first shows the payload is live: the unguarded reader (plain pickle, DCP's own planner,
torch.load(weights_only=False)) creates a marker. Then nanokd's entry points (check_sharded, load_sharded =
FSDP resume, gather, convert) must refuse it with a clear error, and the marker must not exist.

The payloads make a directory (os.mkdir) so that the quick tests start no process; the `system` variant,
the issue's own `os.system("touch ...")`, is the same test marked slow.
"""

import os
import pickle
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.state_dict import get_state_dict

import checkpoint
from checkpoint import CheckpointError, load_checkpoint
from parallel import check_sharded, gather, load_sharded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYLOADS = ["mkdir", pytest.param("system", marks=pytest.mark.slow)]


def command(kind, marker):
    """(function name in os, its argument): either creates `marker`."""
    return ("mkdir", str(marker)) if kind == "mkdir" else ("system", f"touch {marker}")


def remove(marker):
    os.remove(marker) if os.path.isfile(marker) else os.rmdir(marker)


class Payload:
    """Unpickled, this calls os.<name>(arg): what a malicious file would do."""

    def __init__(self, kind, marker):
        self.name, self.arg = command(kind, marker)

    def __reduce__(self):
        return getattr(os, self.name), (self.arg,)


def dotted_pickle(module, name, arg):
    """A protocol-4 pickle calling module.<name>(arg), where name may be an attribute path ("os.system")."""
    def text(s):
        b = s.encode()
        return b"X" + struct.pack("<I", len(b)) + b   # BINUNICODE
    return b"\x80\x04" + text(module) + text(name) + b"\x93" + text(arg) + b"\x85R."   # STACK_GLOBAL, TUPLE1, REDUCE


def quiet_dcp(fn, *args, **kwargs):
    with warnings.catch_warnings():   # "no process group: assuming the intent is a single process"
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def model_and_optimizer(seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(m.parameters(), lr=0.01)
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    return m, opt


def sharded_folder(path, lr=None):
    """A real sharded checkpoint (DCP save of a model and AdamW, as save_sharded writes one, plus meta.pt);
    lr: what to store as the optimizer's learning rate (DCP writes param_groups values as BYTE_IO items)."""
    m, opt = model_and_optimizer()
    model_sd, optim_sd = get_state_dict(m, opt)
    if lr is not None:
        optim_sd["param_groups"][0]["lr"] = lr
    quiet_dcp(dcp.save, {"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))
    torch.save({"step": 3, "rng": checkpoint.rng_state()}, os.path.join(path, "meta.pt"))
    return m, opt


def crafted_metadata(path, kind, marker):
    sharded_folder(path)
    with open(os.path.join(path, ".metadata"), "wb") as f:
        f.write(dotted_pickle("torch.distributed.checkpoint.metadata", "os." + command(kind, marker)[0],
                              command(kind, marker)[1]))


def entry_points(path, tmp_path):
    """Every nanokd entry point that reads a sharded checkpoint, each expected to raise a clear refusal."""
    def resume():
        quiet_dcp(load_sharded, str(path), *model_and_optimizer(seed=1))

    def gather_cli():
        with pytest.raises(SystemExit) as e:
            quiet_dcp(gather, str(path), str(tmp_path / "gathered.pt"))
        raise CheckpointError(str(e.value.code))
    return {"check": lambda: check_sharded(str(path)), "resume": resume, "gather": gather_cli}


# ---- the crafted .metadata ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", PAYLOADS)
def test_dotted_name_in_metadata_is_live_and_refused(tmp_path, kind):
    live, marker = tmp_path / "live", tmp_path / "ran"
    crafted_metadata(live, kind, marker)
    with open(live / ".metadata", "rb") as f:   # as DCP reads it
        pickle.load(f)
    assert marker.exists()   # the payload is live
    remove(marker)

    path = tmp_path / "ckpt_sharded"
    crafted_metadata(path, kind, marker)
    for name, load in entry_points(path, tmp_path).items():
        with pytest.raises(CheckpointError, match=r"not loaded: its \.metadata names torch\.distributed\.checkpoint"
                                                  r"\.metadata\.os\.(mkdir|system)"):
            load()
        assert not marker.exists(), name
    assert not (tmp_path / "gathered.pt").exists()


def test_metadata_naming_a_file_outside_the_folder_is_refused(tmp_path):
    path = tmp_path / "ckpt_sharded"
    sharded_folder(path)
    with open(path / ".metadata", "rb") as f:
        md = pickle.load(f)
    for info in md.storage_data.values():
        info.relative_path = "../elsewhere.distcp"
    with open(path / ".metadata", "wb") as f:
        pickle.dump(md, f)
    for name, load in entry_points(path, tmp_path).items():
        with pytest.raises(CheckpointError, match=r"points at '\.\./elsewhere\.distcp', not a file inside"):
            load()


# ---- a BYTE_IO item holding a pickled object ----------------------------------------------------------

@pytest.mark.parametrize("kind", PAYLOADS)
def test_pickled_object_in_a_byte_io_item_is_live_and_refused(tmp_path, kind):
    marker = tmp_path / "ran"
    live = tmp_path / "live"
    sharded_folder(live, lr=Payload(kind, marker))
    assert not marker.exists()   # writing it ran nothing
    quiet_dcp(dcp_to_torch_save, str(live), str(tmp_path / "plain.pt"))   # DCP's own planner, as gather used
    assert marker.exists()
    remove(marker)
    m, opt = model_and_optimizer(seed=1)
    model_sd, optim_sd = get_state_dict(m, opt)
    quiet_dcp(dcp.load, {"model": model_sd, "optim": optim_sd}, checkpoint_id=str(live))   # as a resume did
    assert marker.exists()
    remove(marker)

    path = tmp_path / "ckpt_sharded"
    sharded_folder(path, lr=Payload(kind, marker))
    check_sharded(str(path))   # the check alone reads no item; resume and gather read them, as data
    for name in ("resume", "gather"):
        with pytest.raises(CheckpointError, match=r"not loaded: its item 'optim\.param_groups\.0\.lr' holds Python "
                                                  r"objects other than tensors and plain values "
                                                  r"\(it names (posix|os)\.(mkdir|system)\)"):
            entry_points(path, tmp_path)[name]()
        assert not marker.exists(), name
    assert not (tmp_path / "gathered.pt").exists()


def test_a_real_sharded_checkpoint_still_resumes_and_gathers(tmp_path):
    """The guards are not so tight that DCP's own files fail them: values compared with the saved model."""
    path = tmp_path / "ckpt_sharded"
    m, opt = sharded_folder(path)
    assert check_sharded(str(path))["step"] == 3
    m2, opt2 = model_and_optimizer(seed=1)
    opt2.param_groups[0]["lr"] = 0.5
    assert not torch.equal(m2.weight, m.weight)
    quiet_dcp(load_sharded, str(path), m2, opt2)
    assert torch.equal(m2.weight, m.weight) and torch.equal(m2.bias, m.bias)
    assert opt2.param_groups[0]["lr"] == 0.01   # a BYTE_IO item, read as data
    for p, p2 in zip(m.parameters(), m2.parameters()):
        assert torch.equal(opt.state[p]["exp_avg_sq"], opt2.state[p2]["exp_avg_sq"])
    quiet_dcp(gather, str(path), str(tmp_path / "whole.pt"))
    whole = load_checkpoint(str(tmp_path / "whole.pt"))
    assert whole["step"] == 3 and torch.equal(whole["model"]["weight"], m.weight)


def test_a_crafted_meta_pt_is_refused(tmp_path):
    path, marker = tmp_path / "ckpt_sharded", tmp_path / "ran"
    sharded_folder(path)
    torch.save({"step": 1, "payload": Payload("mkdir", marker)}, path / "meta.pt")
    for name, load in entry_points(path, tmp_path).items():
        with pytest.raises(CheckpointError, match="not loaded: meta.pt"):
            load()
        assert not marker.exists(), name


@pytest.mark.slow
def test_gather_on_the_command_line(tmp_path):
    path, marker = tmp_path / "ckpt_sharded", tmp_path / "ran"
    crafted_metadata(path, "system", marker)
    proc = subprocess.run([sys.executable, "parallel.py", "gather", str(path), str(tmp_path / "out.pt")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and not marker.exists()
    assert "not loaded" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


# ---- convert -------------------------------------------------------------------------------------------

def v1_checkpoint(path, **extra):
    """An old nanokd checkpoint as v1 wrote it: numpy's RNG state as the tuple np.random.get_state() returns."""
    np.random.seed(7)
    np.random.randn()
    state = np.random.get_state()
    m, _ = model_and_optimizer()
    torch.save({"format": "nanokd-ckpt-v1", "model": m.state_dict(), "model_config": {}, "step": 5,
                "rng": {"torch": torch.get_rng_state(), "numpy": state, "cuda": None}, **extra}, path)
    return m, state


@pytest.mark.parametrize("kind", PAYLOADS)
def test_convert_refuses_a_crafted_old_checkpoint(tmp_path, kind):
    old, marker = tmp_path / "old.pt", tmp_path / "ran"
    v1_checkpoint(old, config={"note": Payload(kind, marker)})
    torch.load(old, weights_only=False)   # how convert read it
    assert marker.exists()
    remove(marker)
    with pytest.raises(CheckpointError, match=r"old.pt was not converted: .*it names (posix|os)\.(mkdir|system)"):
        checkpoint.convert(str(old), str(tmp_path / "new.pt"))
    assert not marker.exists() and not (tmp_path / "new.pt").exists()


def test_convert_still_converts_what_v1_held(tmp_path):
    m, state = v1_checkpoint(tmp_path / "old.pt")
    checkpoint.convert(str(tmp_path / "old.pt"), str(tmp_path / "new.pt"))
    new = load_checkpoint(str(tmp_path / "new.pt"))
    assert torch.equal(new["model"]["weight"], m.weight) and new["step"] == 5
    np.random.seed(0)
    checkpoint.set_rng_state(new["rng"])
    after = np.random.rand(4), np.random.randn()
    np.random.set_state(state)
    assert np.array_equal(after[0], np.random.rand(4)) and after[1] == np.random.randn()
