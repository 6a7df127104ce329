"""
The teacher cache on disk, and its reader: sparse teacher targets per training token, written once by
teacher_cache.py and read by train.py (teacher_cache=DIR) in any batch order, seed and world size.

Keying. A token's teacher output depends only on the tokens before it in its sequence, so the cache is
keyed by the sequence, not by the batch that happens to hold it: a *unit* is one sequence the loader can
hand out, and a row is (unit, position).
  keying "window" (packing=False): a unit is one of data/loader.py's windows, numbered as the loader
      numbers them (train files in sorted order, shard by shard, window by window), so the key is (shard,
      window) folded into one global window index; unit u's rows are [u·T, (u+1)·T), T = block_size.
  keying "chunk" (packing=True): a unit is one of data/packing.py's pieces (a document, or a row-length chunk
      of a long one), numbered in file order as PackedLoader numbers them; the teacher ran on each piece alone
      (attention within it, positions from 0), which is what it computes for that piece inside any packed row,
      so any packing, seed, batch order and world size reads the same rows. A piece of n targets has n rows,
      stored back to back; each shard also stores its pieces' lengths ("piece_len"). The header's "pieces"
      records what decides the pieces (block size, the document mark) and a hash of the piece table, which a
      run's loader must reproduce. A packed batch's targets are assembled piece by piece; padding gets filler
      rows (a valid distribution, never scored).

A cache folder holds shard_00000.tkc, shard_00001.tkc, ... Each shard covers a fixed range of units
(independent of the number of ranks that wrote it) and is one file:

    8 bytes   magic b"NANOKDTC"
    8 bytes   header length n (uint64, little-endian)
    n bytes   header, UTF-8 JSON (padded with spaces to a multiple of 64)
    payload   the arrays the header lists, each little-endian, C order, at its recorded offset

The header records everything that decides the targets: the teacher (its file's sha256 and model
config), the tokenizer and vocabulary, the data files (name, token count and a fingerprint), block size,
temperature, method and k, the value dtype, and the shard's unit range, arrays and payload sha256.
Reading is json + numpy.memmap: nothing in a file can run code, and the reader opens only the shard
names it builds itself inside the folder it was given.

Arrays, for N = rows of the shard:
    method "top-k":   ids [N, k] (uint16/uint32), logits [N, k] (the teacher's raw logits of those ids,
                      sorted descending; value dtype), lse [N] float32 (log Σ_v exp(t_v / T) over the whole
                      vocabulary), tail [N] float32 (Σ over ids outside the k of softmax(t / T), summed
                      as a tail, not as 1 − Σ_k, so small tails keep their digits)
    method "sampled": ids [N, K] and counts [N, K] (uint8 for K < 256, else uint16): K draws from
                      softmax(t / T), each distinct id once with its count; unused slots have count 0
    keying "chunk":   also piece_len [units of the shard] int32, and the header's row_start/row_end (the
                      shard's rows among all pieces' rows, N = row_end − row_start)
"""

import hashlib
import json
import os
import struct

import numpy as np
import torch

MAGIC = b"NANOKDTC"
VERSION = 1
METHODS = ("top-k", "sampled")
KEYINGS = ("window", "chunk")
VALUE_DTYPES = ("float32", "float16", "bfloat16")
SHARD_NAME = "shard_{:05d}.tkc"
_HASH_BLOCK = 1 << 20


class CacheError(ValueError):
    """A cache that is corrupt, incomplete, or not the one this run needs."""


def id_dtype(n_vocab):
    return np.dtype("<u2") if n_vocab <= 2 ** 16 else np.dtype("<u4")


def count_dtype(K):
    return np.dtype("u1") if K < 256 else np.dtype("<u2")


def row_layout(method, k, n_vocab, value_dtype):
    """[(name, numpy dtype, per-row shape)] for one shard's arrays; bfloat16 is stored as its uint16 bits."""
    if method == "top-k":
        value = np.dtype("<u2") if value_dtype == "bfloat16" else np.dtype(value_dtype).newbyteorder("<")
        return [("ids", id_dtype(n_vocab), (k,)), ("logits", value, (k,)), ("lse", np.dtype("<f4"), ()),
                ("tail", np.dtype("<f4"), ())]
    return [("ids", id_dtype(n_vocab), (k,)), ("counts", count_dtype(k), (k,))]


def piece_identity(loader):
    """What decides a packed loader's pieces (data/packing.py), as a chunk-keyed cache records it: block size,
    the document mark, the piece count and rows, and a sha256 of the piece table (shard, first token, targets)."""
    h = hashlib.sha256()
    for a in (loader.piece_shard, loader.piece_first, loader.piece_len):
        h.update(np.ascontiguousarray(a, dtype="<i8").data)
    return {"block_size": int(loader.T), "mark": [int(loader.mark[0]), str(loader.mark[1])],
            "n_pieces": int(loader.n_pieces), "n_rows": int(loader.tokens_per_epoch), "sha256": h.hexdigest()}


def bytes_per_row(method, k, n_vocab, value_dtype="float32"):
    return sum(dt.itemsize * int(np.prod(shape)) for _, dt, shape in row_layout(method, k, n_vocab, value_dtype))


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def data_fingerprint(path, samples=64):
    """sha256 of a token file's size, its first and last MiB and `samples` MiB spread evenly between: another
    file (re-tokenized, re-split, appended to) changes it, and a 100 GB shard is read in well under a second
    rather than minutes at every training start. Not a full hash: a change confined to unsampled bytes passes."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        starts = sorted({0, max(0, size - _HASH_BLOCK)} | {i * max(0, size - _HASH_BLOCK) // (samples + 1)
                                                          for i in range(1, samples + 1)})
        for s in starts:
            f.seek(s)
            h.update(f.read(_HASH_BLOCK))
    return h.hexdigest()


def describe_data(files):
    """What the header records of the training files (in the loader's order): name, tokens, fingerprint."""
    from data.tokenfile import read_header
    return [{"file": os.path.basename(p), "tokens": int(read_header(p)["n_tokens"]), "fingerprint": data_fingerprint(p)}
            for p in files]


# ---- writing ----------------------------------------------------------------------------------------------

def write_shard(path, header, arrays):
    """Write one shard atomically (a temporary file renamed into place): header (a dict) + arrays (name ->
    numpy array, in the order of header["arrays"]'s layout). Fills in the arrays' offsets and payload sha256."""
    payload_sha = hashlib.sha256()
    specs, offset = [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        specs.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape), "offset": offset})
        offset += a.nbytes
        payload_sha.update(a.data)
    header = {**header, "arrays": specs, "payload_bytes": offset, "payload_sha256": payload_sha.hexdigest()}
    text = json.dumps(header, sort_keys=True).encode()
    text += b" " * (-(len(text) + 16) % 64)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(text)) + text)
        for a in arrays.values():
            f.write(np.ascontiguousarray(a).data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return header


# ---- reading ----------------------------------------------------------------------------------------------

_HEADER_TYPES = {"format": str, "version": int, "method": str, "k": int, "temperature": float, "value_dtype": str,
                 "tokenizer": str, "n_vocab": int, "keying": str, "block_size": int, "data": list, "n_units": int,
                 "n_shards": int, "units_per_shard": int, "shard": int, "unit_start": int, "unit_end": int,
                 "teacher": dict, "arrays": list, "payload_bytes": int, "payload_sha256": str, "sample_seed": int}


def read_header(path):
    """The JSON header of one shard, its fields type-checked, and where the payload starts. CacheError if not a shard."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if len(head) < 16 or head[:8] != MAGIC:
                raise CacheError(f"{path}: not a nanokd teacher cache shard (bad magic)")
            (n,) = struct.unpack("<Q", head[8:])
            if n > 1 << 24:
                raise CacheError(f"{path}: header length {n} is implausible; the file is corrupt")
            text = f.read(n)
        header = json.loads(text.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"{path}: corrupt header ({e})") from e
    if not isinstance(header, dict):
        raise CacheError(f"{path}: corrupt header (not a JSON object)")
    for key, typ in _HEADER_TYPES.items():
        value = header.get(key)
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            header[key] = value = float(value)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise CacheError(f"{path}: header field {key!r} is missing or not a {typ.__name__}")
    if header["format"] != "nanokd-teacher-cache" or header["version"] != VERSION:
        raise CacheError(f"{path}: format {header['format']!r} version {header['version']}, this reader reads "
                         f"nanokd-teacher-cache version {VERSION}")
    if header["method"] not in METHODS or header["value_dtype"] not in VALUE_DTYPES or header["keying"] not in KEYINGS:
        raise CacheError(f"{path}: unknown method/value_dtype/keying {header['method']!r}/{header['value_dtype']!r}/"
                         f"{header['keying']!r}")
    if header["keying"] == "chunk":
        for key, typ in (("pieces", dict), ("row_start", int), ("row_end", int)):
            if not isinstance(header.get(key), typ) or isinstance(header.get(key), bool):
                raise CacheError(f"{path}: header field {key!r} (a chunk-keyed cache's) is missing or not a {typ.__name__}")
    return header, 16 + n


def shard_rows(header):
    """Rows one shard holds: T per window, or the sum of its pieces' lengths."""
    if header["keying"] == "chunk":
        return header["row_end"] - header["row_start"]
    return (header["unit_end"] - header["unit_start"]) * header["block_size"]


def _map_arrays(path, header, start):
    """numpy memmaps of a shard's arrays, each checked to lie inside the file and to have the expected layout."""
    size = os.path.getsize(path)
    if start + header["payload_bytes"] != size:
        raise CacheError(f"{path}: {size} bytes, the header promises {start + header['payload_bytes']}: truncated or appended to")
    rows = shard_rows(header)
    expected = [(name, dt, (rows, *shape)) for name, dt, shape in
                row_layout(header["method"], header["k"], header["n_vocab"], header["value_dtype"])]
    if header["keying"] == "chunk":
        expected.append(("piece_len", np.dtype("<i4"), (header["unit_end"] - header["unit_start"],)))
    if [s.get("name") for s in header["arrays"]] != [name for name, _, _ in expected]:
        raise CacheError(f"{path}: arrays {[s.get('name') for s in header['arrays']]}, expected {[n for n, _, _ in expected]}")
    out, offset = {}, 0
    for spec, (name, dt, shape) in zip(header["arrays"], expected):
        if spec.get("dtype") != dt.str or spec.get("shape") != list(shape) or spec.get("offset") != offset:
            raise CacheError(f"{path}: array {name!r} is {spec}, expected dtype {dt.str} shape {list(shape)} at {offset}")
        out[name] = np.memmap(path, dtype=dt, mode="r", offset=start + offset, shape=shape)
        offset += dt.itemsize * int(np.prod(shape))
    if header["keying"] == "chunk":
        n = out["piece_len"]
        if (n < 1).any() or (n > header["block_size"]).any() or int(n.sum(dtype=np.int64)) != rows:
            raise CacheError(f"{path}: piece lengths do not add up to the shard's {rows} rows")
    return out


def verify_payload(path, header, start):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            h.update(block)
    if h.hexdigest() != header["payload_sha256"]:
        raise CacheError(f"{path}: payload checksum mismatch (sha256 {h.hexdigest()[:16]}…, header says "
                         f"{header['payload_sha256'][:16]}…): the shard is corrupt; delete it and rerun teacher_cache.py")


# the fields every shard of one cache shares (the rest describe the shard itself)
IDENTITY = ("method", "k", "temperature", "value_dtype", "tokenizer", "n_vocab", "keying", "block_size", "data",
            "n_units", "n_shards", "units_per_shard", "teacher", "sample_seed", "pieces")   # (pieces: chunk keying)


class TeacherCache:
    """A cache folder, opened for reading: every shard's header read and checked against shard 0's identity up
    front; a shard's payload checksum verified the first time this process reads from it."""

    def __init__(self, folder):
        self.folder = os.path.abspath(folder)
        first = os.path.join(self.folder, SHARD_NAME.format(0))
        if not os.path.isfile(first):
            raise CacheError(f"{folder}: no {SHARD_NAME.format(0)}; not a teacher cache (make one with teacher_cache.py)")
        h0, _ = read_header(first)
        self.identity = {k: h0.get(k) for k in IDENTITY}
        self.__dict__.update({k: h0[k] for k in ("method", "k", "temperature", "n_vocab", "block_size", "n_units",
                                                   "units_per_shard", "n_shards", "value_dtype", "keying")})
        missing = [j for j in range(self.n_shards) if not os.path.isfile(self._path(j))]
        if missing:
            raise CacheError(f"{folder}: incomplete cache, {len(missing)} of {self.n_shards} shards missing "
                             f"(first: {SHARD_NAME.format(missing[0])}); rerun the same teacher_cache.py command to finish it")
        self._shards = {}   # j -> arrays, verified

    def _path(self, j):
        return os.path.join(self.folder, SHARD_NAME.format(j))

    def shard(self, j):
        if j not in self._shards:
            path = self._path(j)
            header, start = read_header(path)
            diff = [k for k in IDENTITY if header.get(k) != self.identity[k]]
            if diff:
                raise CacheError(f"{path}: differs from {SHARD_NAME.format(0)} in {', '.join(diff)}: shards of two caches are mixed")
            if header["shard"] != j or header["unit_start"] != j * self.units_per_shard:
                raise CacheError(f"{path}: header says shard {header['shard']} from unit {header['unit_start']}")
            arrays = _map_arrays(path, header, start)
            verify_payload(path, header, start)
            if self.keying == "chunk":   # where each piece's rows start, within the shard
                n = arrays.pop("piece_len")
                arrays = (arrays, np.concatenate([[0], np.cumsum(n, dtype=np.int64)]))
            self._shards[j] = arrays
        return self._shards[j]

    def check_run(self, *, tokenizer, n_vocab, block_size, temperature, data_files, top_k, kd_loss, pieces=None):
        """CacheError naming every way this cache does not fit the run (data file, tokenizer, block size,
        temperature, packing and its pieces, or a loss it cannot give exactly). pieces: piece_identity of the
        run's packed loader, None for plain windows."""
        if (self.keying == "chunk") != (pieces is not None):
            made, run = ("with", "without") if self.keying == "chunk" else ("without", "with")
            raise CacheError(f"teacher cache {self.folder} was made {made} packing (keyed by "
                             f"{'document chunk' if made == 'with' else 'window'}) and this run trains {run} it: set "
                             f"packing={made == 'with'} or make the cache with teacher_cache.py --packing={run == 'with'}")
        problems = []
        for name, mine, run in (("tokenizer", self.identity["tokenizer"], tokenizer), ("n_vocab", self.n_vocab, n_vocab),
                                ("block_size", self.block_size, block_size), ("temperature", self.temperature, temperature)):
            if mine != run:
                problems.append(f"{name}: cache {mine!r}, run {run!r}")
        cached = {d["file"]: d for d in self.identity["data"]}
        now = describe_data(data_files)
        if [d["file"] for d in now] != list(cached):
            problems.append(f"data files: cache {list(cached)}, run {[d['file'] for d in now]}")
        for d in now:
            c = cached.get(d["file"])
            if c is not None and (c["tokens"], c["fingerprint"]) != (d["tokens"], d["fingerprint"]):
                problems.append(f"data file {d['file']}: cache made from {c['tokens']:,} tokens (fingerprint "
                                f"{c['fingerprint'][:12]}…), run has {d['tokens']:,} ({d['fingerprint'][:12]}…)")
        if pieces is not None and self.identity["pieces"] != pieces:
            problems.append(f"document pieces: cache {self.identity['pieces']}, run {pieces} (another document mark "
                            "or block size cuts the documents into other pieces)")
        if kd_loss != "forward":
            problems.append(f"kd_loss={kd_loss!r}: a cache gives forward KL only (reverse KL and JSD need the whole distribution)")
        if temperature == 0:
            problems.append("temperature=0 (hard labels) is not cached")
        if self.method == "top-k":
            if top_k is None and self.k < n_vocab:
                problems.append(f"top_k=0 asks for the full forward KL, which a top-{self.k} cache cannot give (the tail is "
                                f"unknown); set top_k <= {self.k} and pick top_k_variant, or cache k = {n_vocab}")
            if top_k is not None and top_k > self.k:
                problems.append(f"top_k={top_k} exceeds the cache's k={self.k}")
        elif top_k is not None:
            problems.append(f"top_k={top_k} with a sampled cache: sampled targets are the full-KL estimator, top_k must be 0")
        if problems:
            raise CacheError(f"teacher cache {self.folder} does not fit this run: " + "; ".join(problems))

    def targets(self, units, device="cpu"):
        """The cached rows of these units (a sequence of global window indices), in order, as torch tensors
        [len(units)·T, k] (ids int64; logits float32, lse, tail: top-k; counts float32: sampled)."""
        T = self.block_size
        parts = {}
        for u in units:
            u = int(u)
            if not 0 <= u < self.n_units:
                raise CacheError(f"window {u} is not in teacher cache {self.folder} (it holds windows 0..{self.n_units - 1}); "
                                 "the run's data or block_size differs from the cache's")
            j, r = divmod(u, self.units_per_shard)
            for name, a in self.shard(j).items():
                parts.setdefault(name, []).append(a[r * T:(r + 1) * T])
        out = {}
        for name, chunks in parts.items():
            a = np.concatenate(chunks)
            t = torch.from_numpy(a.astype(np.int64) if name == "ids" else self._float32(name, a))
            out[name] = t.to(device, non_blocking=True)
        return out

    def _float32(self, name, a):
        """A cached array's values as float32 numpy (bfloat16 logits are stored as their upper 16 bits)."""
        if name == "logits" and self.value_dtype == "bfloat16":
            return (np.asarray(a).astype(np.uint32) << 16).view(np.float32)
        return np.asarray(a).astype(np.float32)

    def batch_targets(self, loader, device="cpu"):
        """The cached rows of the batch the loader handed out last: its windows, or its packed rows' pieces."""
        if self.keying == "chunk":
            return self.packed_targets(loader.last_pieces, device)
        return self.targets(loader.last_windows, device)

    def _piece(self, p):
        """(shard arrays, first row, rows) of piece p."""
        p = int(p)
        if not 0 <= p < self.n_units:
            raise CacheError(f"piece {p} is not in teacher cache {self.folder} (it holds pieces 0..{self.n_units - 1}); "
                             "the run's data or block_size differs from the cache's")
        j, r = divmod(p, self.units_per_shard)
        arrays, starts = self.shard(j)
        return arrays, int(starts[r]), int(starts[r + 1] - starts[r])

    def packed_targets(self, rows, device="cpu"):
        """The targets of packed rows, rows[i] = [(piece id, column where it starts), ...] (PackedLoader's
        last_pieces), as torch tensors [len(rows)·T, k] like targets(). Padding gets filler rows: a valid
        distribution (uniform over the vocabulary; for sampled, all draws on id 0) that no loss scores, finite
        so that its masked-out gradient stays zero."""
        T, k = self.block_size, self.k
        N = len(rows) * T
        out = {"ids": np.broadcast_to(np.arange(k) % self.n_vocab, (N, k)).copy()}
        if self.method == "top-k":
            out["logits"] = np.zeros((N, k), np.float32)
            out["lse"] = np.full(N, np.log(self.n_vocab), np.float32)
            out["tail"] = np.full(N, max(0.0, 1.0 - k / self.n_vocab), np.float32)
        else:
            out["ids"][:] = 0
            out["counts"] = np.zeros((N, k), np.float32)
            out["counts"][:, 0] = k
        for i, placed in enumerate(rows):
            for p, col in placed:
                arrays, r0, n = self._piece(p)
                if col < 0 or col + n > T:
                    raise CacheError(f"piece {p} ({n} rows) placed at column {col} overflows a row of {T}")
                dst = slice(i * T + col, i * T + col + n)
                for name, a in arrays.items():
                    out[name][dst] = a[r0:r0 + n] if name == "ids" else self._float32(name, a[r0:r0 + n])
        ids = torch.from_numpy(out.pop("ids").astype(np.int64)).to(device, non_blocking=True)
        return {"ids": ids, **{name: torch.from_numpy(np.asarray(a, np.float32)).to(device, non_blocking=True)
                               for name, a in out.items()}}
