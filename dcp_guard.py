"""
Reading a torch.distributed.checkpoint (DCP) folder as data: nothing in it may run code or name a file
outside it. parallel.py reads sharded checkpoints only through what is here.

DCP trusts its files. It reads `.metadata` with plain pickle.load, and each BYTE_IO item of a `.distcp`
file (a sharded optimizer's param_groups: lr, betas, ...) with torch.load(weights_only=False). A crafted
folder runs its code through either, and its `.metadata` chooses which items are BYTE_IO, so saving none
of our own as bytes would not help. Here instead:

- read_metadata unpickles `.metadata` with an exact allow-list of the record types DCP writes. Each
  (module, name) is looked up in the table below, never imported or resolved attribute by attribute:
  pickle protocol 4 resolves a dotted name, so `os.system` would pass as a name "in" any allowed module
  that happens to import os. The shard files it names must be plain names inside the folder.
- GuardedReader is DCP's own FileSystemReader with that metadata reader.
- GuardedLoadPlanner (resume into a live model) and GuardedGatherPlanner (rebuild the whole state from the
  metadata, as dcp_to_torch_save does) read every BYTE_IO item with weights_only=True.
"""

import collections
import io
import os
import pathlib
import pickle

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, metadata as dcp_metadata
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata, StorageMeta, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

from checkpoint import CheckpointError, what_was_refused

# every global a `.metadata` written by DCP names (found by recording a real FSDP and a single-process save)
ALLOWED = {
    **{("torch.distributed.checkpoint.metadata", n): getattr(dcp_metadata, n) for n in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")},
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _StorageInfo,
    ("torch", "Size"): torch.Size,
    ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
    ("pathlib", "PosixPath"): pathlib.PosixPath,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", n): getattr(torch, n) for n in dir(torch) if isinstance(getattr(torch, n), torch.dtype)},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"its .metadata names {module}.{name}, which is not one of DCP's record types")
        return ALLOWED[module, name]


def refused(directory, why):
    return CheckpointError(f"sharded checkpoint {directory} was not loaded: {why} (unpickling it could run code "
                           "from whoever wrote the folder)")


def read_metadata(directory):
    """The folder's `.metadata`, unpickled with only DCP's record types and checked to name files inside it."""
    try:
        with open(os.path.join(directory, ".metadata"), "rb") as f:
            md = _MetadataUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError) as e:
        raise refused(directory, e) from e
    if not isinstance(md, Metadata) or not isinstance(md.state_dict_metadata, dict) or \
            not isinstance(md.storage_data, dict):
        raise refused(directory, f"its .metadata holds a {type(md).__name__}, not DCP's Metadata")
    for fqn, item in md.state_dict_metadata.items():
        if not isinstance(item, (TensorStorageMetadata, BytesStorageMetadata)):
            raise refused(directory, f"its .metadata describes {fqn!r} as a {type(item).__name__}")
    for info in md.storage_data.values():
        name = getattr(info, "relative_path", None)
        if not isinstance(info, _StorageInfo) or not isinstance(name, str) or name in ("", ".", "..") \
                or os.path.basename(name) != name or "\\" in name:
            raise refused(directory, f"its .metadata points at {name!r}, not a file inside the folder")
    return md


class GuardedReader(FileSystemReader):
    """DCP's FileSystemReader, reading `.metadata` through read_metadata above (also when DCP asks for a rank's
    own metadata file: nanokd writes none, so the same vetted `.metadata` is the only answer)."""

    def read_metadata(self, *args, **kwargs):
        md = read_metadata(os.fspath(self.path))
        if getattr(md, "storage_meta", None) is None:
            md.storage_meta = StorageMeta()
        md.storage_meta.load_id = self.load_id
        return md


class _BytesAsData:
    """A BYTE_IO item read as data (weights_only), then handed on to DCP's planner. The planner itself unpickles
    with weights_only=False, so it gets the value re-saved by us: a pickle of plain values and tensors only."""

    def load_bytes(self, read_item, value):
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise refused(self.directory, f"its item {read_item.dest_index.fqn!r} holds Python objects other than "
                                          f"tensors and plain values ({what_was_refused(e)})") from e
        clean = io.BytesIO()
        torch.save(obj, clean)
        clean.seek(0)
        super().load_bytes(read_item, clean)


class GuardedLoadPlanner(_BytesAsData, DefaultLoadPlanner):
    def __init__(self, directory):
        super().__init__()
        self.directory = directory


class GuardedGatherPlanner(_BytesAsData, _EmptyStateDictLoadPlanner):
    def __init__(self, directory):
        super().__init__()
        self.directory = directory


def load_guarded(directory, state, whole=False):
    """dcp.load through the reader and planners above. whole=True: `state` is an empty dict, filled with every item
    the checkpoint holds, in one process (gather); otherwise it is a live model's and optimizer's state to fill."""
    reader = GuardedReader(directory)
    try:
        if whole:   # what dcp_to_torch_save does, with the guarded planner
            _load_state_dict(state, reader, planner=GuardedGatherPlanner(directory), no_dist=True)
        else:
            dcp.load(state, storage_reader=reader, planner=GuardedLoadPlanner(directory))
    except BaseException as e:   # DCP wraps each rank's error in a CheckpointException (a BaseException)
        refusal = _refusal_in(e)
        if refusal is not None:
            raise refusal from None
        raise


def _refusal_in(exc):
    """The CheckpointError behind an exception DCP raised (it wraps each rank's in a CheckpointException), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, CheckpointError):
            return exc
        for failure in (getattr(exc, "failures", None) or {}).values():
            found = _refusal_in(failure[0] if isinstance(failure, tuple) else failure)
            if found is not None:
                return found
        exc = exc.__cause__ or exc.__context__
    return None
