"""
Batches from token files.

TokenLoader (training): the corpus -- one or more memory-mapped shards -- is cut
into non-overlapping windows of block_size+1 tokens (x = window[:-1], y = window[1:]);
windows never cross a shard boundary. Each epoch visits the windows in a random
permutation seeded by seed + epoch.

Distributed, the *global* batch g covers permutation entries
[g·B·W, (g+1)·B·W) and rank r takes the slice [r·B, (r+1)·B) of it. So W ranks
with batch B see exactly the samples one process with batch B·W sees, split
across them, and the loader's position is the same on every rank: one rank's
state_dict() resumes them all, even with a different world size.

An epoch ends when fewer than B·W unseen windows remain (the rest are skipped
that epoch, a different rest each epoch), so every rank takes the same number
of steps.

eval_batches (evaluation): sequential non-overlapping windows from the start of
a file, no shuffling; batch i goes to rank i % world_size; the last batch may be
smaller.
"""

import glob
import json
import os
import sys

import numpy as np
import torch

from data.tokenfile import TokenFileError, load_tokens, read_header


def raise_bad_id(path, offset, token, vocab_size):
    raise TokenFileError(f"{path}: token {token} at offset {offset} (counting tokens after the header) is outside "
                         f"its vocabulary of {vocab_size}: the file is corrupt or was written by another tool; "
                         f"check whole files with: python -m data.loader check {path}")


def check_file(path):
    """Scan a whole token file for ids outside its header's vocabulary, in blocks; raises TokenFileError."""
    tokens = load_tokens(path)
    vocab_size = read_header(path)["vocab_size"]
    block = 1 << 24
    for i in range(0, len(tokens), block):
        chunk = np.asarray(tokens[i:i + block])
        if chunk.size and int(chunk.max()) >= vocab_size:
            at = int(np.argmax(chunk >= vocab_size))
            raise_bad_id(path, i + at, int(chunk[at]), vocab_size)
    return len(tokens)


def _expand(paths):
    if isinstance(paths, (str, os.PathLike)):
        paths = [os.fspath(paths)]
    out = []
    for p in paths:
        if glob.has_magic(p):
            hits = sorted(glob.glob(p))
            if not hits:
                raise FileNotFoundError(f"no token files match {p}")
            out.extend(hits)
        else:
            out.append(p)
    if not out:
        raise ValueError("TokenLoader needs at least one token file")
    return out


def check_state_fits(state, paths, **mine):
    """ValueError when a saved loader state was made over other data or settings (each key in `mine` must match)."""
    for key, value in mine.items():
        if int(state[key]) != value:
            raise ValueError(f"loader state does not fit this run: saved {key}={state[key]}, now {value} "
                             f"(files {paths[0]}{', ...' if len(paths) > 1 else ''})")


def _open_shards(paths, tokenizer, vocab_size):
    """Memory-map every shard, checking they all carry the same tokenizer (the run's, if given)."""
    if tokenizer is None or vocab_size is None:
        # take what was not given from the first shard, so all shards must agree with it
        h = read_header(paths[0])
        tokenizer = h["tokenizer"] if tokenizer is None else tokenizer
        vocab_size = h["vocab_size"] if vocab_size is None else vocab_size
    return [load_tokens(p, tokenizer, vocab_size) for p in paths], tokenizer, int(vocab_size)


class TokenLoader:

    def __init__(self, paths, batch_size, block_size, rank=0, world_size=1, seed=0,
                 tokenizer=None, vocab_size=None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.paths = _expand(paths)
        self.shards, self.tokenizer, self.vocab_size = _open_shards(self.paths, tokenizer, vocab_size)
        self.B, self.T = int(batch_size), int(block_size)
        self.rank, self.world_size, self.seed = rank, world_size, int(seed)
        # windows per shard, and where each shard's windows start in the global numbering
        counts = np.array([len(s) // (self.T + 1) for s in self.shards], dtype=np.int64)
        self.window_starts = np.concatenate([[0], np.cumsum(counts)])
        self.n_windows = int(self.window_starts[-1])
        self.n_tokens = sum(len(s) for s in self.shards)
        global_batch = self.B * self.world_size
        if self.n_windows < global_batch:
            raise ValueError(f"corpus too small: {self.n_tokens} tokens in {len(self.paths)} file(s) "
                             f"({self.paths[0]}{', ...' if len(self.paths) > 1 else ''}) make "
                             f"{self.n_windows} windows of block_size+1={self.T + 1} tokens, but one step needs "
                             f"batch_size*world_size = {global_batch}")
        self.batches_per_epoch = self.n_windows // global_batch
        # training tokens (x positions, all ranks) one epoch delivers
        self.tokens_per_epoch = self.batches_per_epoch * global_batch * self.T
        self.epoch, self.position = 0, 0  # position: windows of this epoch's permutation consumed
        self._perm, self._perm_epoch = None, None

    def _permutation(self):
        if self._perm_epoch != self.epoch:
            # int32 where it fits halves the memory of a billion-token corpus' permutation;
            # shuffling in place gives the same order whatever the integer width
            dtype = np.int32 if self.n_windows < 2**31 else np.int64
            perm = np.arange(self.n_windows, dtype=dtype)
            np.random.default_rng(self.seed + self.epoch).shuffle(perm)
            self._perm, self._perm_epoch = perm, self.epoch
        return self._perm

    def _locate(self, w):
        """Window w -> (shard index, offset of its first token in that shard)."""
        s = int(np.searchsorted(self.window_starts, w, side="right")) - 1
        return s, (w - int(self.window_starts[s])) * (self.T + 1)

    def _window(self, w):
        s, start = self._locate(w)
        return self.shards[s][start:start + self.T + 1]

    def next_batch(self):
        global_batch = self.B * self.world_size
        if self.position + global_batch > self.n_windows:
            self.epoch, self.position = self.epoch + 1, 0
        lo = self.position + self.rank * self.B
        idx = self._permutation()[lo:lo + self.B]
        self.last_windows = idx   # the batch's global window indices: what a teacher cache is keyed by
        self.position += global_batch
        buf = np.stack([self._window(int(w)) for w in idx]).astype(np.int64)
        if buf.max(initial=0) >= self.vocab_size:   # one pass over B·T ints; found here, not as an embedding crash later
            row = int(np.argmax(buf.max(axis=1) >= self.vocab_size))
            s, start = self._locate(int(idx[row]))
            col = int(np.argmax(buf[row] >= self.vocab_size))
            raise_bad_id(self.paths[s], start + col, int(buf[row, col]), self.vocab_size)
        buf = torch.from_numpy(buf)
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()

    def state_dict(self):
        # identical on every rank; n_windows and block_size are there to catch resuming on other data
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "n_windows": self.n_windows, "block_size": self.T}

    def load_state_dict(self, state):
        if state.get("packing"):
            raise ValueError("loader state does not fit this run: it was saved by a run that packs documents "
                             "(packing=True), this run reads plain windows")
        check_state_fits(state, self.paths, n_windows=self.n_windows, block_size=self.T, seed=self.seed)
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def open_training_data(data_dir, batch_size, block_size, rank=0, world_size=1, seed=0, tokenizer=None,
                       tokenizer_path=None, packing=False):
    """The training loader over data_dir/train*.bin (packing: data/packing.py's rows of whole documents, whose
    next_batch also gives segment ids and positions), the vocabulary size its files carry, and the tokenizer's
    (name, state): a Hugging Face tokenizer ("hf", read from tokenizer_path: the teacher's folder or its
    tokenizer.json) is named by its hash and its state travels with the checkpoint; other tokenizers have
    state None. ValueError (a TokenFileError for a bad file) saying what is wrong. Warns once on rank 0 when
    val.bin is missing."""
    state = None
    files = sorted(glob.glob(os.path.join(data_dir, "train*.bin")))
    if not files:
        raise ValueError(f"no training data matches {os.path.join(data_dir, 'train*.bin')}; prepare it first "
                         "(python data/prepare_embedded.py, see README)")
    header = read_header(files[0])
    hf = tokenizer is not None and (tokenizer == "hf" or tokenizer.startswith("hf-"))
    if hf and not tokenizer_path:   # the checkpoint must carry the tokenizer, so it has to be read from somewhere
        raise ValueError(f"tokenizer={tokenizer!r} reads the teacher's tokenizer.json, and this run has no teacher: "
                         f"pass --tokenizer_path={_tokenizer_source(data_dir) or 'FOLDER'} (the folder the data was "
                         f"prepared with)")
    if hf:
        from data.tokenizer import get_tokenizer
        tok = get_tokenizer(tokenizer, tokenizer_path)
        tokenizer, state = tok.name, tok.state()
    if tokenizer is not None and tokenizer != header["tokenizer"]:
        hint = (f": pass --tokenizer=hf with --tokenizer_path={_tokenizer_source(data_dir) or 'FOLDER'} (or a "
                f"--teacher_ckpt that has it)" if header["tokenizer"].startswith("hf-") and not hf else "")
        raise ValueError(f"{files[0]} was written with tokenizer {header['tokenizer']!r} ({header['vocab_size']} ids) "
                         f"but this run's tokenizer is {tokenizer!r}{hint}")
    n_vocab = header["vocab_size"]
    if packing:
        from data.packing import PackedLoader, document_mark
        mark = document_mark(tokenizer or header["tokenizer"], state)
        loader = PackedLoader(files, batch_size, block_size, mark, rank=rank, world_size=world_size, seed=seed,
                              tokenizer=tokenizer, vocab_size=n_vocab)
    else:
        loader = TokenLoader(files, batch_size, block_size, rank=rank, world_size=world_size, seed=seed,
                             tokenizer=tokenizer, vocab_size=n_vocab)
    if rank == 0 and not os.path.exists(os.path.join(data_dir, "val.bin")):
        print(f"train.py: WARNING: no val.bin in {data_dir}: this run reports no in-domain validation loss"
              + ("" if glob.glob(os.path.join(data_dir, "ood_*.bin")) else " and evaluates nothing at all")
              + " (prepare it with the data/prepare_*.py script that made the training files)", file=sys.stderr, flush=True)
    return loader, n_vocab, (tokenizer, state)


def _tokenizer_source(data_dir):
    """The tokenizer folder a prepare script recorded in data_dir/meta.json, for hints ("" if none)."""
    try:
        with open(os.path.join(data_dir, "meta.json")) as f:
            source = json.load(f).get("tokenizer_source") or ""
    except (OSError, ValueError):
        return ""
    return os.path.dirname(source) if source.endswith("tokenizer.json") else source


def eval_batches(path, batch_size, block_size, max_batches=None, rank=0, world_size=1,
                 tokenizer=None, vocab_size=None):
    """Yield (x, y) LongTensor batches over a file's sequential windows; this rank's share."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    tokens = load_tokens(path, tokenizer, vocab_size)
    vocab_size = read_header(path)["vocab_size"] if vocab_size is None else vocab_size
    T = block_size
    n_windows = len(tokens) // (T + 1)
    if n_windows == 0:
        raise ValueError(f"{path}: {len(tokens)} tokens is less than one window of block_size+1={T + 1}")
    n_batches = (n_windows + batch_size - 1) // batch_size
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    for i in range(rank, n_batches, world_size):
        w0, w1 = i * batch_size, min((i + 1) * batch_size, n_windows)
        buf = np.asarray(tokens[w0 * (T + 1):w1 * (T + 1)], dtype=np.int64).reshape(w1 - w0, T + 1)
        if buf.max(initial=0) >= vocab_size:
            at = int(np.argmax(buf.reshape(-1) >= vocab_size))
            raise_bad_id(path, w0 * (T + 1) + at, int(buf.reshape(-1)[at]), vocab_size)
        buf = torch.from_numpy(buf)
        yield buf[:, :-1].contiguous(), buf[:, 1:].contiguous()


if __name__ == "__main__":
    import sys
    if len(sys.argv) < 3 or sys.argv[1] != "check":
        sys.exit("usage: python -m data.loader check FILE [FILE ...]   (every token id within the file's vocabulary)")
    bad = 0
    for path in sys.argv[2:]:
        try:
            print(f"{path}: {check_file(path):,} tokens, all ids in range")
        except (TokenFileError, OSError) as e:
            print(e, file=sys.stderr)
            bad += 1
    sys.exit(1 if bad else 0)
