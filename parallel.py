"""
Data parallelism, applied to a plain GPT from outside it (model.py knows nothing of it):

- DDP: every process holds the whole student, its grads and AdamW state. Simple and fastest
  while it fits (16 bytes per student parameter plus activations; README has the arithmetic).
- FSDP2 (`fully_shard`): parameters, grads and optimizer state sharded over processes, one
  unit per transformer block plus the root (embeddings, final norm, lm_head). For students
  (and optionally teachers) that outgrow DDP.

FSDP needs sharded checkpoints (each process writes its shard, torch.distributed.checkpoint);
they are written to a temp directory and swapped in, like the single-file ones, and can be
gathered into the usual single-file checkpoint:

    python parallel.py gather out/run/ckpt_sharded out/run/ckpt.pt

Resume and gather read a sharded checkpoint only through dcp_guard.py: nothing in the folder can run code.

A note on the fused loss: it reads `model.lm_head.weight` after the forward. FSDP2 does not
reshard the root unit after its forward, so that attribute is then the gathered weight, and its
gradient is reduce-scattered with the rest after backward (tests/test_parallel.py checks FSDP
against DDP through exactly this path).
"""

import contextlib
import copy
import os
import pickle
import shutil
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.filesystem import FileSystem
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import FULL, CheckpointError, disk_full, out_of_space, save_checkpoint, tensor_bytes
from dcp_guard import load_guarded, read_metadata, refused
from model import GPT, RMSNorm


def exit_cleanly(code=0):
    """End a process of a torchrun job: wait for every rank (none leaves while another still writes its
    checkpoint), leave the process group, then exit without the interpreter's teardown.

    Why not just return: a process group can outlive destroy_process_group (FSDP's device meshes and DTensor's
    sharding cache hold on to it; eval.py under plain torchrun showed it too), so it is only freed while the
    interpreter shuts down, and Gloo's worker threads can then be destroyed still running: a rank dies with
    "terminate called without an active exception" (SIGABRT) and a finished run exits non-zero. Everything
    worth keeping is on disk by now."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def wrap_ddp(model, device):
    """device: this process's own, as init_processes made it ("cuda:<local rank>" or "cpu").
    gradient_as_bucket_view: the .grad tensors are views into DDP's all-reduce buckets, so the gradients are
    held once, not twice (without it: a second fp32 copy of every gradient, +4 bytes per parameter)."""
    return DDP(model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
               gradient_as_bucket_view=True)


def apply_fsdp(model, compute_dtype=None):
    """Shard a GPT in place: each block is a unit (gathered just for its forward/backward), the root holds the rest.
    compute_dtype: the run's autocast dtype (torch.bfloat16, float16), None for an fp32 run.

    FSDP computes what DDP computes. DDP keeps fp32 weights and autocast casts each matmul's weight to bf16;
    here the blocks' matmul weights are gathered in bf16 (the same rounding, made once by FSDP, at half the
    all-gather bytes), while everything autocast leaves in fp32 under DDP stays fp32: the norms' weights (each
    RMSNorm its own small fp32 unit) and the root (embedding, final norm, lm_head), so the embedding's output,
    the residual stream and RoPE are fp32 as under DDP. (A bf16 param_dtype for the whole model would make
    them bf16 under FSDP only, and FSDP and DDP runs of one sweep would not be comparable.) Gradients are
    reduced, and accumulated over micro-steps, in fp32. A frozen bf16 teacher is gathered in bf16 either way."""
    # cast_forward_inputs=False: by default FSDP also casts a unit's inputs to param_dtype, which would make each
    # block's input (the residual stream) and RoPE's cos/sin bf16
    half = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    full_precision = MixedPrecisionPolicy()
    for block in model.layers:
        if compute_dtype is not None and next(block.parameters()).dtype == torch.float32:   # (a bf16 teacher: as it is)
            for m in block.modules():
                if isinstance(m, RMSNorm):
                    fully_shard(m, mp_policy=full_precision)
            fully_shard(block, mp_policy=half)
        else:
            fully_shard(block)
    fully_shard(model, mp_policy=full_precision)
    return model


@torch.no_grad()
def build_sharded(cfg, device, compute_dtype=None):
    """A GPT built on the meta device, sharded (apply_fsdp, for a run in compute_dtype), then each rank's shards
    materialised on `device` and initialised to exactly the values `GPT(cfg)` gives after the same
    torch.manual_seed, leaving the global
    generator where GPT(cfg) leaves it. Peak host memory is one parameter, not the whole fp32 model on every
    rank (32 GB at 8B).

    GPT(cfg) on a real device draws from the global CPU generator twice: each nn.Linear / nn.Embedding draws
    its own init as it is constructed (then overwritten), and GPT.reset_parameters draws again for every
    parameter. On the meta device neither draws, so both are replayed here, in the same order and shapes, one
    tensor at a time: a throwaway copy of each module that has its own reset_parameters, then each parameter
    drawn whole (so the generator advances as it would) with only this rank's rows kept."""
    with torch.device("meta"):
        model = GPT(cfg)
    for m in model.modules():   # registration order is construction order in model.py
        if m is not model and hasattr(m, "reset_parameters"):
            copy.deepcopy(m).to_empty(device="cpu").reset_parameters()
    apply_fsdp(model, compute_dtype)
    model.to_empty(device=device)
    for name, p in model.named_parameters():   # reset_parameters's order
        std = model.init_std(name)
        whole = torch.ones(p.shape) if std is None else torch.nn.init.normal_(torch.empty(p.shape), std=std)
        # every rank drew the same whole tensor, so each keeps its own rows with no communication
        p.to_local().copy_(distribute_tensor(whole, p.device_mesh, p.placements, src_data_rank=None).to_local())
    return model


def set_grad_sync(model, sync):
    """Gradient accumulation: communicate only on the last micro-step."""
    if isinstance(model, DDP):
        model.require_backward_grad_sync = sync
    elif hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 module
        model.set_requires_gradient_sync(sync)


def init_processes(device):
    """One process per device under torchrun (RANK set), else a single process.
    Returns (ddp, rank, world_size, device), the device made this process's own GPU."""
    if "RANK" not in os.environ:
        return False, 0, 1, device
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return True, dist.get_rank(), dist.get_world_size(), device


def full(x):
    """A tensor whole: an FSDP shard (DTensor) gathered, differentiably, so its gradient is reduce-scattered
    back; clip_grad_norm_'s sharded result too. Anything else is returned as it is."""
    return x.full_tensor() if isinstance(x, DTensor) else x


class _FailedWrites(FileSystem):
    """DCP's file system, remembering why a write failed: torch.save turns the OSError into an inline_container.cc
    RuntimeError, and DCP pickles each rank's error to gather it, which drops the OSError behind it."""
    errno = None

    @contextlib.contextmanager
    def create_stream(self, path, mode):
        with super().create_stream(path, mode) as stream:
            yield _RecordedWrites(stream, self)


class _RecordedWrites:
    def __init__(self, stream, fs):
        self._stream, self._fs = stream, fs

    def write(self, data):
        try:
            return self._stream.write(data)
        except OSError as e:
            self._fs.errno = e.errno
            raise

    def __getattr__(self, name):
        return getattr(self._stream, name)


def save_sharded(directory, model, optimizer, meta):
    """Every rank writes its shard; `meta` (step, data position, RNG, config) goes in rank 0's meta.pt."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    tmp = directory + ".tmp"
    if dist.get_rank() == 0 and os.path.exists(tmp):
        shutil.rmtree(tmp)
    dist.barrier()
    writer = FileSystemWriter(tmp)
    writer.fs = _FailedWrites()
    try:
        dcp.save({"model": model_sd, "optim": optim_sd}, storage_writer=writer)
        if dist.get_rank() == 0:
            torch.save(meta, os.path.join(tmp, "meta.pt"))
    except BaseException as e:   # DCP raises a CheckpointException (a BaseException) on every rank, all done writing
        err = disk_full(e) or (writer.fs.errno if writer.fs.errno in FULL else None)
        if err is None:
            raise
        if dist.get_rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(out_of_space(tmp, err, tensor_bytes((model_sd, optim_sd)),
                                           previous=find_sharded(directory) is not None)) from None
    if dist.get_rank() == 0:
        old = directory + ".old"
        if os.path.exists(directory):
            if os.path.exists(old):          # left by a kill during its removal below; `directory` is the whole one
                shutil.rmtree(old)
            os.replace(directory, old)       # a crash from here on leaves .old, which load_sharded falls back to
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def find_sharded(directory):
    for d in (directory, directory + ".old"):
        if os.path.exists(os.path.join(d, "meta.pt")):
            return d
    return None


def check_sharded(directory):
    """Vet a sharded checkpoint before anything in it is loaded: its .metadata may name only DCP's own record types
    and files inside the folder (dcp_guard.py), and meta.pt holds tensors and plain values (weights_only).
    Returns meta.pt's dict; CheckpointError otherwise."""
    read_metadata(directory)
    try:
        return torch.load(os.path.join(directory, "meta.pt"), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, OSError, RuntimeError) as e:
        raise refused(directory, f"meta.pt: {str(e).splitlines()[0][:300]}") from e


def load_sharded(directory, model, optimizer):
    """Load shards into an already-sharded model and optimizer; returns the meta dict."""
    directory = find_sharded(directory)
    meta = check_sharded(directory)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    load_guarded(directory, state)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return meta


def full_model_state_dict(model):
    """The whole (unsharded) state dict on CPU, on rank 0 only; a collective, so call it on every rank."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def gather(directory, out_path):
    """Turn a sharded checkpoint into the single-file format eval.py, export.py and teachers read (no process group needed)."""
    directory = find_sharded(directory) or sys.exit(f"no sharded checkpoint (meta.pt) in {directory}")
    try:
        meta = check_sharded(directory)
        state = {}   # rebuilt from the metadata, as DCP's dcp_to_torch_save does, but through the guarded planner
        load_guarded(directory, state, whole=True)
    except CheckpointError as e:
        sys.exit(str(e))
    save_checkpoint(out_path, {**meta, "model": state["model"], "optimizer": None})
    print(f"gathered {directory} -> {out_path} (step {meta['step']})")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "gather":
        sys.exit("usage: python parallel.py gather SHARDED_DIR OUT_CKPT")
    gather(sys.argv[2], sys.argv[3])
