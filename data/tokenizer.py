"""
Tokenizers, all with the same small surface:

    tok = get_tokenizer("gpt2")        # or "bytes", or "llama3" with path=".../tokenizer.model"
    tok.name, tok.n_vocab, tok.eot     # name is what token files record
    tok.encode(text) -> list[int]      # ordinary text: "<|endoftext|>" in the text is just text
    tok.encode_batch(texts) -> list[list[int]]
    tok.decode(ids) -> str
    tok.doc_prefix, tok.doc_suffix     ids around every document in a token file (document_ids)

- "bytes":  UTF-8 bytes 0..255 plus an end-of-text id 256 (n_vocab 257). Tiny
            models learn real structure on it in minutes on a laptop.
- "gpt2":   tiktoken's r50k_base (50,257 ids, end-of-text 50256).
- "llama3": Meta's tokenizer.model, which is a tiktoken BPE file: 128,000 ranks
            plus 256 special tokens (128,256 ids, end-of-text <|end_of_text|> 128001).
- "hf":     a Hugging Face model's own tokenizer.json, path= its folder or file (data/hf_tokenizer.py);
            its name is "hf-<hash of what it encodes>", and get_tokenizer("hf-...", path) checks that
            the file at path is that tokenizer. Documents delimited as its config says.

GPT-2 offline: tiktoken normally downloads r50k_base.tiktoken from
openaipublic.blob.core.windows.net. Where that is unreachable we use the same
file as shipped inside the openai-whisper sdist on PyPI (whisper/assets/gpt2.tiktoken,
byte-identical; checked against tiktoken's own sha256).
"""

import glob
import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile

# vocabulary sizes known without loading a tokenizer (dry runs, benchmarks on machines without the files)
N_VOCAB = {"bytes": 257, "gpt2": 50257, "llama3": 128256}
TOKENIZERS = tuple(N_VOCAB)

# --------------------------------------------------------------------------------------------
# bytes


class ByteTokenizer:
    """UTF-8 bytes are the tokens; id 256 marks the end of a document."""

    name = "bytes"
    n_vocab = 257
    eot = 256
    doc_prefix, doc_suffix = [], [256]

    def encode(self, text):
        return list(text.encode("utf-8"))

    def encode_batch(self, texts):
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids):
        # bytes between end-of-text marks are decoded together, so multi-byte
        # characters survive; the mark itself reads as GPT-2's "<|endoftext|>"
        out, run = [], bytearray()
        for i in ids:
            i = int(i)
            if i == self.eot:
                out.append(run.decode("utf-8", errors="replace") + "<|endoftext|>")
                run = bytearray()
            elif 0 <= i < 256:
                run.append(i)
            else:
                raise ValueError(f"bytes tokenizer: id {i} is outside [0, {self.n_vocab})")
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)


# --------------------------------------------------------------------------------------------
# tiktoken-based: gpt2, llama3


class TiktokenTokenizer:
    """A tiktoken Encoding under the name that token files record."""

    def __init__(self, name, enc, eot):
        self.name, self.enc, self.eot = name, enc, eot
        self.n_vocab = enc.n_vocab
        self.doc_prefix, self.doc_suffix = [], [eot]  # end-of-text after every document, as GPT-2 was trained

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts, num_threads=8):
        # tiktoken releases the GIL and encodes the batch on a thread pool
        return self.enc.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode(self, ids):
        return self.enc.decode([int(i) for i in ids])


# GPT-2's split pattern as tiktoken defines it for r50k_base: contractions, letter runs,
# digit runs and punctuation runs (each optionally with one leading space), then whitespace.
R50K_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"  # tiktoken's expected hash
WHISPER_SDIST = "openai-whisper==20250625"
WHISPER_MEMBER = "whisper/assets/gpt2.tiktoken"


def _cache_dir():
    return os.environ.get("NANOKD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nanokd")


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _checked(path, where):
    digest = _sha256(path)
    if digest != R50K_SHA256:
        raise ValueError(f"{path} ({where}) has sha256 {digest}, expected {R50K_SHA256} (r50k_base); "
                         f"refusing to use it. Delete it if it is a stale or corrupt copy.")
    return path


def _fetch_gpt2_bpe_from_pypi(dest):
    """pip-download the openai-whisper sdist, pull out gpt2.tiktoken, verify, store at dest."""
    print(f"nanokd: fetching gpt2.tiktoken from PyPI ({WHISPER_SDIST} sdist) into {dest}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               WHISPER_SDIST, "-d", tmp, "-q"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        sdists = glob.glob(os.path.join(tmp, "openai_whisper-*.tar.gz"))
        if r.returncode != 0 or not sdists:
            raise RuntimeError(f"could not get the GPT-2 BPE file: tiktoken cannot download r50k_base and "
                               f"`{' '.join(cmd)}` failed:\n{r.stderr.strip()[-2000:]}")
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.endswith("/" + WHISPER_MEMBER)]
            if not members:
                raise RuntimeError(f"{sdists[0]} has no {WHISPER_MEMBER}")
            data = tar.extractfile(members[0]).read()
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        part = f"{dest}.tmp{os.getpid()}"
        with open(part, "wb") as f:
            f.write(data)
        try:
            _checked(part, f"extracted from {os.path.basename(sdists[0])}")
        except ValueError:
            os.remove(part)
            raise
        os.replace(part, dest)  # atomic: concurrent processes can race here harmlessly
    return dest


def gpt2_bpe_file():
    """Path of a verified gpt2.tiktoken: installed whisper package, else the nanokd cache, else PyPI."""
    spec = importlib.util.find_spec("whisper")  # locates the package without importing it (no torch import)
    if spec is not None and spec.submodule_search_locations:
        for d in spec.submodule_search_locations:
            p = os.path.join(d, "assets", "gpt2.tiktoken")
            if os.path.exists(p):
                return _checked(p, "installed whisper package")
    cached = os.path.join(_cache_dir(), "gpt2.tiktoken")
    if os.path.exists(cached):
        return _checked(cached, "nanokd cache")
    return _fetch_gpt2_bpe_from_pypi(cached)


def _gpt2():
    import tiktoken
    try:
        enc = tiktoken.get_encoding("r50k_base")  # works online or with a warm tiktoken cache
    except Exception:
        from tiktoken.load import load_tiktoken_bpe
        ranks = load_tiktoken_bpe(gpt2_bpe_file(), expected_hash=R50K_SHA256)
        enc = tiktoken.Encoding(name="r50k_base", pat_str=R50K_PATTERN, mergeable_ranks=ranks,
                                special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)
    return TiktokenTokenizer("gpt2", enc, eot=enc.eot_token)


# Llama-3's split pattern (from Meta's release): case-insensitive contractions, letter runs
# with at most one leading non-letter, digits in groups of at most three, punctuation runs,
# newlines, then whitespace.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_N_SPECIAL = 256
# the first ten special tokens; the rest are reserved placeholders. Only the first two ids
# matter to this codebase: <|begin_of_text|> = ranks+0 and <|end_of_text|> = ranks+1 (our eot).
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                  "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
                  "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|reserved_special_token_4|>", "<|eot_id|>"]


def _llama3(path):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    if path is None:
        raise ValueError("the llama3 tokenizer needs path= (--tokenizer_path) pointing at Meta's "
                         "tokenizer.model (e.g. original/tokenizer.model in meta-llama/Meta-Llama-3-8B)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"llama3 tokenizer file {path} does not exist")
    # tiktoken caches files by path and, without a hash, would serve a stale copy if the
    # file at this path changed; passing the current file's hash makes it re-read instead
    ranks = load_tiktoken_bpe(path, expected_hash=_sha256(path))
    n = len(ranks)  # 128,000 for the real file
    names = LLAMA3_SPECIAL + [f"<|reserved_special_token_{i}|>"
                              for i in range(5, LLAMA3_N_SPECIAL - len(LLAMA3_SPECIAL) + 5)]
    special = {tok: n + i for i, tok in enumerate(names)}
    enc = tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                            special_tokens=special, explicit_n_vocab=n + LLAMA3_N_SPECIAL)
    return TiktokenTokenizer("llama3", enc, eot=special["<|end_of_text|>"])


def get_tokenizer(name, path=None):
    if name == "bytes":
        return ByteTokenizer()
    if name == "gpt2":
        return _gpt2()
    if name == "llama3":
        return _llama3(path)
    if name == "hf" or name.startswith("hf-"):
        from data.hf_tokenizer import load_hf_tokenizer
        tok = load_hf_tokenizer(path)
        if name != "hf" and tok.name != name:
            raise ValueError(f"{path} holds tokenizer {tok.name}, not {name}: another vocabulary")
        return tok
    raise ValueError(f"unknown tokenizer {name!r}; valid names: {', '.join(TOKENIZERS)}, "
                     f"hf (a Hugging Face tokenizer.json, with path=)")


def document_ids(tok, ids):
    """One document's ids as a token file holds them: the tokenizer's document prefix and suffix
    around it (end-of-text after it for nanokd's own tokenizers; as its config says for hf)."""
    return list(tok.doc_prefix) + list(ids) + list(tok.doc_suffix)


def padded_vocab_size(n_vocab):
    """Embedding rows to allocate: a multiple of 64 for real vocabularies (matmul-friendly,
    50257 -> 50304), a multiple of 8 for tiny ones (257 -> 264) so padding stays small."""
    m = 64 if n_vocab > 1024 else 8
    return (n_vocab + m - 1) // m * m
