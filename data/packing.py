"""
Document-aware training rows ("packing"), as the authors' MaxText runs trained (their train/ scripts set
dataset_type=grain packing=true; MaxText/input_pipeline/_grain_data_processing.py at TaiMingLu/maxtext-distillation
@304662a packs with grain's FirstFitPackIterDataset, 30 bins, into rows with segment ids and positions).

Where documents are. Token files hold documents back to back, each delimited as its tokenizer says
(data/tokenizer.document_ids): nanokd's own tokenizers (bytes, gpt2, llama3) put the end-of-text id after every
document, so a document starts after each end-of-text; a Hugging Face tokenizer puts its own prefix/suffix ids
around each (its suffix's last id ends a document; with no suffix, its prefix's first id starts one). A shard's
start and end are document edges too. Nothing new is stored: every existing token file works.

What a document trains on. With an end-of-text mark, a document's piece is the previous document's end-of-text
followed by the document's own tokens: inputs [EOT, d0 .. d(n-2)], targets [d0 .. d(n-1)] (its EOT last), so every
token is a target exactly once and its first token is predicted from the document-start mark alone, as a BOS
would do. No target crosses a document. MaxText's shift_and_refine (_input_pipeline_utils.py @304662a) does score
one cross-document target: it shifts the targets across the packed row without shifting the segment ids, so a
document's last token is scored against the next document's first token. In their records that pair is EOS -> BOS
(add_bos/add_eos true in base.yml), a target the model learns at once; ours has no BOS, and the same shift would
ask it to predict a random next document's first token from a document it cannot see. We do not follow it: the
EOT-as-BOS piece above keeps every prediction inside its own document and scores every token once.

Long documents (our choice; their repo cannot tell: grain's packer refuses an element longer than a row, and
their records were tokenized by a script that is not public): a piece of more than T targets is cut into
consecutive chunks of T targets, each chunk a document of its own (positions restart, no attention between
chunks). The chunks overlap by one token so that no target is lost.

Packing. Each epoch visits every piece (chunk) in a random permutation seeded by seed + epoch and packs them
first-fit into rows of T tokens as grain does: 30 open rows; a piece goes into the first row it fits; when it fits
none, the 30 rows are emitted in order and a new set begins with it; the epoch's last set is emitted as it is.
The rest of a row is padding: token 0 as input, target -100 (never scored), segment id 0. The packing is global:
every rank computes the same row stream (piece lengths only, no tokens), global batch g is rows [g·B·W, (g+1)·B·W)
and rank r reads its B of them, so W ranks see exactly what one process with batch B·W sees (the authors pack per
host, which that equality would not survive). Rows never mix epochs; a global batch may straddle two.

State for an exact resume: (epoch, the permutation index where the current set of 30 rows began, rows of that set
already taken); resuming re-packs one set.

Chunk identity (for caches keyed by what a row holds): piece p is (shard, first token, targets), numbered in file
order (piece_location); after next_batch, last_pieces[i] lists (piece id, column where it starts in row i) for
this rank's rows.
"""

import numpy as np
import torch

from data.loader import _expand, _open_shards, check_state_fits, raise_bad_id

BINS = 30                  # grain's num_packing_bins in the authors' pipeline
SCAN_BLOCK = 1 << 24       # tokens read at a time when looking for document marks
PAD_TARGET = -100          # the losses' ignore_index


def document_mark(tokenizer, tokenizer_state=None):
    """(id, "end" | "start"): the token that ends (or starts) every document in this tokenizer's files."""
    from data.tokenizer import N_VOCAB, get_tokenizer
    if tokenizer in N_VOCAB:
        return get_tokenizer(tokenizer).eot if tokenizer != "llama3" else 128001, "end"  # llama3: <|end_of_text|>
    if tokenizer_state is None:
        raise ValueError(f"packing needs to know how tokenizer {tokenizer!r} delimits documents; "
                         "use a token file of a known tokenizer, or the Hugging Face tokenizer's state")
    if tokenizer_state["doc_suffix"]:
        return int(tokenizer_state["doc_suffix"][-1]), "end"
    return int(tokenizer_state["doc_prefix"][0]), "start"


def document_pieces(tokens, mark, T):
    """(first token, targets) of every piece of one shard, in order: documents found by mark = (id, "end"|"start"),
    cut into chunks of at most T targets (see the module notes). A piece of n targets spans n + 1 tokens."""
    mark_id, kind = mark
    hits = [np.flatnonzero(np.asarray(tokens[i:i + SCAN_BLOCK]) == mark_id) + i
            for i in range(0, len(tokens), SCAN_BLOCK)]
    hits = np.concatenate(hits) if hits else np.zeros(0, dtype=np.int64)
    if kind == "end":
        starts = hits + 1           # a document starts after each end mark ...
        lead = 1                    # ... and its piece begins one earlier, at that mark
    else:
        starts, lead = hits, 0
    starts = np.unique(np.concatenate([[0], starts[starts < len(tokens)]])).astype(np.int64)
    ends = np.append(starts[1:], len(tokens))
    first = np.maximum(starts - lead, 0)          # a shard's first document has no mark before it
    n = ends - first - 1                          # targets: tokens after the piece's first
    first, n = first[n > 0], n[n > 0]
    chunks = (n + T - 1) // T
    k = np.arange(chunks.sum()) - np.repeat(np.cumsum(chunks) - chunks, chunks)   # chunk index within its document
    return np.repeat(first, chunks) + k * T, np.minimum(np.repeat(n, chunks) - k * T, T)


def first_fit(lengths, T, bins=BINS):
    """grain's first fit over one set of rows: pack lengths in order until one fits no row of the set.
    Returns (rows: lists of indices into lengths, how many were packed)."""
    room, rows = np.full(bins, T, dtype=np.int64), [[] for _ in range(bins)]
    for i, n in enumerate(lengths):
        fits = np.flatnonzero(room >= n)
        if len(fits) == 0:
            return rows, i
        room[fits[0]] -= n
        rows[fits[0]].append(i)
    return [r for r in rows if r], len(lengths)


class PackedLoader:
    """TokenLoader's interface, with rows of whole documents: next_batch() -> (x, y, segment_ids, positions)."""

    def __init__(self, paths, batch_size, block_size, mark, rank=0, world_size=1, seed=0, tokenizer=None,
                 vocab_size=None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.paths = _expand(paths)
        self.shards, self.tokenizer, self.vocab_size = _open_shards(self.paths, tokenizer, vocab_size)
        self.B, self.T, self.mark = int(batch_size), int(block_size), mark
        self.rank, self.world_size, self.seed = rank, world_size, int(seed)
        pieces = [document_pieces(s, mark, self.T) for s in self.shards]
        self.piece_shard = np.concatenate([np.full(len(f), i, dtype=np.int32) for i, (f, _) in enumerate(pieces)])
        self.piece_first = np.concatenate([f for f, _ in pieces])
        self.piece_len = np.concatenate([n for _, n in pieces]).astype(np.int32)
        self.n_pieces = len(self.piece_len)
        self.n_tokens = sum(len(s) for s in self.shards)
        self.tokens_per_epoch = int(self.piece_len.sum())   # targets one epoch scores
        if self.n_pieces == 0:
            raise ValueError(f"no documents in {self.paths[0]}{', ...' if len(self.paths) > 1 else ''}")
        self.epoch, self.cursor, self.taken = 0, 0, 0
        self._set = None          # (epoch, cursor) -> (rows of piece ids, next cursor), the set being read
        self._perm, self._perm_epoch = None, None
        self.last_pieces = []

    def piece_location(self, p):
        """Piece p -> (path, offset of its first token, targets): the same piece whatever the run's seed."""
        return self.paths[int(self.piece_shard[p])], int(self.piece_first[p]), int(self.piece_len[p])

    def _permutation(self):
        if self._perm_epoch != self.epoch:
            perm = np.arange(self.n_pieces, dtype=np.int32 if self.n_pieces < 2**31 else np.int64)
            np.random.default_rng(self.seed + self.epoch).shuffle(perm)
            self._perm, self._perm_epoch = perm, self.epoch
        return self._perm

    def _current_set(self):
        if self._set is None or self._set[0] != (self.epoch, self.cursor):
            perm = self._permutation()
            # a set holds at most BINS·T targets, and every piece has at least one: never more pieces than that
            window = perm[self.cursor:self.cursor + BINS * self.T]
            rows, used = first_fit(self.piece_len[window], self.T)
            self._set = ((self.epoch, self.cursor), [window[r] for r in rows], self.cursor + used)
        return self._set

    def _next_row(self):
        _, rows, next_cursor = self._current_set()
        if self.taken == len(rows):
            self.cursor, self.taken = next_cursor, 0
            if self.cursor == self.n_pieces:
                self.epoch, self.cursor = self.epoch + 1, 0
            _, rows, _ = self._current_set()
        self.taken += 1
        return rows[self.taken - 1]

    def next_batch(self):
        rows = [self._next_row() for _ in range(self.B * self.world_size)][self.rank * self.B:(self.rank + 1) * self.B]
        x = np.zeros((self.B, self.T), dtype=np.int64)
        y = np.full((self.B, self.T), PAD_TARGET, dtype=np.int64)
        seg = np.zeros((self.B, self.T), dtype=np.int64)
        pos = np.zeros((self.B, self.T), dtype=np.int64)
        self.last_pieces = []
        for i, row in enumerate(rows):
            col, placed = 0, []
            for d, p in enumerate(row, start=1):
                s, first, n = int(self.piece_shard[p]), int(self.piece_first[p]), int(self.piece_len[p])
                tok = np.asarray(self.shards[s][first:first + n + 1], dtype=np.int64)
                if tok.max() >= self.vocab_size:   # found here, not as an embedding crash later
                    at = int(np.argmax(tok >= self.vocab_size))
                    raise_bad_id(self.paths[s], first + at, int(tok[at]), self.vocab_size)
                x[i, col:col + n], y[i, col:col + n] = tok[:-1], tok[1:]
                seg[i, col:col + n], pos[i, col:col + n] = d, np.arange(n)
                placed.append((int(p), col))
                col += n
            self.last_pieces.append(placed)
        return tuple(torch.from_numpy(a) for a in (x, y, seg, pos))

    def state_dict(self):
        # identical on every rank; n_pieces and block_size catch resuming on other data
        return {"packing": True, "epoch": self.epoch, "cursor": self.cursor, "taken": self.taken, "seed": self.seed,
                "n_pieces": self.n_pieces, "block_size": self.T}

    def load_state_dict(self, state):
        if not state.get("packing"):
            raise ValueError("loader state does not fit this run: it was saved by a run without packing, "
                             "this run packs documents (packing=True)")
        check_state_fits(state, self.paths, n_pieces=self.n_pieces, block_size=self.T, seed=self.seed)
        self.epoch, self.cursor, self.taken = int(state["epoch"]), int(state["cursor"]), int(state["taken"])


def length_histogram(tokens, mark):
    """Document lengths (targets, uncut) of one token array on power-of-two bins [2^k, 2^(k+1)): per bin the
    documents, their tokens and the sum of their squares. The prepare scripts write it (doc_lengths.json);
    the dry run reads the attention FLOPs under packing and the share of rows with a boundary from it."""
    _, n = document_pieces(tokens, mark, max(len(tokens), 1))
    which = np.floor(np.log2(np.maximum(n, 1))).astype(np.int64)
    k = int(which.max(initial=0)) + 1
    return {"edges": [2 ** i for i in range(k + 1)], "documents": np.bincount(which, minlength=k).tolist(),
            "tokens": np.bincount(which, weights=n, minlength=k).astype(np.int64).tolist(),
            "sum_sq": np.bincount(which, weights=n.astype(np.float64) ** 2, minlength=k).tolist()}


def merge_histograms(hists):
    k = max(len(h["documents"]) for h in hists)
    out = {"edges": [2 ** i for i in range(k + 1)]}
    for key in ("documents", "tokens", "sum_sq"):
        out[key] = [sum(h[key][i] for h in hists if i < len(h[key])) for i in range(k)]
    return out


def packed_attention_share(hist, T):
    """Attention FLOPs of packed rows over those of plain T-token windows (both counted as full squares, as PaLM
    counts): Σ n² / (T · Σ n) over pieces, documents longer than T cut into T-token chunks. Exact for bins below T
    when T is a power of two; a document of L ≥ T counts as L·T (its last, shorter chunk counted at full length)."""
    sq = sum(s if e * 2 <= T else t * T for e, s, t in zip(hist["edges"], hist["sum_sq"], hist["tokens"]))
    return sq / (T * max(1, sum(hist["tokens"])))


def boundary_share(hist, T):
    """The share of plain (unpacked) T-token windows that hold a document boundary, for a stream of these
    documents: a window has none only inside a document, so 1 − Σ max(0, L − T) / Σ L (a bin's documents taken at
    their mean length; exact for bins wholly below T)."""
    inside = sum(max(0.0, t - d * T) for e, d, t in zip(hist["edges"], hist["documents"], hist["tokens"]) if e * 2 > T)
    return 1.0 - inside / max(1, sum(hist["tokens"]))


def write_length_histogram(data_dir, tokenizer_state=None):
    """data_dir/doc_lengths.json: length_histogram over all train*.bin (written by the prepare scripts; for older
    data: python -m data.packing DIR). Returns it."""
    import glob
    import json
    import os
    from data.tokenfile import load_tokens, read_header
    files = sorted(glob.glob(os.path.join(data_dir, "train*.bin")))
    if not files:
        raise ValueError(f"no training data matches {os.path.join(data_dir, 'train*.bin')}")
    mark = document_mark(read_header(files[0])["tokenizer"], tokenizer_state)
    hist = merge_histograms([length_histogram(load_tokens(f), mark) for f in files])
    hist["mark"] = [int(mark[0]), mark[1]]
    part = os.path.join(data_dir, "doc_lengths.json.tmp")
    with open(part, "w") as f:
        json.dump(hist, f, indent=1)
    os.replace(part, os.path.join(data_dir, "doc_lengths.json"))
    return hist


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 2:
        sys.exit("usage: python -m data.packing DATA_DIR   (writes DATA_DIR/doc_lengths.json from its train*.bin)")
    h = write_length_histogram(sys.argv[1])
    print(f"{sum(h['documents']):,} documents, {sum(h['tokens']):,} targets; share of rows with a boundary / "
          f"attention under packing vs plain windows: "
          + ", ".join(f"T={T}: {boundary_share(h, T):.3f} / {packed_attention_share(h, T):.3f}" for T in (256, 1024, 8192)))
