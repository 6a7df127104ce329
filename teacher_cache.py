"""
Run a teacher once over the data a run will train on, and write its sparse targets (kd_cache.py has the
format), so every student of that teacher trains from the files instead of running the teacher again:

    python teacher_cache.py --teacher_ckpt=out/teacher/ckpt.pt --out=out/cache_top16 --method=top-k --k=16
    python teacher_cache.py --teacher_ckpt=... --out=out/cache_s16 --method=sampled --k=16   # 16 draws
    torchrun --standalone --nproc_per_node=8 teacher_cache.py ...    # each rank writes its own shards
    python train.py configs/... --teacher_cache=out/cache_top16 --alpha=0.5 --top_k=16       # a student

Methods. "top-k": the k largest teacher logits per token, their ids, the full log-normaliser and the tail
mass, so the authors' three top-k variants are exact for any run top_k ≤ k (and k = V gives the full forward
KL). "sampled": k draws from the teacher's softmax(t / T), kept as distinct ids and counts: an unbiased
estimate of the forward-KL gradient (Anshumann et al., ACL 2025).

Keys. Rows are keyed by the loader's windows (global window index, position), not by batches, so one cache
serves every seed, batch order and world size. With --packing=True (for students trained with packing=True)
they are keyed by document piece instead (data/packing.py's numbering, position within the piece): the teacher
runs on each piece alone, attention within it and positions from 0, exactly what it computes for that piece in
any packed row, so every packing, seed and world size reads the same rows (kd_cache.py). A shard covers a fixed range of windows, whatever the number
of ranks; rank r writes shards r, r + W, r + 2W, ... Rerunning the same command skips shards already written
with the same identity (resume), and refuses a folder that holds another cache's shards.

Writes nothing until it has checked that the free space holds every shard this rank will write.
"""

import json
import os
import shutil
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist

from checkpoint import CheckpointError, load_teacher
from configurator import ConfigError, apply_overrides
from data.loader import open_training_data
from data.tokenfile import TokenFileError
from fused_kd import _to_fp32_logits
from kd_cache import (IDENTITY, METHODS, SHARD_NAME, VALUE_DTYPES, VERSION, CacheError, bytes_per_row, count_dtype,
                      describe_data, file_sha256, id_dtype, piece_identity, read_header, write_shard)
from parallel import exit_cleanly, init_processes

# -----------------------------------------------------------------------------
teacher_ckpt = ""            # the teacher (a nanokd checkpoint or a Hugging Face folder)
teacher_model = ""           # its preset, checked against the checkpoint when set
data_dir = "data/embedded_bytes"
tokenizer = "bytes"
tokenizer_path = ""
block_size = 256             # the students' block_size: the cache holds windows of this length
packing = False              # the students' packing: True keys rows by document piece (data/packing.py)
out = ""                     # the cache folder
method = "top-k"             # "top-k" or "sampled"
k = 16                       # top-k: ids kept per token; sampled: draws per token
temperature = 1.0            # the students' T: top-k stores lse at T; sampled draws from softmax(t / T)
value_dtype = "float32"      # top-k logits on disk: "float32" (exact), "float16" or "bfloat16" (half the bytes)
units_per_shard = 0          # windows per shard; 0 = about 256 MiB per shard
batch_size = 16              # windows per teacher forward
chunk_rows = 1024            # rows of [rows, V] logits at a time (memory)
sample_seed = 0              # sampled: shard j draws with seed sample_seed·1,000,003 + j (any world size)
device = "auto"
dtype = "auto"               # as train.py: bfloat16 autocast on GPUs that have it, else float32
# -----------------------------------------------------------------------------
_DEFAULTS = {key: value for key, value in globals().items() if not key.startswith("_") and
             isinstance(value, (int, float, str))}


def check_settings():
    if not teacher_ckpt or not out:
        raise ConfigError("--teacher_ckpt and --out are required")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(packing, bool):
        raise ConfigError(f"packing must be True or False, got {packing!r}")
    if value_dtype not in VALUE_DTYPES:
        raise ConfigError(f"value_dtype must be one of {VALUE_DTYPES}, got {value_dtype!r}")
    if not 1 <= k <= 65535:
        raise ConfigError(f"k must be in [1, 65535], got {k}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0 (T = 0, hard labels, needs no cache), got {temperature}")
    for key, lo in (("block_size", 1), ("units_per_shard", 0), ("batch_size", 1), ("chunk_rows", 1), ("sample_seed", 0)):
        if globals()[key] < lo:
            raise ConfigError(f"{key} must be >= {lo}, got {globals()[key]}")


def teacher_sha256(path):
    """The checkpoint file's sha256; a Hugging Face folder: the sha256 of its files' names and hashes."""
    if os.path.isfile(path):
        return file_sha256(path)
    import hashlib
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        if os.path.isfile(os.path.join(path, name)):
            h.update(f"{name} {file_sha256(os.path.join(path, name))}\n".encode())
    return h.hexdigest()


def unit_inputs(loader, units):
    """The teacher's inputs for these units, [len(units), L] int64, and where each of their L positions goes
    among the units' rows (-1: padding, no row): a window is T rows; a piece of n targets is its n input
    tokens alone, right-padded to the longest piece of the batch (causal: padding after it changes nothing)."""
    if not packing:
        x = np.stack([loader._window(w)[:-1] for w in units]).astype(np.int64)
        return x, np.arange(x.size)
    lens = loader.piece_len[units].astype(np.int64)
    x = np.zeros((len(units), int(lens.max())), dtype=np.int64)
    dest = np.full(x.shape, -1, dtype=np.int64)
    row = 0
    for i, p in enumerate(units):
        s, first, n = int(loader.piece_shard[p]), int(loader.piece_first[p]), int(lens[i])
        x[i, :n] = np.asarray(loader.shards[s][first:first + n], dtype=np.int64)
        dest[i, :n] = np.arange(row, row + n)
        row += n
    return x, dest.reshape(-1)


def teacher_rows(teacher, x, V, half):
    """The teacher's fp32 logits [B·T, V] of a batch of windows, chunk by chunk (yields row ranges)."""
    with torch.no_grad(), (torch.autocast(x.device.type, dtype=half) if half else torch.autocast(x.device.type, enabled=False)):
        h = teacher(x)
    h = h.reshape(-1, h.shape[-1])
    w = teacher.lm_head.weight[:V]
    if half:
        h, w = h.to(half), w.to(half)
    else:
        h, w = h.float(), w.float()
    for i0 in range(0, h.shape[0], chunk_rows):
        rows = h[i0:i0 + chunk_rows]
        logits = torch.empty(rows.shape[0], V, device=x.device, dtype=torch.float32)
        _to_fp32_logits(rows, w, logits)
        yield i0, logits


def top_k_targets(t, T, k):
    """ids, raw logits (sorted descending), lse of t/T, and the tail mass outside the k, summed as a tail."""
    z = t / T
    vals, ids = z.topk(min(k, t.shape[1]), dim=-1)
    lse = torch.logsumexp(z, -1)
    kept = torch.zeros_like(z, dtype=torch.bool).scatter_(1, ids, True)
    tail = (z - lse[:, None]).exp().masked_fill(kept, 0.0).sum(-1)
    return ids, t.gather(1, ids), lse, tail


def sampled_targets(t, T, k, gen=None):
    """k draws from softmax(t / T): the distinct ids of each row (ascending) and their counts, padded with count 0."""
    q = torch.softmax(t / T, -1)
    draws = torch.multinomial(q, k, replacement=True, generator=gen).sort(-1).values
    new = torch.ones_like(draws, dtype=torch.bool)
    new[:, 1:] = draws[:, 1:] != draws[:, :-1]
    slot = new.long().cumsum(-1) - 1
    ids = torch.zeros_like(draws).scatter_(1, slot, draws)
    counts = torch.zeros_like(draws).scatter_add_(1, slot, torch.ones_like(draws))
    return ids, counts


def main(argv):
    global device, dtype, units_per_shard
    globals().update(_DEFAULTS)   # (so the tests can call main more than once in one process)
    try:
        apply_overrides(globals(), argv)
        check_settings()
    except (ConfigError, ValueError, OSError) as e:
        sys.exit(f"teacher_cache.py: config error: {e}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ddp, rank, world_size, device = init_processes(device)
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    half = None if dtype == "float32" else getattr(torch, dtype)

    def fail(msg):
        print(f"teacher_cache.py: error: {msg}", file=sys.stderr, flush=True)
        if ddp:
            dist.destroy_process_group()
        sys.exit(1)

    try:   # the loader numbers the windows exactly as training will (batch 1: any window count will do)
        loader, n_vocab, (tok_name, _) = open_training_data(data_dir, 1, block_size, 0, 1, 0, tokenizer,
                                                            tokenizer_path or teacher_ckpt, packing)
        teacher = load_teacher(teacher_ckpt, tokenizer=tok_name, n_vocab=n_vocab, block_size=block_size,
                               preset=teacher_model, device=device, dtype=half)
    except (ValueError, OSError, CheckpointError) as e:
        fail(str(e))
    if method == "sampled" and k > n_vocab * 64:
        fail(f"k={k} draws for a vocabulary of {n_vocab}: use top-k with k = V instead")
    kk = min(k, n_vocab) if method == "top-k" else k
    n_units = loader.n_pieces if packing else loader.n_windows
    # rows before each unit: T per window, a piece's targets per piece
    unit_row = np.concatenate([[0], np.cumsum(loader.piece_len, dtype=np.int64)]) if packing else \
        np.arange(n_units + 1, dtype=np.int64) * block_size
    row_bytes = bytes_per_row(method, kk, n_vocab, value_dtype)
    if units_per_shard == 0:
        units_per_shard = max(1, (256 << 20) // (row_bytes * block_size))
    n_shards = -(-n_units // units_per_shard)
    identity = dict(format="nanokd-teacher-cache", version=VERSION, method=method, k=kk, temperature=float(temperature),
                    value_dtype=value_dtype, tokenizer=tok_name, n_vocab=n_vocab, keying="chunk" if packing else "window", block_size=block_size,
                    data=describe_data(loader.paths), n_units=n_units, n_shards=n_shards, units_per_shard=units_per_shard,
                    teacher={"path": os.path.abspath(teacher_ckpt), "sha256": teacher_sha256(teacher_ckpt),
                             "model_config": asdict(teacher.config),
                             "dtype": dtype, "device_type": device.split(":")[0]},
                    sample_seed=sample_seed, pieces=piece_identity(loader) if packing else None)

    os.makedirs(out, exist_ok=True)
    mine = [j for j in range(n_shards) if j % world_size == rank]
    todo = []
    for j in mine:   # resume: a shard already written with this identity is kept (its checksum is checked on read)
        path = os.path.join(out, SHARD_NAME.format(j))
        if os.path.exists(path):
            try:
                h, _ = read_header(path)
            except CacheError as e:
                fail(f"{e}; delete it to rewrite it")
            diff = [key for key in IDENTITY if h.get(key) != identity[key]]
            if diff:
                fail(f"{path} belongs to another cache (differs in {', '.join(diff)}); use another --out or empty {out}")
            continue
        todo.append(j)
    T = block_size

    def shard_units(j):
        return j * units_per_shard, min(n_units, (j + 1) * units_per_shard)

    def rows_of(j):
        u0, u1 = shard_units(j)
        return int(unit_row[u1] - unit_row[u0])
    need = sum(rows_of(j) * row_bytes + 8 * units_per_shard + 65536 for j in todo)
    free = shutil.disk_usage(out).free
    if need > free:
        fail(f"this rank's {len(todo)} shard(s) need {need / 1e9:.2f} GB, {out} has {free / 1e9:.2f} GB free")
    if rank == 0:
        print(f"teacher_cache: {method} k={kk} T={temperature} over {n_units:,} "
              f"{'document pieces of at most' if packing else 'windows of'} {T} tokens "
              f"({unit_row[-1]:,} tokens, {row_bytes} B/token, {unit_row[-1] * row_bytes / 1e9:.3f} GB) in {n_shards} "
              f"shards; {world_size} rank(s); {len(mine) - len(todo)} of rank 0's {len(mine)} already done", flush=True)

    teacher.eval()
    t0, done_rows, todo_rows = time.time(), 0, sum(rows_of(j) for j in todo)
    for j in todo:
        u0, u1 = shard_units(j)
        rows = rows_of(j)
        gen = torch.Generator(device=device).manual_seed(sample_seed * 1_000_003 + j)
        ids = np.empty((rows, kk), dtype=id_dtype(n_vocab))
        if method == "top-k":
            vals_np = np.empty((rows, kk), dtype=np.uint16 if value_dtype == "bfloat16" else np.dtype(value_dtype))
            lse_np, tail_np = np.empty(rows, np.float32), np.empty(rows, np.float32)
        else:
            counts_np = np.empty((rows, kk), dtype=count_dtype(kk))
        for b0 in range(u0, u1, batch_size):
            b1 = min(u1, b0 + batch_size)
            x, dest = unit_inputs(loader, np.arange(b0, b1))
            dest = torch.from_numpy(dest + np.where(dest >= 0, unit_row[b0] - unit_row[u0], 0))
            for i0, t in teacher_rows(teacher, torch.from_numpy(x).to(device), n_vocab, half):
                r = dest[i0:i0 + t.shape[0]]
                t, r = t[(r >= 0).to(t.device)], r[r >= 0].numpy()   # padding of a batch of pieces: no row
                if method == "top-k":
                    i, v, lse, tail = top_k_targets(t, temperature, kk)
                    ids[r] = i.cpu().numpy()
                    v = v.to(getattr(torch, value_dtype)).cpu()
                    vals_np[r] = v.view(torch.int16).numpy().view(np.uint16) if value_dtype == "bfloat16" else v.numpy()
                    lse_np[r], tail_np[r] = lse.cpu().numpy(), tail.cpu().numpy()
                else:
                    i, c = sampled_targets(t, temperature, kk, gen)
                    ids[r], counts_np[r] = i.cpu().numpy(), c.cpu().numpy()
            done_rows += int(unit_row[b1] - unit_row[b0])
            el = time.time() - t0
            if rank == 0 and (b1 == u1 or (b0 - u0) // batch_size % 16 == 15):
                rate = done_rows / max(el, 1e-9)
                print(f"shard {j + 1}/{n_shards} | rank 0: {done_rows:,}/{todo_rows:,} tokens | {rate:,.0f} tok/s | "
                      f"ETA {(todo_rows - done_rows) / max(rate, 1e-9) / 60:.1f} min", flush=True)
        arrays = {"ids": ids, "logits": vals_np, "lse": lse_np, "tail": tail_np} if method == "top-k" else \
            {"ids": ids, "counts": counts_np}
        where = {"shard": j, "unit_start": u0, "unit_end": u1}
        if packing:
            arrays["piece_len"] = loader.piece_len[u0:u1].astype("<i4")
            where.update(row_start=int(unit_row[u0]), row_end=int(unit_row[u1]))
        write_shard(os.path.join(out, SHARD_NAME.format(j)), {**identity, **where}, arrays)
    if ddp:
        dist.barrier()   # every rank's shards on disk before rank 0 measures them
    if rank == 0:   # written last: sweep.py counts the cache done when it exists
        on_disk = sum(os.path.getsize(os.path.join(out, SHARD_NAME.format(j))) for j in range(n_shards))
        summary = dict(method=method, k=kk, value_dtype=value_dtype, n_vocab=n_vocab, tokens=int(unit_row[-1]),
                       bytes=on_disk, bytes_per_token=on_disk / int(unit_row[-1]), packing=packing, minutes_rank0=(time.time() - t0) / 60,
                       world_size=world_size)
        with open(os.path.join(out, "summary.json.tmp"), "w") as f:
            json.dump(summary, f, indent=2)
        os.replace(os.path.join(out, "summary.json.tmp"), os.path.join(out, "summary.json"))
        print(f"teacher_cache: wrote {out} ({on_disk / 1e6:.1f} MB, {summary['bytes_per_token']:.1f} B/token) "
              f"in {summary['minutes_rank0']:.1f} min", flush=True)
    if ddp:
        exit_cleanly(0)


if __name__ == "__main__":
    main(sys.argv[1:])
