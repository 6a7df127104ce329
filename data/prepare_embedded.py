"""
The embedded default corpus: built fully offline from what PyPI and CPython ship.

    python data/prepare_embedded.py [--tokenizer bytes|gpt2] [--out_dir DIR] [--force]
    python data/prepare_embedded.py --tokenizer hf --tokenizer_path path/to/teacher   # its tokenizer.json

Writes to data/embedded_<tokenizer>/ (by default):

    train.bin, val.bin   in-domain: the Wikipedia sample in the gensim wheel
                         (gensim/test/test_data/enwiki-...-shortened.bz2, real MediaWiki
                         XML), markup stripped to prose, split by article ~95/5 (fixed seed)
    ood_pydocs.bin       out-of-domain: CPython's pydoc_data/topics.py (the language
                         reference; varies a little between Python versions, so the
                         version is recorded in meta.json)
    ood_news.bin         out-of-domain: gensim's lee_background.cor (news, one doc a line)
    meta.json            sources, tokenizer, documents and tokens per split

Every document is followed by the tokenizer's end-of-text token (a Hugging Face tokenizer's
documents are delimited as its config says, data/hf_tokenizer.py). The gensim wheel is
fetched once with `pip download` into data/cache/ and read as a zip, not installed.
"""

import argparse
import bz2
import glob
import hashlib
import html
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # so `python data/prepare_embedded.py` can import the data package
    sys.path.insert(0, REPO)

from data.tokenfile import write_tokens, read_header, TokenFileError  # noqa: E402
from data.tokenizer import document_ids, get_tokenizer  # noqa: E402

CACHE = os.path.join(REPO, "data", "cache")
GENSIM = "gensim==4.4.0"
WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_MEMBER = "gensim/test/test_data/lee_background.cor"
SPLIT_SEED = 1337
VAL_FRACTION = 0.05
SPLITS = ("train", "val", "ood_pydocs", "ood_news")

# --------------------------------------------------------------------------------------------
# wiki markup -> prose


def _replace_nested(text, open_, close, fn):
    """Replace each outermost open_ ... close span (nesting allowed) by fn(inner text).
    An opener that is never closed is left as it is: dropping to the end of the
    article would lose more prose than the stray markup costs."""
    out, depth, start, last = [], 0, 0, 0
    pattern = re.compile(re.escape(open_) + "|" + re.escape(close))
    for m in pattern.finditer(text):
        if m.group() == open_:
            if depth == 0:
                start = m.start()
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                out.append(text[last:start])
                out.append(fn(text[start + len(open_):m.start()]))
                last = m.end()
    out.append(text[last:])
    return "".join(out)


_DROP_NAMESPACES = ("file:", "image:", "category:", "media:")
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z]+)?:")


def _link(inner):
    """[[target|label]] -> label, [[target]] -> target; files, categories and
    interlanguage links are dropped (with any links nested in their captions)."""
    target, _, label = inner.partition("|")
    t = target.strip().lower()
    if t.startswith(_DROP_NAMESPACES) or (_INTERLANGUAGE.match(t) and not label):
        return ""
    # a label can itself hold links only in odd cases; flatten them the same way
    return _replace_nested(label if label else target, "[[", "]]", _link)


_DROP_SECTIONS = {"references", "external links", "see also", "further reading", "notes",
                  "bibliography", "sources", "citations", "footnotes"}


def strip_wiki_markup(text):
    """MediaWiki source -> plain prose, reasonably: no templates, refs, tables, tags, files
    or categories; link labels kept; headings kept as lines of text; reference/link
    sections at the end dropped."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref(\s[^>]*)?/>", "", text)                          # <ref name="x" />
    text = re.sub(r"<ref(\s[^>]*)?>.*?</ref\s*>", "", text, flags=re.S)   # <ref>...</ref>
    text = re.sub(r"<(math|gallery|timeline|score|syntaxhighlight|source|imagemap)\b[^>]*>.*?</\1\s*>",
                  "", text, flags=re.S | re.I)
    text = _replace_nested(text, "{{", "}}", lambda inner: "")             # templates, nested
    text = _replace_nested(text, "{|", "|}", lambda inner: "")             # tables
    text = _replace_nested(text, "[[", "]]", _link)
    text = re.sub(r"\[(?:https?:)?//[^\s\]]+\s+([^\]]*)\]", r"\1", text)   # [http://x label] -> label
    text = re.sub(r"\[(?:https?:)?//[^\s\]]+\]", "", text)                 # [http://x] -> nothing
    text = re.sub(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>", "", text)      # remaining html tags
    text = re.sub(r"'{2,}", "", text)                                      # ''italic'', '''bold'''
    text = re.sub(r"__[A-Z]+__", "", text)                                 # __NOTOC__ and friends
    text = html.unescape(text).replace("\xa0", " ")

    lines = []
    for line in text.split("\n"):
        line = line.strip()
        m = re.match(r"^(=+)\s*(.*?)\s*\1$", line)
        if m:  # heading: keep its text as a line of its own, stop at the reference sections
            if m.group(2).lower() in _DROP_SECTIONS:
                break
            line = m.group(2)
        line = re.sub(r"^[*#:;]+\s*", "", line)  # list / indent markers
        if line.startswith("----"):
            line = ""
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line)  # "()" left by removed templates
        line = re.sub(r"\s+([,.;:])", r"\1", line)  # space left where a template or ref was
        line = re.sub(r"[ \t]{2,}", " ", line).strip()
        if line and not re.search(r"\w", line):  # only punctuation left
            line = ""
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)  # at most one blank line between paragraphs
    return text.strip()


def wiki_articles(xml_bytes):
    """(title, prose) for each article page (namespace 0, not a redirect), in file order."""
    articles = []
    for _, elem in ET.iterparse(io.BytesIO(xml_bytes)):
        if elem.tag.rsplit("}", 1)[-1] != "page":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: child for child in elem}
        revision = fields.get("revision")
        text = None
        if revision is not None:
            for child in revision:
                if child.tag.rsplit("}", 1)[-1] == "text":
                    text = child.text
        if fields["ns"].text == "0" and "redirect" not in fields and text:
            body = strip_wiki_markup(text)
            if body:
                articles.append((fields["title"].text, body))
        elem.clear()  # keep memory flat
    return articles


# --------------------------------------------------------------------------------------------
# sources


def gensim_wheel():
    """The gensim wheel in data/cache, downloaded from PyPI on first use."""
    pattern = os.path.join(CACHE, "gensim-4.4.0-*.whl")
    hits = sorted(glob.glob(pattern))
    if hits:
        return hits[0]
    os.makedirs(CACHE, exist_ok=True)
    # pin one platform so every host gets the same wheel (the test data is what we want,
    # not the compiled code, and gensim has no pure-Python wheel)
    print(f"fetching {GENSIM} wheel from PyPI into {CACHE} ...", flush=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:  # only a complete wheel lands in the cache
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", GENSIM, "-d", tmp, "-q"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        got = sorted(glob.glob(os.path.join(tmp, "gensim-4.4.0-*.whl")))
        if r.returncode != 0 or not got:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{r.stderr.strip()[-2000:]}")
        dest = os.path.join(CACHE, os.path.basename(got[0]))
        os.replace(got[0], dest)
    return dest


def load_documents(log=print):
    """{split: list of documents} for all four splits, plus source notes for meta.json."""
    t0 = time.time()
    wheel = gensim_wheel()
    with zipfile.ZipFile(wheel) as z:
        wiki_bz2 = z.read(WIKI_MEMBER)
        news_raw = z.read(NEWS_MEMBER)
    news = news_raw.decode("utf-8")
    log(f"[{time.time() - t0:6.1f}s] read {os.path.basename(wheel)}")

    articles = wiki_articles(bz2.decompress(wiki_bz2))
    docs = [f"{title}\n\n{body}" for title, body in articles]
    order = list(range(len(docs)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_val = max(1, round(VAL_FRACTION * len(docs)))
    val_ids = set(order[:n_val])
    splits = {"train": [d for i, d in enumerate(docs) if i not in val_ids],
              "val": [d for i, d in enumerate(docs) if i in val_ids]}
    log(f"[{time.time() - t0:6.1f}s] wikipedia: {len(docs)} articles "
        f"({sum(map(len, docs)):,} chars) -> {len(splits['train'])} train, {len(splits['val'])} val")

    import pydoc_data.topics
    topics = pydoc_data.topics.topics
    splits["ood_pydocs"] = [topics[k].strip() for k in sorted(topics) if topics[k].strip()]
    log(f"[{time.time() - t0:6.1f}s] python docs: {len(splits['ood_pydocs'])} topics")

    splits["ood_news"] = [line.strip() for line in news.split("\n") if line.strip()]
    log(f"[{time.time() - t0:6.1f}s] news: {len(splits['ood_news'])} documents")

    sources = {
        "train/val": f"{GENSIM} wheel ({os.path.basename(wheel)}): {WIKI_MEMBER}, markup stripped, "
                     f"split by article (seed {SPLIT_SEED}, {VAL_FRACTION:.0%} val)",
        "ood_pydocs": f"CPython {sys.version.split()[0]} pydoc_data/topics.py, one document per topic",
        "ood_news": f"{GENSIM} wheel: {NEWS_MEMBER}, one document per line",
        "sha256": {WIKI_MEMBER: hashlib.sha256(wiki_bz2).hexdigest(),
                   NEWS_MEMBER: hashlib.sha256(news_raw).hexdigest()},
    }
    return splits, sources


def tokenize_docs(tok, docs, batch=256):
    """All documents, each delimited as the tokenizer says (end-of-text after), as one token array."""
    dtype = np.uint16 if tok.n_vocab <= 2**16 else np.uint32
    parts = []
    for i in range(0, len(docs), batch):
        for ids in tok.encode_batch(docs[i:i + batch]):
            parts.append(np.asarray(document_ids(tok, ids), dtype=dtype))
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------------


def _already_done(out_dir, tok):
    """True if every output exists and was made with this tokenizer."""
    if not os.path.exists(os.path.join(out_dir, "meta.json")):
        return False
    try:
        heads = [read_header(os.path.join(out_dir, f"{s}.bin")) for s in SPLITS]
    except (FileNotFoundError, TokenFileError):
        return False
    return all(h["tokenizer"] == tok.name and h["vocab_size"] == tok.n_vocab for h in heads)


def _table(counts):
    lines = [f"{'split':<12}{'documents':>11}{'tokens':>12}"]
    for s in SPLITS:
        lines.append(f"{s:<12}{counts[s]['documents']:>11,}{counts[s]['tokens']:>12,}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="bytes", choices=["bytes", "gpt2", "hf"])
    ap.add_argument("--tokenizer_path", default=None, help="hf: a Hugging Face model folder or its tokenizer.json")
    ap.add_argument("--out_dir", default=None, help="default: data/embedded_<tokenizer name> in the repo")
    ap.add_argument("--force", action="store_true", help="rebuild even if the outputs exist")
    ap.add_argument("--paragraphs", action="store_true",
                    help="every Wikipedia paragraph (text between blank lines) is a document of its own: short "
                         "documents, several to a row, for measuring document-aware training (packing) at laptop "
                         "scale; default out_dir data/embedded_<tokenizer>_paragraphs")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.tokenizer == "hf" and not args.tokenizer_path:
        sys.exit("prepare_embedded.py: --tokenizer hf reads a Hugging Face tokenizer.json: add --tokenizer_path "
                 "with the teacher's folder (or its tokenizer.json)")
    try:
        tok = get_tokenizer(args.tokenizer, args.tokenizer_path)
    except (ValueError, OSError) as e:   # no tokenizer.json there, one the `tokenizers` library cannot read
        sys.exit(f"prepare_embedded.py: {e}")
    out_dir = args.out_dir or os.path.join(REPO, "data", f"embedded_{tok.name}" + ("_paragraphs" if args.paragraphs else ""))

    if not args.force and _already_done(out_dir, tok):
        with open(os.path.join(out_dir, "meta.json")) as f:
            meta = json.load(f)
        print(f"{out_dir} is already prepared with tokenizer '{tok.name}' (--force to rebuild)")
        print(_table(meta["splits"]))
        return meta

    def log(msg):
        print(msg, flush=True)

    splits, sources = load_documents(log)
    if args.paragraphs:   # the in-domain splits only: the OOD sets are short documents already
        for s in ("train", "val"):
            splits[s] = [p.strip() for d in splits[s] for p in d.split("\n\n") if p.strip()]
        sources["documents"] = "train and val: one document per Wikipedia paragraph (--paragraphs)"
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for s in SPLITS:
        tokens = tokenize_docs(tok, splits[s])
        write_tokens(os.path.join(out_dir, f"{s}.bin"), tokens, tok.n_vocab, tok.name)
        counts[s] = {"documents": len(splits[s]), "tokens": int(len(tokens))}
        log(f"[{time.time() - t0:6.1f}s] {s}: {len(splits[s]):,} documents -> {len(tokens):,} tokens")

    meta = {"tokenizer": tok.name, "n_vocab": tok.n_vocab, "eot": tok.eot, "splits": counts,
            "sources": sources, "python": sys.version.split()[0]}
    if hasattr(tok, "identity"):  # a Hugging Face tokenizer: its full hash, file and document delimiters
        meta.update(tokenizer_identity=tok.identity, tokenizer_source=tok.source,
                    doc_prefix=tok.doc_prefix, doc_suffix=tok.doc_suffix)
    part = os.path.join(out_dir, "meta.json.tmp")
    with open(part, "w") as f:
        json.dump(meta, f, indent=2)
    from data.token_counts import write_counts   # training-set frequency of every id, for analyze.py
    write_counts(out_dir)
    from data.packing import write_length_histogram   # document lengths: packing's dry-run figures
    write_length_histogram(out_dir, tok.state() if hasattr(tok, "identity") else None)
    os.replace(part, os.path.join(out_dir, "meta.json"))   # last: meta.json marks a finished preparation
    print(_table(counts))
    print(f"wrote {out_dir} in {time.time() - t0:.1f}s")
    return meta


if __name__ == "__main__":
    main()
