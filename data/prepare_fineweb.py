"""
FineWeb-Edu (the paper's corpus) into token shards, streamed: nothing but the
shard being written is held locally.

    python data/prepare_fineweb.py --tokenizer gpt2 --max_tokens 10B
    python data/prepare_fineweb.py --tokenizer llama3 --tokenizer_path .../tokenizer.model
    python data/prepare_fineweb.py --tokenizer hf --tokenizer_path path/to/teacher   # the teacher's tokenizer.json
    python data/prepare_fineweb.py --data_files local.parquet --tokenizer bytes   # offline, same schema

The documents (field "text"), each followed by end-of-text (or, for --tokenizer hf, delimited as
the tokenizer's config says, e.g. Llama-3's <|begin_of_text|> before each), form one token stream
that is cut into val.bin (the first --val_tokens tokens) and then
train_000000.bin, train_000001.bin, ... of --shard_tokens tokens each (the last
one shorter). A document may straddle two files; no token is in two.

Resumable: after each file is renamed into place, progress.json records where in
the stream it ended (documents consumed, tokens into the next one). A rerun keeps
the complete files, skips the documents they consumed without tokenizing them,
and carries on; a finished run is recognised and left alone. Only the last,
partial shard is ever rewritten (e.g. when --max_tokens grows).

Needs Hugging Face `datasets` (pip install datasets) for the hub. With
--data_files and no `datasets` installed, local parquet/jsonl files are read
directly with pyarrow/json -- the shard writing is the same either way.
"""

import argparse
import glob
import gzip
import itertools
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # so `python data/prepare_fineweb.py` can import the data package
    sys.path.insert(0, REPO)

from data.tokenfile import TokenFileWriter, read_header, TokenFileError  # noqa: E402
from data.tokenizer import document_ids, get_tokenizer  # noqa: E402


def count(s):
    """'100M' -> 100_000_000; also K, B, plain ints and 1_000."""
    s = s.strip().upper().replace("_", "")
    mult = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


# --------------------------------------------------------------------------------------------
# the document stream


def _local_files(patterns):
    files = []
    for p in patterns:
        hits = sorted(glob.glob(p))
        if not hits:
            raise FileNotFoundError(f"--data_files {p} matches no file")
        files.extend(hits)
    return files


def _file_format(path):
    name = path.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".json")):
        return "json"
    raise ValueError(f"{path}: expected a .parquet, .jsonl or .json file")


def _read_local(files):
    """Documents of local parquet/jsonl files without `datasets` (same order it would give)."""
    for path in files:
        if _file_format(path) == "parquet":
            import pyarrow.parquet as pq
            pf = pq.ParquetFile(path)
            if "text" not in pf.schema_arrow.names:
                raise ValueError(f"{path}: no 'text' column (columns: {pf.schema_arrow.names})")
            for batch in pf.iter_batches(batch_size=1024, columns=["text"]):
                yield from batch.column("text").to_pylist()
        else:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        row = json.loads(line)
                        if "text" not in row:
                            raise ValueError(f"{path}:{n}: no 'text' field")
                        yield row["text"]


def documents(args):
    """The text of every document, in stream order."""
    try:
        import datasets  # imported here: only this path needs it, and it is a heavy import
    except ImportError:
        datasets = None
    if args.data_files:
        files = _local_files(args.data_files)
        if datasets is None:
            yield from _read_local(files)
            return
        fmt = _file_format(files[0])
        ds = datasets.load_dataset(fmt, data_files=files, split="train", streaming=True)
    else:
        if datasets is None:
            raise SystemExit("streaming from the hub needs Hugging Face datasets: pip install datasets "
                             "(or pass --data_files for local parquet/jsonl files)")
        ds = datasets.load_dataset(args.dataset, name=args.config, split="train", streaming=True)
    for row in ds:
        yield row["text"]


# --------------------------------------------------------------------------------------------
# progress.json


def _write_json(path, obj):
    part = path + ".tmp"
    with open(part, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(part, path)


def load_progress(out_dir, settings):
    """Completed files from an earlier run, checked against what is on disk; [] if none."""
    path = os.path.join(out_dir, "progress.json")
    if not os.path.exists(path):
        return {"settings": settings, "files": [], "done": False}
    with open(path) as f:
        progress = json.load(f)
    diff = {k: (progress["settings"].get(k), v) for k, v in settings.items() if progress["settings"].get(k) != v}
    if diff:
        details = ", ".join(f"{k}: was {old!r}, now {new!r}" for k, (old, new) in diff.items())
        raise SystemExit(f"{out_dir} holds shards made with other settings ({details}); "
                         f"use another --out_dir or delete it")
    kept = []
    for entry in progress["files"]:  # keep the longest prefix whose files are intact
        try:
            h = read_header(os.path.join(out_dir, entry["file"]))
        except (FileNotFoundError, TokenFileError) as e:
            print(f"redoing from {entry['file']}: {e}")
            break
        if h["n_tokens"] != entry["tokens"]:
            print(f"redoing from {entry['file']}: it has {h['n_tokens']} tokens, progress.json says {entry['tokens']}")
            break
        kept.append(entry)
    if len(kept) < len(progress["files"]):
        progress["done"] = False
    progress["files"] = kept
    return progress


# --------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="gpt2", choices=["gpt2", "llama3", "bytes", "hf"])
    ap.add_argument("--tokenizer_path", default=None,
                    help="llama3: Meta's tokenizer.model; hf: a Hugging Face model folder or its tokenizer.json")
    ap.add_argument("--out_dir", default=None, help="default: data/fineweb_edu_<tokenizer name> in the repo")
    ap.add_argument("--dataset", default="HuggingFaceFW/fineweb-edu")
    ap.add_argument("--config", default="sample-350BT")
    ap.add_argument("--data_files", nargs="+", default=None,
                    help="local parquet/jsonl file(s) or globs with a 'text' field, instead of the hub")
    ap.add_argument("--shard_tokens", type=count, default=count("100M"))
    ap.add_argument("--val_tokens", type=count, default=count("10M"))
    ap.add_argument("--max_tokens", type=count, default=None, help="stop after this many tokens (val included)")
    ap.add_argument("--batch_docs", type=int, default=1024, help="documents per tokenizer call")
    args = ap.parse_args(argv)
    if args.shard_tokens <= 0 or args.val_tokens < 0:
        ap.error("--shard_tokens must be > 0 and --val_tokens >= 0")
    tok = get_tokenizer(args.tokenizer, args.tokenizer_path)
    out_dir = args.out_dir or os.path.join(REPO, "data", f"fineweb_edu_{tok.name}")
    os.makedirs(out_dir, exist_ok=True)

    source = {"data_files": args.data_files} if args.data_files else {"dataset": args.dataset, "config": args.config}
    settings = {"tokenizer": tok.name, "n_vocab": tok.n_vocab, "source": source,
                "shard_tokens": args.shard_tokens, "val_tokens": args.val_tokens}
    if hasattr(tok, "identity"):  # a Hugging Face tokenizer: its full hash and how documents are delimited
        settings.update(tokenizer_identity=tok.identity, doc_prefix=tok.doc_prefix, doc_suffix=tok.doc_suffix)
    progress = load_progress(out_dir, settings)
    progress_path = os.path.join(out_dir, "progress.json")

    def capacity(i):
        return args.val_tokens if (args.val_tokens > 0 and i == 0) else args.shard_tokens

    def file_name(i):
        if args.val_tokens > 0:
            return "val.bin" if i == 0 else f"train_{i - 1:06d}.bin"
        return f"train_{i:06d}.bin"

    files = progress["files"]
    if progress["done"] and progress.get("max_tokens") in (None, args.max_tokens):
        print(f"{out_dir} is complete: {len(files)} files, {sum(e['tokens'] for e in files):,} tokens "
              f"({progress['end']})")
        return progress
    # only complete files are kept: a short last shard is redone so it can grow
    while files and files[-1]["tokens"] < capacity(len(files) - 1):
        files.pop()
    done_tokens = sum(e["tokens"] for e in files)
    if args.max_tokens is not None and done_tokens >= args.max_tokens:
        print(f"{out_dir} already holds {done_tokens:,} tokens >= --max_tokens {args.max_tokens:,}")
        return progress
    progress["done"] = False

    # where the kept files end in the stream: documents fully consumed, tokens into the next one
    doc_index, skip_tokens = (files[-1]["end_doc"], files[-1]["end_offset"]) if files else (0, 0)
    if files:
        print(f"resuming after {files[-1]['file']}: skipping {doc_index:,} documents "
              f"and {skip_tokens:,} tokens of the next ({done_tokens:,} tokens kept)")

    t0 = last_report = time.time()
    total, new_tokens = done_tokens, 0
    budget = args.max_tokens if args.max_tokens is not None else float("inf")
    writer, file_docs = None, 0
    position = (doc_index, skip_tokens)  # stream position after the last token written

    def finish_file():
        nonlocal writer
        writer.close()  # atomic rename into place, then record it
        files.append({"file": os.path.basename(writer.path), "tokens": writer.n_tokens,
                      "documents": file_docs, "end_doc": position[0], "end_offset": position[1]})
        _write_json(progress_path, progress)
        writer = None
        report()

    def report():
        elapsed = time.time() - t0
        rate = new_tokens / max(elapsed, 1e-9)
        line = f"{total:,} tokens, {position[0]:,} documents, {len(files)} files, {rate:,.0f} tokens/s, {elapsed:,.0f}s"
        if args.max_tokens is not None and rate > 0:
            line += f", ETA {(args.max_tokens - total) / rate / 60:,.1f} min"
        print(line, flush=True)

    stream = itertools.islice(documents(args), doc_index, None)  # consumed documents are read, not tokenized
    try:
        while total < budget:
            texts = list(itertools.islice(stream, args.batch_docs))
            if not texts:
                break
            for ids in tok.encode_batch(texts):
                arr = np.asarray(document_ids(tok, ids), dtype=np.int64)
                offset, skip_tokens = skip_tokens, 0  # only the first document after a resume is partly done
                arr = arr[offset:]
                while len(arr) and total < budget:
                    if writer is None:
                        writer = TokenFileWriter(os.path.join(out_dir, file_name(len(files))), tok.n_vocab, tok.name)
                        file_docs = 0
                    room = int(min(capacity(len(files)) - writer.n_tokens, budget - total))
                    take, arr = arr[:room], arr[room:]
                    writer.append(take)
                    file_docs += 1
                    total, new_tokens, offset = total + len(take), new_tokens + len(take), offset + len(take)
                    position = (doc_index, offset) if len(arr) else (doc_index + 1, 0)
                    if writer.n_tokens == capacity(len(files)):
                        finish_file()
                if len(arr):  # stopped inside this document by --max_tokens
                    break
                doc_index += 1
            if time.time() - last_report > 10:
                report()
                last_report = time.time()
        if writer is not None:
            finish_file()
    except BaseException:
        if writer is not None:
            writer.abort()  # complete files and progress.json stay valid for the next run
        raise

    progress["done"] = True
    progress["max_tokens"] = args.max_tokens
    progress["end"] = "max_tokens reached" if total >= budget else "end of data"
    _write_json(progress_path, progress)
    from data.packing import write_length_histogram   # document lengths: packing's dry-run figures
    write_length_histogram(out_dir, tok.state() if hasattr(tok, "identity") else None)
    print(f"done ({progress['end']}): {len(files)} files, {total:,} tokens, {position[0]:,} documents "
          f"in {out_dir}, {time.time() - t0:.1f}s")
    return progress


if __name__ == "__main__":
    main()
