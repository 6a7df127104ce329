"""
The paper's perplexity sets as token files, built exactly as the authors build them:

    python data/prepare_evalsets.py --tokenizer gpt2                   # all 12 (+ the held-out slice)
    python data/prepare_evalsets.py --tokenizer bytes --sets c4,gsm8k --out_dir data/embedded_bytes
    python data/prepare_evalsets.py --tokenizer llama3 --tokenizer_path .../tokenizer.model
    python data/prepare_evalsets.py --tokenizer hf --tokenizer_path path/to/teacher    # its tokenizer.json
    python data/prepare_evalsets.py --local_dir fixtures/ --sets wikitext  # local files, no hub

Source: the authors' `get_ppl_enc` and `clean_text_for_tokenizer` in TaiMingLu/maxtext-distillation,
lm-evaluation-harness/scripts/test_orbax_eval.py at commit 1ff3e277b929ed84af84aa580828fd99040c11de
(its PPL_TASKS list the 12). Each set is one Hugging Face dataset split; its first N rows (N below,
`dataset[:N]`; all rows where they take all) are turned into texts, joined with a separator, the joined
string is cleaned as theirs is (lone surrogates -> U+FFFD -> a space; NUL, C0 controls but tab/newline/CR,
DEL, C1 controls, private-use code points, BOMs and non-characters dropped) and tokenized in one piece.

    set                     dataset (config), split              rows     separator  text of a row
    c4                      allenai/c4 (en/c4-train.00000-of-01024.json.gz), train  8,192  " "  text
    wikitext                wikitext (wikitext-103-v1), train    32,768   "\\n\\n"   text (empty rows kept)
    cnn_dailymail           cnn_dailymail (3.0.0), train         16,384   " "        article
    finewebedu-train-0.001  TaiMingLu/finewebedu-train-0.001, train  32,768  " "    text
    dm_mathematics          timaeus/pile-dm_mathematics, train   100,000  " "        text
    gsm8k                   openai/gsm8k (main), train           100,000  "\\n\\n"   question \\n\\n answer
    arxiv                   ccdv/arxiv-summarization (section), train  100,000  "\\n\\n"  abstract
    humaneval               openai/openai_humaneval, test        all      "\\n\\n"   prompt \\n\\n canonical_solution
    codesearchnet           claudios/code_search_net (all), train  8,192  "\\n\\n"   func_documentation_string \\n\\n whole_func_string
    pubmed_qa               qiaojin/PubMedQA (pqa_labeled), train  1,000  "\\n\\n"   question \\n\\n long_answer
    echr                    glnmario/ECHR, train                 4,096    "\\n\\n"   docname \\n\\n text \\n\\n conclusion
    xquad                   google/xquad (12 xquad.* configs), validation  all  "\\n\\n"  context \\n\\n question \\n\\n first answer

BOS. get_ppl_enc puts the tokenizer's BOS first only when called with add_special_tokens=True, and the
authors' PPL runs (train/ablate2-eval/eval_pretrain_ppl.sh) leave their --add_special_tokens at its
default, False: their streams start with the text. So does this script's; --bos puts the BOS
(end-of-text for bytes/gpt2, <|begin_of_text|> for llama3, the bos_token of an hf tokenizer's config) first. eval.py never scores a window's first
token, so this moves the window boundaries by one token and nothing else.

Output: `<out_dir>/ppl_<set>.bin` (data/tokenfile.py format) and `ppl_<set>.json` (where it came from),
in the data directory a run trains from (default data/fineweb_edu_<tokenizer>, beside prepare_fineweb.py's
val.bin), where eval.py picks up every ppl_*.bin: `--tasks ppl` or `--tasks paper`, scored as the
paper scores them with `--ppl_window 4096 --ppl_max_windows 256`. Each file is the whole stream; the
paper reads at most 256 x 4,096 tokens of it. A file is written to a temporary name and renamed, so a
failure leaves nothing under the final name.

In-domain, and what nanokd trains on. finewebedu-train-0.001 is the authors' own dataset, a slice of
FineWeb-Edu's *train* split, which is all FineWeb-Edu has: the documents prepare_fineweb.py streams
(HuggingFaceFW/fineweb-edu, sample-350BT, from its start) come from the same pool. Which documents
the slice holds cannot be checked from here (no hub); if it is a uniform 0.1% sample of sample-350BT,
a run on D tokens of it has seen about D/350B of the slice's documents (14% at 50B, 86% at 300B), and
more of it for a sample of a smaller pool. So read it as the paper does -- fit to the training
distribution, possibly on seen text -- not as held-out loss. Beside it, `finewebedu-heldout` is
guaranteed unseen: the same dataset and config prepare_fineweb.py streams, its first documents, as
many as lie wholly inside the first --val_tokens tokens of the stream (prepare_fineweb.py's val.bin,
never trained on; pass the --val_tokens that run used, default 10M), at most 32,768 of them, joined
with " " and cleaned as the paper's slice is.

Offline. With no `datasets` or no hub, every set fails with an error that names it (the others are
still built) and the exit status is 1. --local_dir reads the same splits from local files instead,
laid out as the hub's parquet exports are: <local_dir>/<dataset id>/<config or "default">/<split>-*.parquet
(or <split>/*.parquet, or .jsonl / .json / .json.gz), and for C4 its own file,
<local_dir>/allenai/c4/en/c4-train.00000-of-01024.json.gz. Rows are read in file-name order.
"""

import argparse
import glob
import gzip
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # so `python data/prepare_evalsets.py` can import the data package
    sys.path.insert(0, REPO)

from data.tokenfile import TokenFileWriter  # noqa: E402
from data.tokenizer import document_ids, get_tokenizer  # noqa: E402

XQUAD = [f"xquad.{lang}" for lang in ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")]


def pair(a, b):
    return lambda r: f"{r[a]}\n\n{r[b]}"


def first_answer(r):
    answers = r["answers"]["text"]
    return f"{r['context']}\n\n{r['question']}\n\n{answers[0] if answers else ''}"


# name -> dataset id, configs (one entry per load_dataset call, their rows concatenated), split,
# rows (None = all), separator, a row's text; data_files for C4, which they read one file of
SETS = {
    "c4": dict(path="allenai/c4", configs=[None], split="train", rows=8192, sep=" ", text=lambda r: r["text"],
               data_files="en/c4-train.00000-of-01024.json.gz"),
    "wikitext": dict(path="wikitext", configs=["wikitext-103-v1"], split="train", rows=32768, sep="\n\n",
                     text=lambda r: r["text"]),
    "cnn_dailymail": dict(path="cnn_dailymail", configs=["3.0.0"], split="train", rows=16384, sep=" ",
                          text=lambda r: r["article"]),
    "finewebedu-train-0.001": dict(path="TaiMingLu/finewebedu-train-0.001", configs=[None], split="train",
                                   rows=32768, sep=" ", text=lambda r: r["text"]),
    "dm_mathematics": dict(path="timaeus/pile-dm_mathematics", configs=[None], split="train", rows=100000,
                           sep=" ", text=lambda r: r["text"]),
    "gsm8k": dict(path="openai/gsm8k", configs=["main"], split="train", rows=100000, sep="\n\n",
                  text=pair("question", "answer")),
    "arxiv": dict(path="ccdv/arxiv-summarization", configs=["section"], split="train", rows=100000, sep="\n\n",
                  text=lambda r: r["abstract"]),
    "humaneval": dict(path="openai/openai_humaneval", configs=[None], split="test", rows=None, sep="\n\n",
                      text=pair("prompt", "canonical_solution")),
    "codesearchnet": dict(path="claudios/code_search_net", configs=["all"], split="train", rows=8192, sep="\n\n",
                          text=pair("func_documentation_string", "whole_func_string")),
    "pubmed_qa": dict(path="qiaojin/PubMedQA", configs=["pqa_labeled"], split="train", rows=1000, sep="\n\n",
                      text=pair("question", "long_answer")),
    "echr": dict(path="glnmario/ECHR", configs=[None], split="train", rows=4096, sep="\n\n",
                 text=lambda r: f"{r['docname']}\n\n{r['text']}\n\n{r['conclusion']}"),
    "xquad": dict(path="google/xquad", configs=XQUAD, split="validation", rows=None, sep="\n\n", text=first_answer),
}
PAPER_SETS = list(SETS)  # the authors' PPL_TASKS, in their order
HELDOUT = "finewebedu-heldout"
BOS = {"bytes": 256, "gpt2": 50256, "llama3": 128000}  # what an exported model's tokenizer calls BOS


def bos_id(tokenizer):
    """The BOS id get_ppl_enc would put first: the table's for nanokd's tokenizers, an hf tokenizer's own."""
    if tokenizer.name in BOS:
        return BOS[tokenizer.name]
    if getattr(tokenizer, "bos", None) is None:
        raise ValueError(f"tokenizer {tokenizer.name} has no bos_token (its tokenizer_config.json names none); "
                         f"leave out --bos")
    return tokenizer.bos


class SetUnavailable(RuntimeError):
    pass


# ---- the authors' text cleaning --------------------------------------------------------------

# what their clean_text_for_tokenizer drops, as one character class: NUL and C0 controls but tab, LF
# and CR; DEL and the C1 controls; the private-use areas; the noncharacters U+FDD0..FDEF, U+FFFE/FFFF;
# the BOM. (Surrogates cannot survive the decode below; code points past U+10FFFF do not exist in str.)
_DROP = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ue000-\uf8ff\ufdd0-\ufdef\ufeff\ufffe\uffff"
                   "\U000f0000-\U000ffffd\U00100000-\U0010fffd]")


def clean_text(text):
    """The authors' clean_text_for_tokenizer, as a regex: lone surrogates become U+FFFD (one per
    invalid UTF-8 byte, as their surrogatepass/replace round trip gives), every U+FFFD becomes a space,
    and the characters above are removed."""
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return _DROP.sub("", text).replace("\ufffd", " ")


# ---- reading rows ------------------------------------------------------------------------------

def _read_file(path):
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if path.removesuffix(".gz").endswith(".json") and f.read(1) == "[":  # a JSON array, not JSON lines
            f.seek(0)
            return json.load(f)
        f.seek(0)
        return [json.loads(line) for line in f if line.strip()]


def local_rows(local_dir, path, config, split, data_files=None, limit=None):
    """Rows of one split from local files laid out as the hub's parquet exports are (module docstring)."""
    base = os.path.join(local_dir, path)
    if data_files:
        files = [os.path.join(base, data_files)]
    else:
        folder = os.path.join(base, config or "default")
        files = sorted(f for pattern in (f"{split}-*", f"{split}.*", f"{split}/*")
                       for f in glob.glob(os.path.join(folder, pattern))
                       if f.endswith((".parquet", ".jsonl", ".json", ".json.gz", ".jsonl.gz")))
    files = [f for f in files if os.path.exists(f)]
    if not files:
        raise SetUnavailable(f"no local files for {path} ({config or 'default'}, {split}) under {base}")
    rows = []
    for f in files:
        rows += _read_file(f)
        if limit is not None and len(rows) >= limit:
            break
    return rows[:limit] if limit is not None else rows


def hub_rows(path, config, split, data_files=None, limit=None):
    """load_dataset(...)[:limit] with the arguments the authors pass (trust_remote_code aside: datasets 4
    removed dataset scripts, and every set here is served as data files)."""
    try:
        import datasets  # imported here: only the hub path needs it, and it is not a requirement
    except ImportError:
        raise SetUnavailable("Hugging Face `datasets` is not installed (pip install datasets), "
                             "or pass --local_dir") from None
    kwargs = dict(data_files={"train": data_files}, verification_mode="no_checks") if data_files else {}
    try:
        ds = datasets.load_dataset(path, config, split=split, **kwargs)
    except Exception as e:  # no network, a moved dataset, ...: say which and why
        raise SetUnavailable(f"datasets.load_dataset({path!r}, {config!r}, split={split!r}) failed: "
                             f"{type(e).__name__}: {str(e)[:300]}") from None
    return list(ds.select(range(min(limit, len(ds))))) if limit is not None else list(ds)


def set_text(name, local_dir=None, rows=None):
    """The joined, cleaned text of one set, and how many rows went into it. rows: override N (tests)."""
    spec = SETS[name]
    n = spec["rows"] if rows is None else rows
    got = []
    for config in spec["configs"]:
        if local_dir:
            got += local_rows(local_dir, spec["path"], config, spec["split"], spec.get("data_files"), n)
        else:
            got += hub_rows(spec["path"], config, spec["split"], spec.get("data_files"), n)
    return clean_text(spec["sep"].join(spec["text"](r) for r in got)), len(got)


def heldout_documents(tokenizer, val_tokens, local_dir=None, dataset="HuggingFaceFW/fineweb-edu",
                      config="sample-350BT", max_docs=32768):
    """The first documents of prepare_fineweb.py's stream that lie wholly in its val.bin (its first
    val_tokens tokens: each document's tokens and its delimiters), at most max_docs of them."""
    if local_dir:
        docs = (r["text"] for r in local_rows(local_dir, dataset, config, "train"))
    else:
        try:
            import datasets
        except ImportError:
            raise SetUnavailable("Hugging Face `datasets` is not installed (pip install datasets), "
                                 "or pass --local_dir") from None
        try:
            docs = (r["text"] for r in datasets.load_dataset(dataset, name=config, split="train", streaming=True))
        except Exception as e:
            raise SetUnavailable(f"datasets.load_dataset({dataset!r}, {config!r}, streaming) failed: "
                                 f"{type(e).__name__}: {str(e)[:300]}") from None
    out, used = [], 0
    try:
        for doc in docs:
            used += len(document_ids(tokenizer, tokenizer.encode(doc)))
            if used > val_tokens or len(out) == max_docs:
                break
            out.append(doc)
    except SetUnavailable:
        raise
    except Exception as e:  # a stream that dies part-way
        raise SetUnavailable(f"reading {dataset} ({config}) failed: {type(e).__name__}: {str(e)[:300]}") from None
    return out


# ---- writing -------------------------------------------------------------------------------------

def build(name, tokenizer, out_dir, local_dir=None, bos=False, rows=None, val_tokens=10_000_000, max_tokens=None):
    """Write ppl_<name>.bin (and .json); returns its path. Raises SetUnavailable, leaving no file."""
    if name == HELDOUT:
        docs = heldout_documents(tokenizer, val_tokens, local_dir, max_docs=32768 if rows is None else rows)
        if not docs:
            raise SetUnavailable(f"no whole document fits in the first {val_tokens:,} tokens")
        text, n_rows = clean_text(" ".join(docs)), len(docs)
        source = {"dataset": "HuggingFaceFW/fineweb-edu", "config": "sample-350BT", "split": "train",
                  "rows": n_rows, "separator": " ", "within_val_tokens": val_tokens}
    else:
        text, n_rows = set_text(name, local_dir, rows)
        spec = SETS[name]
        source = {"dataset": spec["path"], "configs": spec["configs"], "split": spec["split"], "rows": n_rows,
                  "separator": spec["sep"], **({"data_files": spec["data_files"]} if "data_files" in spec else {})}
    ids = ([bos_id(tokenizer)] if bos else []) + tokenizer.encode(text)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"ppl_{name}.bin")
    with TokenFileWriter(path, tokenizer.n_vocab, tokenizer.name) as w:  # temp file, renamed on success
        w.append(ids)
    info = {"set": name, "tokenizer": tokenizer.name, "tokens": len(ids), "characters": len(text), "bos": bos,
            **({"tokenizer_identity": tokenizer.identity} if hasattr(tokenizer, "identity") else {}),
            "source": source, "local_dir": local_dir,
            "built_as": "get_ppl_enc, TaiMingLu/maxtext-distillation lm-evaluation-harness/scripts/"
                        "test_orbax_eval.py @ 1ff3e277b929ed84af84aa580828fd99040c11de"}
    tmp = path[:-len(".bin")] + ".json.tmp"
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, path[:-len(".bin")] + ".json")
    return path


def main(argv=None):
    from data.prepare_fineweb import count
    names = PAPER_SETS + [HELDOUT]
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="the paper's 12 sets: " + ", ".join(PAPER_SETS) + f"; and {HELDOUT} (see above)")
    ap.add_argument("--tokenizer", default="gpt2", choices=["gpt2", "llama3", "bytes", "hf"])
    ap.add_argument("--tokenizer_path", default=None,
                    help="llama3: Meta's tokenizer.model; hf: a Hugging Face model folder or its tokenizer.json")
    ap.add_argument("--sets", default="all", help=f"comma-separated, or all (the 12 and {HELDOUT}) or paper (the 12)")
    ap.add_argument("--out_dir", default=None, help="default: data/fineweb_edu_<tokenizer name> in the repo")
    ap.add_argument("--local_dir", default=None, help="read local files laid out as the hub's (see above)")
    ap.add_argument("--bos", action="store_true", help="put the BOS token first (get_ppl_enc with add_special_tokens)")
    ap.add_argument("--val_tokens", type=count, default=count("10M"),
                    help=f"{HELDOUT}: the --val_tokens of the prepare_fineweb.py run it must not overlap")
    ap.add_argument("--max_tokens", type=count, default=None, help="keep only the first tokens of each stream")
    args = ap.parse_args(argv)
    chosen = {"all": names, "paper": PAPER_SETS}.get(args.sets) or [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in names]
    if unknown:
        ap.error(f"unknown set(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    tok = get_tokenizer(args.tokenizer, args.tokenizer_path)
    out_dir = args.out_dir or os.path.join(REPO, "data", f"fineweb_edu_{tok.name}")
    os.makedirs(out_dir, exist_ok=True)
    failed = {}
    for name in chosen:
        try:
            path = build(name, tok, out_dir, args.local_dir, args.bos, val_tokens=args.val_tokens,
                         max_tokens=args.max_tokens)
            with open(path[:-len(".bin")] + ".json") as f:
                info = json.load(f)
            print(f"{name:24s} {info['tokens']:>12,} tokens from {info['source']['rows']:,} rows -> {path}")
        except SetUnavailable as e:
            failed[name] = str(e)
            print(f"prepare_evalsets.py: cannot build {name}: {e}", file=sys.stderr)
    if failed:
        print(f"prepare_evalsets.py: {len(failed)} of {len(chosen)} set(s) not built ({', '.join(failed)}); "
              f"nothing was written for them", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
