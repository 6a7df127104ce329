"""
How often each token occurs in the training data, counted once and stored beside it:

    python -m data.token_counts data/embedded_bytes      # -> data/embedded_bytes/train_counts.npy

`train_counts.npy` is an int64 array of the vocabulary's length (the token files' header), entry v =
occurrences of token v in every train*.bin of the directory. A prepare script can call
`write_counts(data_dir)` after writing its shards; analyze.py calls `load_counts`, which counts (and
stores the result) when the file is missing, and refuses a file that no longer fits the shards (another
vocabulary, or a token total that differs from the shards' headers: the data was prepared again).
"""

import glob
import os
import sys

import numpy as np

from data.tokenfile import load_tokens, read_header

COUNTS_FILE = "train_counts.npy"
BLOCK = 1 << 24   # tokens per bincount: the shards are memory-mapped, so memory stays ~this many int64s


def train_files(data_dir):
    files = sorted(glob.glob(os.path.join(data_dir, "train*.bin")))
    if not files:
        raise FileNotFoundError(f"no training data matches {os.path.join(data_dir, 'train*.bin')}")
    return files


def count_tokens(data_dir):
    """Occurrences of every token id over the directory's train*.bin shards (int64, the header's vocab size)."""
    files = train_files(data_dir)
    vocab_size = read_header(files[0])["vocab_size"]
    counts = np.zeros(vocab_size, dtype=np.int64)
    for path in files:
        tokens = load_tokens(path, vocab_size=vocab_size)   # every shard must share the vocabulary
        for i in range(0, len(tokens), BLOCK):
            counts += np.bincount(np.asarray(tokens[i:i + BLOCK]), minlength=vocab_size)[:vocab_size]
    return counts


def write_counts(data_dir):
    """Count and store data_dir/train_counts.npy (written to a temp name, then renamed); returns its path."""
    counts = count_tokens(data_dir)
    path = os.path.join(data_dir, COUNTS_FILE)
    tmp = path + ".tmp.npy"
    np.save(tmp, counts)
    os.replace(tmp, path)
    return path


def load_counts(data_dir, vocab_size=None, log=print):
    """The stored counts, made first if missing; ValueError if they do not describe the shards now there."""
    path = os.path.join(data_dir, COUNTS_FILE)
    if not os.path.exists(path):
        write_counts(data_dir)
        log(f"counted training tokens once: {path}")
    counts = np.load(path)
    files = train_files(data_dir)
    header_vocab = read_header(files[0])["vocab_size"]
    total = sum(read_header(f)["n_tokens"] for f in files)
    if counts.shape != (header_vocab,) or int(counts.sum()) != total:
        raise ValueError(f"{path} holds {counts.shape[0]} counts summing to {int(counts.sum()):,}, but the shards "
                         f"have a vocabulary of {header_vocab} and {total:,} tokens: the data was prepared again; "
                         f"recount with: python -m data.token_counts {data_dir}")
    if vocab_size is not None and header_vocab != vocab_size:
        raise ValueError(f"{data_dir}'s training data has a vocabulary of {header_vocab}, the models {vocab_size}")
    return counts


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m data.token_counts DATA_DIR [DATA_DIR ...]")
    for d in sys.argv[1:]:
        c = np.load(write_counts(d))
        print(f"{os.path.join(d, COUNTS_FILE)}: {int(c.sum()):,} tokens, {int((c > 0).sum())} of {len(c)} ids occur")
