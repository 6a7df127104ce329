"""
Checkpoints: one file per run, written so that a crash at any moment leaves the
previous one whole (write a temp file, fsync, rename over the old one), with the file
mode the umask gives; a full disk is a one-line error saying how much was needed and free.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
torch.load(weights_only=True): a checkpoint is a shared artifact (a lab hands its teacher to
another), and unpickling arbitrary objects would run whatever code its writer put in it.
    format        "nanokd-ckpt-v2" (v1, before this rule, held numpy objects; see `convert` below)
    model         student state_dict (plain names, no DDP/compile prefixes)
    model_config  GPTConfig as a dict
    tokenizer     tokenizer name, n_vocab its real vocabulary (model rows past it are padding)
    config        the run's resolved config (train.py globals)
    step, tokens_seen
    optimizer, data_state, rng   (only needed to resume; rng as rng_state() makes it)
    git_commit

A checkpoint from before v2 is rewritten once with
    python checkpoint.py convert OLD.pt NEW.pt
which admits only what v1 files held (numpy's RNG state as numpy objects), so it too runs no code.
"""

import errno
import os
import pickle
import re
import shutil
import sys
import tempfile

import numpy as np
import torch
from torch.distributed.tensor import DTensor

from model import GPT, GPTConfig, config_from_preset

FORMAT = "nanokd-ckpt-v2"
OLD_FORMATS = ("nanokd-ckpt-v1",)


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(path, ckpt):
    ckpt = {"format": FORMAT, **ckpt}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes it 0600; a checkpoint is shared like any file the run writes
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half of one
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        err = disk_full(e)
        if err is None:
            raise
        raise CheckpointError(out_of_space(path, err, tensor_bytes(ckpt), previous=os.path.exists(path))) from None


def _umask():
    mask = os.umask(0)   # the only way to read it is to set it
    os.umask(mask)
    return mask


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)   # no space, over quota, over the file size limit


def disk_full(exc):
    """ENOSPC, EDQUOT or EFBIG behind a failed write, or None. torch.save reports a failed write of its zip
    writer as a RuntimeError from inline_container.cc, with the OSError only as the exception's context."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in FULL:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


def out_of_space(path, err, needed, previous):
    """One line: which file, how big it was to be, how much space is free, and that nothing good was lost."""
    directory = os.path.dirname(os.path.abspath(path))
    return (f"could not write {path}: {os.strerror(err)} ({errno.errorcode[err]}); it needs about "
            f"{needed / 1e6:,.1f} MB and {shutil.disk_usage(directory).free / 1e6:,.1f} MB are free in {directory}; "
            f"{'the previous checkpoint there is' if previous else 'nothing was'} left unchanged")


def tensor_bytes(obj, seen=None):
    """The bytes of every distinct tensor storage in a checkpoint (this process's shard of a DTensor): what its file
    will be, give or take its pickle."""
    seen = set() if seen is None else seen
    if isinstance(obj, DTensor):
        obj = obj.to_local()
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        key = (obj.device, storage.data_ptr(), storage.nbytes())
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    return 0


def convert_hint(path):
    return (f"if it is a nanokd checkpoint from before {FORMAT}, convert it once with: "
            f"python checkpoint.py convert {path} NEW.pt")


def load_checkpoint(path, map_location="cpu", mmap=False):
    """Tensors and plain Python values only (weights_only): nothing in the file can run code here.
    mmap: map the tensors instead of reading them (a teacher cast to bf16 then never holds an fp32 copy in RAM)."""
    if not os.path.isfile(path):
        from data.hf_tokenizer import local_folder_hint
        raise CheckpointError(f"checkpoint not found: {path}" + (
            " (a folder, but not a Hugging Face model folder: it has no config.json)" if os.path.isdir(path)
            else local_folder_hint(path)))
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):   # torch's message names the refused global; without one the bytes are junk
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (UnpicklingError: {e})") from e
        raise CheckpointError(f"{path} holds Python objects other than tensors and plain values, so it was not loaded "
                              f"(unpickling them could run code from whoever wrote the file); {convert_hint(path)}") from e
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    if found in OLD_FORMATS:
        raise CheckpointError(f"{path} is a {found} checkpoint; {convert_hint(path)}")
    if found != FORMAT:
        raise CheckpointError(f"{path} is not a nanokd checkpoint (format {found!r}, expected {FORMAT!r})")
    return ckpt



def load_for_resume(path, model_config, map_location="cpu"):
    """A single-file checkpoint to continue a run from: it must hold this run's model and its optimizer."""
    ck = load_checkpoint(path, map_location=map_location)
    if ck["model_config"] != model_config:
        raise CheckpointError(f"{path} holds a different model than this config asks for:\n  {ck['model_config']}\n  {model_config}")
    if ck["optimizer"] is None:
        raise CheckpointError(f"{path} has no optimizer state (a gathered FSDP checkpoint?); resume FSDP runs with parallel='fsdp'")
    return ck

def rng_state():
    """Every RNG a resumed run must continue, as tensors and plain values (np.random's state is a tuple of an
    ndarray and numbers; an ndarray would need unpickling)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}


def set_rng_state(rng):
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


# What a nanokd-ckpt-v1 file holds beyond what weights_only admits: numpy's RNG state, a tuple with a uint32
# ndarray (numpy 1 and 2 name the array's rebuild function differently). Nothing else is let through.
def _v1_globals():
    from numpy._core.multiarray import _reconstruct
    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            type(np.dtype(np.uint32))]


def convert(old_path, new_path):
    """Rewrite a pre-v2 checkpoint (numpy RNG state pickled as numpy objects) in v2. The old file is unpickled with
    torch's weights_only unpickler, admitting only the numpy types v1 files held: nothing in it can run code."""
    try:
        with torch.serialization.safe_globals(_v1_globals()):
            ck = torch.load(old_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{old_path} was not converted: it holds Python objects other than tensors, plain values "
                              f"and numpy's RNG state, which no nanokd checkpoint held (unpickling them could run "
                              f"code from whoever wrote the file): {what_was_refused(e)}") from e
    except Exception as e:
        raise CheckpointError(f"{old_path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ck, dict) or ck.get("format") not in OLD_FORMATS + (FORMAT,):
        raise CheckpointError(f"{old_path} is not a nanokd checkpoint "
                              f"(format {ck.get('format') if isinstance(ck, dict) else type(ck).__name__})")
    rng = ck.get("rng")
    if rng is not None and not isinstance(rng.get("numpy"), dict):
        name, keys, pos, has_gauss, cached = rng["numpy"]
        rng["numpy"] = {"name": name, "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    ck["format"] = FORMAT
    save_checkpoint(new_path, ck)
    load_checkpoint(new_path)   # proves the result loads the safe way
    print(f"converted {old_path} -> {new_path} ({FORMAT})")


def what_was_refused(e):
    """What torch's weights_only message says was refused, without its advice to allow it."""
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    return f"it names {found.group(1)}" if found else str(e).strip().splitlines()[-1][:300]


def clean_state_dict(state_dict):
    """Drop the prefixes DDP ('module.') and torch.compile ('_orig_mod.') add to parameter names."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def model_from_checkpoint(ckpt, device="cpu", dtype=None):
    """Build the GPT a checkpoint (dict or path) describes and load its weights, in `dtype` if given.
    The model is built on the meta device and takes the checkpoint's tensors (cast one at a time), so a bf16
    teacher never holds an fp32 copy of itself: with load_checkpoint(mmap=True) the fp32 file is only mapped."""
    if isinstance(ckpt, (str, os.PathLike)):
        ckpt = load_checkpoint(ckpt, mmap=True)
    with torch.device("meta"):
        model = GPT(GPTConfig(**ckpt["model_config"]))
    state = {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
             for k, v in clean_state_dict(ckpt["model"]).items()}
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit its model config: {e}") from e
    if model.config.tie_embeddings:   # assign=True set the two names' parameters one by one: tie them again
        model.lm_head.weight = model.embed_tokens.weight
    return model



def load_teacher(path, *, tokenizer, n_vocab, block_size, preset="", device="cpu", dtype=None, meta=False):
    """The frozen teacher for a student, checked against the student's vocabulary and context, and against
    `preset` when one is named. meta=True builds only its shape, on the meta device (dry runs).
    Frozen, so no fp32 master weights: with dtype=bf16 it is built straight in bf16 from the mapped file.
    `path` may also be a Hugging Face folder (config.json, safetensors, tokenizer.json): imported directly."""
    from hf_checkpoint import is_hf_folder, model_from_hf, read_hf_folder
    if is_hf_folder(path):
        from data.tokenizer import padded_vocab_size
        try:
            if meta:   # a dry run: the shape from config.json (checked against the weights' headers), nothing loaded
                with torch.device("meta"):
                    return GPT(read_hf_folder(path)[1]).eval().requires_grad_(False)
            hf_model, ck = model_from_hf(path, dtype=torch.float32 if dtype is None else dtype, device=device,
                                         vocab_rows=padded_vocab_size(n_vocab))
        except (ValueError, OSError) as e:   # UnsupportedHFModel / BadHFFolder name the file and field
            raise CheckpointError(str(e)) from e
        if ck["tokenizer"] is None:
            raise CheckpointError(f"teacher folder {path} has no tokenizer.json: the student's data must be tokenized "
                                  "with the teacher's own tokenizer (--tokenizer hf), so nanokd needs it")
    else:
        hf_model, ck = None, load_checkpoint(path, mmap=True)
    cfg = ck["model_config"]
    if ck["tokenizer"] != tokenizer or ck["n_vocab"] != n_vocab:
        raise CheckpointError(f"teacher {path} uses tokenizer {ck['tokenizer']!r} ({ck['n_vocab']} tokens) but the "
                              f"student uses {tokenizer!r} ({n_vocab} tokens); KD needs the same vocabulary")
    if cfg["block_size"] < block_size:
        raise CheckpointError(f"teacher {path} has a context of {cfg['block_size']} tokens, shorter than the "
                              f"student's block_size={block_size}: it cannot score the student's sequences (lower block_size)")
    if preset and config_from_preset(preset, cfg["vocab_size"], cfg["block_size"]) != GPTConfig(**cfg):
        raise CheckpointError(f"teacher checkpoint {path} does not hold a {preset!r} model: {cfg}; teacher_model="
                              f"{preset!r} (set by the config?) names the preset it must be: pass --teacher_model= "
                              f"to drop that check, e.g. for a Hugging Face teacher")
    if hf_model is not None:
        return hf_model
    if meta:
        with torch.device("meta"):
            teacher = GPT(GPTConfig(**cfg))
    else:
        teacher = model_from_checkpoint(ck, device, dtype)
    return teacher.eval().requires_grad_(False)

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "convert":
        sys.exit("usage: python checkpoint.py convert OLD.pt NEW.pt")
    try:
        convert(sys.argv[2], sys.argv[3])
    except CheckpointError as e:
        sys.exit(f"checkpoint.py convert: {e}")
