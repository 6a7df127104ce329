"""
A Hugging Face model's own tokenizer (its tokenizer.json, through the `tokenizers` library), with
the surface of data/tokenizer.py's, so data can be prepared in a teacher's vocabulary:

    tok = load_hf_tokenizer("path/to/hf_folder")   # or .../tokenizer.json (its tokenizer_config.json beside it)
    tok.name          "hf-" + the first 29 hex digits of tok.identity: what token files record (32 bytes)
    tok.identity      sha256 of what the tokenizer encodes (tokenizer_identity below)
    tok.n_vocab       highest id + 1, added tokens included (Llama-3 128,256; Qwen3 151,669; SmolLM2 49,152)
    tok.eot, tok.bos  the id that marks a document boundary; the BOS id or None
    tok.doc_prefix, tok.doc_suffix   ids put before / after every document in a token file
    tok.encode(text), tok.encode_batch(texts), tok.decode(ids)
    tok.state() / HFTokenizer.from_state(state)   plain str/int/list/dict, to travel inside a checkpoint

Identity. Two files hold the same tokenizer when they encode alike, whatever their formatting: merges
written as "a b" strings or as pairs, keys in another order, indentation, truncation or padding
settings. So the file is parsed by `tokenizers` and written back by it (one canonical form), and the
hash covers the parts that decide the ids: the model (its type, vocabulary, merges and options), the
added/special tokens (id, text, flags), the normalizer and the pre-tokenizer. Any change to those --
one merge, one token's id, the split regex -- changes the hash. The decoder, post-processor and
truncation/padding do not change what `encode` returns here and are left out.

Documents are delimited as the model's tokenizer config says, which is what its tokenizer does when
asked for special tokens: `add_bos_token` / `add_eos_token` in tokenizer_config.json where present
(Llama-2, TinyLlama), else what tokenizer.json's post-processor adds around a sequence (Llama-3:
<|begin_of_text|> first). Where neither adds anything (Qwen3, SmolLM2, GPT-2-style tokenizers) the
eos_token goes after every document, as GPT-2's end-of-text does, so documents never run together.

As with nanokd's other tokenizers, special-token text inside a document ("<|endoftext|>" in a web
page) is encoded as ordinary text, never as the special token.
"""

import hashlib
import json
import os
import zipfile

IDENTITY_FIELDS = ("model", "added_tokens", "normalizer", "pre_tokenizer")
PROBE = "Hello world"  # encoded with and without special tokens to see what the post-processor adds


def tokenizer_identity(tokenizer_json):
    """sha256 (hex) of what a tokenizer.json (its text) encodes, in the installed `tokenizers`' canonical form."""
    from tokenizers import Tokenizer
    canonical = json.loads(Tokenizer.from_str(tokenizer_json).to_str())
    part = {k: canonical.get(k) for k in IDENTITY_FIELDS}
    part["added_tokens"] = sorted(part["added_tokens"] or [], key=lambda t: t["id"])
    blob = json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _token_text(value):
    return value.get("content") if isinstance(value, dict) else value  # str, AddedToken dict, or None


class HFTokenizer:
    def __init__(self, tokenizer_json, tokenizer_config=None, source=None):
        from tokenizers import Tokenizer
        self.tokenizer_json, self.tokenizer_config = tokenizer_json, dict(tokenizer_config or {})
        self.source = source
        self.tk = Tokenizer.from_str(tokenizer_json)
        self.identity = tokenizer_identity(tokenizer_json)
        self.name = "hf-" + self.identity[:29]
        vocab = self.tk.get_vocab(with_added_tokens=True)
        self.n_vocab = max(vocab.values()) + 1

        where = source or "the tokenizer"

        def token_id(key):
            text = _token_text(self.tokenizer_config.get(key))
            if text is None:
                return None
            if text not in vocab:
                raise ValueError(f"{where}: tokenizer_config.json's {key} {text!r} is not in the vocabulary")
            return vocab[text]

        self.bos, self.eos = token_id("bos_token"), token_id("eos_token")
        with_special = self.tk.encode(PROBE, add_special_tokens=True).ids
        plain = self.tk.encode(PROBE, add_special_tokens=False).ids
        at = next((i for i in range(len(with_special) - len(plain) + 1)
                   if with_special[i:i + len(plain)] == plain), None) if plain else None
        if at is None:
            raise ValueError(f"{where}: cannot tell what its post-processor adds ({PROBE!r} encodes to {plain})")
        prefix, suffix = with_special[:at], with_special[at + len(plain):]
        for key, ids, token in (("add_bos_token", "prefix", self.bos), ("add_eos_token", "suffix", self.eos)):
            if key in self.tokenizer_config:  # explicit flags win, as transformers' Llama tokenizers apply them
                flag = bool(self.tokenizer_config[key])
                if flag and token is None:
                    raise ValueError(f"{where}: tokenizer_config.json sets {key} but names no "
                                     f"{key[4:]} (its {key[4:7]}_token)")
                if ids == "prefix":
                    prefix = [token] if flag else []
                else:
                    suffix = [token] if flag else []
        if not prefix and not suffix:
            if self.eos is None:
                raise ValueError(f"{where}: nothing delimits documents: its tokenizer adds no special tokens and "
                                 f"tokenizer_config.json names no eos_token")
            suffix = [self.eos]
        self.doc_prefix, self.doc_suffix = list(prefix), list(suffix)
        self.eot = self.doc_suffix[-1] if self.doc_suffix else (self.eos if self.eos is not None else prefix[0])
        self.tk.encode_special_tokens = True  # special-token text in a document is plain text (see above)

    def encode(self, text):
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts):
        return [e.ids for e in self.tk.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids):
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=False)

    def state(self):
        """Everything needed to rebuild this tokenizer (and write it out again), as plain types."""
        return {"name": self.name, "identity": self.identity, "n_vocab": self.n_vocab,
                "tokenizer_json": self.tokenizer_json, "tokenizer_config": self.tokenizer_config,
                "doc_prefix": self.doc_prefix, "doc_suffix": self.doc_suffix, "source": self.source}

    @classmethod
    def from_state(cls, state):
        tok = cls(state["tokenizer_json"], state.get("tokenizer_config"), state.get("source"))
        if tok.identity != state["identity"]:
            raise ValueError(f"tokenizer stored as {state['name']} rebuilds as {tok.name}: the stored copy is corrupt")
        return tok

    def save(self, folder, model_max_length=None):
        """tokenizer.json and tokenizer_config.json as this tokenizer was read (a Hugging Face folder);
        model_max_length: the context of the model it is saved with (not the teacher's it came from)."""
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(self.tokenizer_json)
        config = dict(self.tokenizer_config)
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        if model_max_length is not None:
            config["model_max_length"] = int(model_max_length)
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)


def load_hf_tokenizer(path):
    """A Hugging Face model folder (tokenizer.json + tokenizer_config.json) or a tokenizer.json file."""
    if not path:   # None or "" (a config's empty tokenizer_path)
        raise ValueError("the hf tokenizer needs a path (--tokenizer_path): a model folder or its tokenizer.json")
    path = os.fspath(path)
    if os.path.isfile(path) and zipfile.is_zipfile(path):   # a nanokd checkpoint (torch's zip format)
        return _tokenizer_of_checkpoint(path)
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no tokenizer.json at {path}" + local_folder_hint(path) + (
            " (this loader reads only tokenizer.json, the `tokenizers` format; a folder with only a "
            "sentencepiece/tiktoken model needs converting with transformers first)" if os.path.isdir(path) else ""))
    with open(file, encoding="utf-8") as f:
        text = f.read()
    config_file = os.path.join(os.path.dirname(os.path.abspath(file)), "tokenizer_config.json")
    config = {}
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    try:
        return HFTokenizer(text, config, source=os.path.abspath(file))
    except Exception as e:
        if isinstance(e, ValueError) and str(e).startswith(os.path.abspath(file)):
            raise
        raise ValueError(f"{file}: not a tokenizer.json the `tokenizers` library reads ({type(e).__name__}: {e})") from e


def _tokenizer_of_checkpoint(path):
    """The Hugging Face tokenizer a nanokd checkpoint carries (a student trained on a teacher's tokenizer,
    used in turn as a teacher); read the safe way (checkpoint.load_checkpoint: tensors and plain values only)."""
    from checkpoint import CheckpointError, load_checkpoint
    try:
        ck = load_checkpoint(path, mmap=True)
    except CheckpointError as e:
        raise ValueError(str(e)) from e
    if not ck.get("tokenizer_state"):
        raise ValueError(f"{path} is a nanokd checkpoint of tokenizer {ck.get('tokenizer')!r}, which carries no "
                         f"Hugging Face tokenizer: use --tokenizer={ck.get('tokenizer')}, or pass --tokenizer_path "
                         f"with the folder its data was prepared with")
    return HFTokenizer.from_state(ck["tokenizer_state"])


def local_folder_hint(path):
    """For a path that does not exist but reads like a Hugging Face hub id ("org/name"): how to get a folder
    (nanokd downloads nothing). "" for anything else."""
    p = os.fspath(path)
    parts = p.split("/")
    if os.path.exists(p) or len(parts) != 2 or not all(parts) or p.startswith((".", "~")) or \
            p.endswith((".pt", ".pth", ".json", ".bin", ".safetensors", ".model")):   # a file path with a typo
        return ""
    return (f" ({p!r} reads like a Hugging Face hub id; nanokd reads local folders only: download it with "
            f"`hf download {p} --local-dir models/{parts[1]}` and pass models/{parts[1]})")
