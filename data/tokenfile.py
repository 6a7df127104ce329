"""
The token file: a fixed 256-byte header, then the tokens as a flat little-endian
uint16 or uint32 array. The header says how to read the tokens and which
tokenizer made them, so a file is never silently read as garbage or with the
wrong tokenizer.

Header layout (little-endian, zero padded to 256 bytes):

    offset  size  field
    0       8     magic b"NANOKDTK"
    8       4     version (uint32, currently 1)
    12      4     bytes per token (uint32: 2 = uint16, 4 = uint32)
    16      8     vocab size (uint64)
    24      8     token count (uint64)
    32      32    tokenizer name (UTF-8, NUL padded), e.g. "bytes", "gpt2", "llama3"

Writes go to a temporary file that is renamed into place, so a crash never
leaves a half-written file under the final name.
"""

import os
import struct

import numpy as np

MAGIC = b"NANOKDTK"
VERSION = 1
HEADER_SIZE = 256  # fixed, so the tokens always start at the same offset
_FIELDS = struct.Struct("<8sIIQQ32s")
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


class TokenFileError(ValueError):
    """A token file that is corrupt, truncated, or made with another tokenizer."""


def token_dtype(vocab_size):
    """uint16 when every id fits in 16 bits (GPT-2, bytes), else uint32 (Llama-3's 128,256)."""
    if not 0 < vocab_size <= 2**32:
        raise ValueError(f"vocab_size must be in [1, 2**32], got {vocab_size}")
    return _DTYPES[2] if vocab_size <= 2**16 else _DTYPES[4]


def _pack_header(vocab_size, tokenizer, n_tokens):
    name = tokenizer.encode("utf-8")
    if not name or len(name) > 32 or b"\0" in name:
        raise ValueError(f"tokenizer name must be 1..32 UTF-8 bytes without NUL, got {tokenizer!r}")
    dtype = token_dtype(vocab_size)
    head = _FIELDS.pack(MAGIC, VERSION, dtype.itemsize, vocab_size, n_tokens, name)
    return head + b"\0" * (HEADER_SIZE - len(head))


def _check_range(tokens, vocab_size, where):
    # an id >= vocab_size would index past the embedding table much later, far from the cause
    if tokens.size == 0:
        return
    if not np.issubdtype(tokens.dtype, np.integer):
        raise TokenFileError(f"{where}: tokens must be integers, got dtype {tokens.dtype}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        raise TokenFileError(f"{where}: token ids must be in [0, {vocab_size}) for vocab size {vocab_size}, "
                             f"found min {lo}, max {hi}")


class TokenFileWriter:
    """Streams tokens into a token file without holding them all in memory.

        with TokenFileWriter("train.bin", vocab_size=50257, tokenizer="gpt2") as w:
            for ids in batches:
                w.append(ids)

    close() writes the final count into the header and renames the temporary file
    into place; if the with-block raises, the temporary file is deleted instead.
    """

    def __init__(self, path, vocab_size, tokenizer):
        self.path = os.fspath(path)
        self.vocab_size = int(vocab_size)
        self.tokenizer = tokenizer
        self.dtype = token_dtype(self.vocab_size)
        self.n_tokens = 0
        _pack_header(self.vocab_size, tokenizer, 0)  # validate the name before creating anything
        self._tmp = f"{self.path}.tmp{os.getpid()}"
        self._f = open(self._tmp, "wb")
        # placeholder header with count 0: the real count is written by close()
        self._f.write(_pack_header(self.vocab_size, tokenizer, 0))

    def append(self, tokens):
        if self._f is None:
            raise ValueError(f"{self.path}: append() after close()")
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise ValueError(f"{self.path}: tokens must be 1-D, got shape {arr.shape}")
        _check_range(arr, self.vocab_size, self.path)
        self._f.write(arr.astype(self.dtype, copy=False).tobytes())
        self.n_tokens += arr.size

    def close(self):
        if self._f is None:
            return
        self._f.seek(0)
        self._f.write(_pack_header(self.vocab_size, self.tokenizer, self.n_tokens))
        self._f.flush()
        os.fsync(self._f.fileno())  # the rename must not land before the data
        self._f.close()
        self._f = None
        os.replace(self._tmp, self.path)

    def abort(self):
        """Drop everything written so far; no file appears under the final name."""
        if self._f is not None:
            self._f.close()
            self._f = None
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_tokens(path, tokens, vocab_size, tokenizer):
    """Write a whole 1-D array of token ids at once (atomically)."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"{path}: tokens must be 1-D, got shape {arr.shape}")
    with TokenFileWriter(path, vocab_size, tokenizer) as w:
        w.append(arr)


def read_header(path):
    """Parse and check a token file's header; returns
    {version, dtype, vocab_size, tokenizer, n_tokens, offset}."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
        file_size = os.path.getsize(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"token file {path} does not exist") from None
    if len(raw) < HEADER_SIZE:
        raise TokenFileError(f"{path}: truncated header ({len(raw)} bytes, expected {HEADER_SIZE}); "
                             f"not a complete nanokd token file")
    magic, version, itemsize, vocab_size, n_tokens, name = _FIELDS.unpack_from(raw)
    if magic != MAGIC:
        raise TokenFileError(f"{path}: not a nanokd token file (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise TokenFileError(f"{path}: unknown token file version {version} (this code reads version {VERSION})")
    if itemsize not in _DTYPES:
        raise TokenFileError(f"{path}: corrupt header: {itemsize} bytes per token (expected 2 or 4)")
    try:
        tokenizer = name.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        raise TokenFileError(f"{path}: corrupt header: tokenizer name {name!r} is not UTF-8") from None
    if not tokenizer or vocab_size == 0 or vocab_size > 2**32:
        raise TokenFileError(f"{path}: corrupt header: tokenizer {tokenizer!r}, vocab size {vocab_size}")
    if itemsize == 2 and vocab_size > 2**16:
        raise TokenFileError(f"{path}: corrupt header: vocab size {vocab_size} does not fit uint16 tokens")
    expected = HEADER_SIZE + n_tokens * itemsize
    if file_size != expected:
        raise TokenFileError(f"{path}: header says {n_tokens} tokens ({expected} bytes in all) but the file has "
                             f"{file_size} bytes; truncated, appended to, or still being written")
    return {"version": version, "dtype": _DTYPES[itemsize], "vocab_size": vocab_size,
            "tokenizer": tokenizer, "n_tokens": n_tokens, "offset": HEADER_SIZE}


def load_tokens(path, tokenizer=None, vocab_size=None):
    """Memory-map a token file's tokens (1-D, read-only). If tokenizer and/or
    vocab_size are given they must match the header, else TokenFileError."""
    h = read_header(path)
    if (tokenizer is not None and tokenizer != h["tokenizer"]) or \
       (vocab_size is not None and int(vocab_size) != h["vocab_size"]):
        run_tok = tokenizer if tokenizer is not None else h["tokenizer"]
        run_vocab = vocab_size if vocab_size is not None else h["vocab_size"]
        raise TokenFileError(f"{path} was written with tokenizer '{h['tokenizer']}' (vocab {h['vocab_size']}) "
                             f"but this run uses '{run_tok}' (vocab {run_vocab})")
    if h["n_tokens"] == 0:  # mmap cannot map zero bytes
        out = np.zeros(0, dtype=h["dtype"])
        out.flags.writeable = False
        return out
    return np.memmap(path, dtype=h["dtype"], mode="r", offset=h["offset"], shape=(h["n_tokens"],))
