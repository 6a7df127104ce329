"""
Checkpoints: one file per run, written so that a crash at any moment leaves the
previous one whole (write a temp file, fsync, rename over the old one).

A checkpoint is a dict:
    format        "nanokd-ckpt-v1"
    model         student state_dict (plain names, no DDP/compile prefixes)
    model_config  GPTConfig as a dict
    tokenizer     tokenizer name, n_vocab its real vocabulary (model rows past it are padding)
    config        the run's resolved config (train.py globals)
    step, tokens_seen
    optimizer, data_state, rng   (only needed to resume)
    git_commit
"""

import os
import tempfile

import torch

from model import GPT, GPTConfig

FORMAT = "nanokd-ckpt-v1"


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(path, ckpt):
    ckpt = {"format": FORMAT, **ckpt}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half of one
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a nanokd checkpoint (format {found!r}, expected {FORMAT!r})")
    return ckpt


def clean_state_dict(state_dict):
    """Drop the prefixes DDP ('module.') and torch.compile ('_orig_mod.') add to parameter names."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def model_from_checkpoint(ckpt, device="cpu"):
    """Build the GPT a checkpoint (dict or path) describes and load its weights."""
    if isinstance(ckpt, (str, os.PathLike)):
        ckpt = load_checkpoint(ckpt)
    model = GPT(GPTConfig(**ckpt["model_config"]))
    try:
        model.load_state_dict(clean_state_dict(ckpt["model"]))
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit its model config: {e}") from e
    return model.to(device)
