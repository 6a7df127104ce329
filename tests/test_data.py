"""Tests for data/: token files, tokenizers, loaders, prepare scripts. CPU, a few seconds."""

import base64
import json
import os
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data.tokenfile import (TokenFileError, TokenFileWriter, read_header, load_tokens,  # noqa: E402
                            write_tokens, HEADER_SIZE)
from data.tokenizer import WHISPER_SDIST, _cache_dir, get_tokenizer, padded_vocab_size  # noqa: E402
from data.loader import TokenLoader, eval_batches  # noqa: E402
from data import prepare_embedded, prepare_fineweb  # noqa: E402

# --------------------------------------------------------------------------------------------
# token files


@pytest.mark.parametrize("vocab, dtype", [(257, np.uint16), (50257, np.uint16), (128256, np.uint32)])
def test_roundtrip(tmp_path, vocab, dtype):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=1000)
    tokens[0] = vocab - 1  # the largest id must survive (it does not fit uint16 for 128256)
    path = tmp_path / "x.bin"
    write_tokens(path, tokens, vocab_size=vocab, tokenizer="tok")
    h = read_header(path)
    assert h == {"version": 1, "dtype": np.dtype(dtype), "vocab_size": vocab, "tokenizer": "tok",
                 "n_tokens": 1000, "offset": HEADER_SIZE}
    assert os.path.getsize(path) == HEADER_SIZE + 1000 * np.dtype(dtype).itemsize
    got = load_tokens(path)
    assert got.dtype == dtype and got.ndim == 1
    np.testing.assert_array_equal(got, tokens)
    with pytest.raises(ValueError):  # read-only map
        got[0] = 1


def test_empty_file(tmp_path):
    write_tokens(tmp_path / "e.bin", [], vocab_size=257, tokenizer="bytes")
    assert len(load_tokens(tmp_path / "e.bin")) == 0


def test_streaming_writer_equals_write_tokens(tmp_path):
    tokens = np.random.default_rng(1).integers(0, 128256, size=5000)
    write_tokens(tmp_path / "a.bin", tokens, 128256, "llama3")
    with TokenFileWriter(tmp_path / "b.bin", 128256, "llama3") as w:
        for chunk in np.array_split(tokens, 7):
            w.append(chunk)
        w.append([])
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()


def test_writer_crash_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with TokenFileWriter(tmp_path / "c.bin", 257, "bytes") as w:
            w.append([1, 2, 3])
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []  # neither the final file nor the temporary one


def test_out_of_range_tokens_rejected(tmp_path):
    with pytest.raises(TokenFileError, match=r"\[0, 257\).*max 257"):
        write_tokens(tmp_path / "d.bin", [0, 257], 257, "bytes")
    with pytest.raises(TokenFileError, match="min -1"):
        write_tokens(tmp_path / "d.bin", [-1, 3], 257, "bytes")
    assert os.listdir(tmp_path) == []


def _good_file(tmp_path, name="x.bin"):
    path = tmp_path / name
    write_tokens(path, np.arange(100), 257, "bytes")
    return path


def test_bad_magic(tmp_path):
    path = _good_file(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[:8] = b"GARBAGE!"
    path.write_bytes(bytes(raw))
    with pytest.raises(TokenFileError, match=r"x\.bin: not a nanokd token file.*GARBAGE"):
        load_tokens(path)


def test_truncated_header(tmp_path):
    path = _good_file(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(TokenFileError, match=r"x\.bin: truncated header \(100 bytes, expected 256\)"):
        read_header(path)


def test_truncated_tokens_and_count_mismatch(tmp_path):
    path = _good_file(tmp_path)
    full = path.read_bytes()
    path.write_bytes(full[:-2])  # one uint16 token missing
    with pytest.raises(TokenFileError, match=r"x\.bin: header says 100 tokens \(456 bytes.*454 bytes"):
        load_tokens(path)
    path.write_bytes(full + b"\0\0")  # one token too many
    with pytest.raises(TokenFileError, match="header says 100 tokens"):
        load_tokens(path)


def test_unknown_version(tmp_path):
    path = _good_file(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[8:12] = (99).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(TokenFileError, match="unknown token file version 99"):
        read_header(path)


def test_tokenizer_mismatch(tmp_path):
    path = tmp_path / "train.bin"
    write_tokens(path, [1, 2, 50256], 50257, "gpt2")
    msg = f"{path} was written with tokenizer 'gpt2' (vocab 50257) but this run uses 'bytes' (vocab 257)"
    with pytest.raises(TokenFileError) as e:
        load_tokens(path, tokenizer="bytes", vocab_size=257)
    assert str(e.value) == msg
    with pytest.raises(TokenFileError, match="vocab 50304"):
        load_tokens(path, vocab_size=50304)
    assert len(load_tokens(path, tokenizer="gpt2", vocab_size=50257)) == 3


# --------------------------------------------------------------------------------------------
# tokenizers


def test_bytes_tokenizer():
    tok = get_tokenizer("bytes")
    assert (tok.name, tok.n_vocab, tok.eot) == ("bytes", 257, 256)
    text = "naïve café — 日本語 🙂"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eot] + tok.encode("x")) == text + "<|endoftext|>x"
    assert tok.encode_batch(["a", "é"]) == [[97], [0xC3, 0xA9]]
    assert tok.encode("<|endoftext|>") == list(b"<|endoftext|>")  # ordinary text, never the eot id


def _gpt2():
    # The BPE file is data fetched on first use (tiktoken's download, else an installed whisper package, the nanokd
    # cache, else the whisper sdist from PyPI). Skip only for that one fetch failing (offline, nothing cached), which
    # data/tokenizer.py raises with exactly this message; any other error is a bug and fails the test.
    try:
        return get_tokenizer("gpt2")
    except RuntimeError as e:
        if not str(e).startswith("could not get the GPT-2 BPE file: tiktoken cannot download r50k_base and "):
            raise
        pytest.skip("GPT-2 BPE file unavailable: offline, no whisper package, nothing in the nanokd cache "
                    f"({_cache_dir()}), and pip could not fetch {WHISPER_SDIST}")


def test_gpt2_tokenizer():
    tok = _gpt2()
    assert (tok.name, tok.n_vocab, tok.eot) == ("gpt2", 50257, 50256)
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's well-known ids
    text = "The quick brown fox — naïve café, 1234 tokens!\n\n  indented"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(["Hello world", " world"]) == [[15496, 995], [995]]
    assert 50256 not in tok.encode("<|endoftext|>")  # ordinary text
    assert tok.decode([15496, 50256]) == "Hello<|endoftext|>"


def test_gpt2_pattern_is_tiktokens():
    from tiktoken_ext.openai_public import r50k_pat_str
    from data.tokenizer import R50K_PATTERN
    assert R50K_PATTERN == r50k_pat_str


def test_gpt2_bad_cached_file_refused(tmp_path, monkeypatch):
    import importlib.util
    from data.tokenizer import gpt2_bpe_file
    if importlib.util.find_spec("whisper") is not None:
        pytest.skip("an installed whisper package takes precedence over the cache")
    monkeypatch.setenv("NANOKD_CACHE", str(tmp_path))
    (tmp_path / "gpt2.tiktoken").write_bytes(b"not the right file\n")
    with pytest.raises(ValueError, match="sha256.*expected 306cd27f"):
        gpt2_bpe_file()


def _fake_llama3_model(path):
    # tiktoken BPE format: base64(token bytes) rank, one per line; all 256 bytes, then merges
    ranks = [bytes([i]) for i in range(256)] + [b"he", b"ll", b"hell", b"hello"]
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(ranks)))
    return len(ranks)


def test_llama3_tokenizer(tmp_path):
    n = _fake_llama3_model(tmp_path / "tokenizer.model")
    tok = get_tokenizer("llama3", path=str(tmp_path / "tokenizer.model"))
    assert tok.name == "llama3"
    assert tok.n_vocab == n + 256 == 516  # 128,000 + 256 = 128,256 for the real file
    specials = tok.enc._special_tokens
    assert specials["<|begin_of_text|>"] == n and specials["<|end_of_text|>"] == n + 1
    assert tok.eot == n + 1
    assert specials["<|eot_id|>"] == n + 9 and max(specials.values()) == n + 255 and len(specials) == 256
    assert tok.encode("hello") == [259]
    assert tok.decode(tok.encode("hello, hell!")) == "hello, hell!"
    assert all(i < n for i in tok.encode("<|end_of_text|>"))  # ordinary text
    assert tok.decode([259, tok.eot]) == "hello<|end_of_text|>"


def test_llama3_needs_a_path(tmp_path):
    with pytest.raises(ValueError, match="needs path="):
        get_tokenizer("llama3")
    with pytest.raises(FileNotFoundError, match="nope.model does not exist"):
        get_tokenizer("llama3", path=str(tmp_path / "nope.model"))


def test_unknown_tokenizer():
    with pytest.raises(ValueError, match="unknown tokenizer 'gpt4'; valid names: bytes, gpt2, llama3"):
        get_tokenizer("gpt4")


def test_padded_vocab_size():
    assert padded_vocab_size(50257) == 50304
    assert padded_vocab_size(128256) == 128256
    assert padded_vocab_size(257) == 264
    assert padded_vocab_size(256) == 256
    assert padded_vocab_size(1025) == 1088


# --------------------------------------------------------------------------------------------
# TokenLoader


def _positions_file(path, n, start=0):
    # token value = position (+start), so every window shows where it came from
    write_tokens(path, np.arange(start, start + n), 128256, "pos")
    return str(path)


def test_windows_nonoverlapping_and_shifted(tmp_path):
    T, B = 8, 4
    f1 = _positions_file(tmp_path / "train_000.bin", 9 * 10 + 5)          # 10 windows, 5 tokens left over
    f2 = _positions_file(tmp_path / "train_001.bin", 9 * 6, start=100000)  # 6 windows
    loader = TokenLoader(str(tmp_path / "train_*.bin"), B, T)
    assert loader.paths == [f1, f2]
    assert loader.n_windows == 16 and loader.batches_per_epoch == 4 and loader.tokens_per_epoch == 16 * T
    starts = []
    for _ in range(loader.batches_per_epoch):
        x, y = loader.next_batch()
        assert x.dtype == torch.long and x.shape == (B, T) == y.shape
        assert torch.equal(y, x + 1)                          # y is x shifted by one
        assert torch.equal(x, x[:, :1] + torch.arange(T))     # contiguous: never crosses a shard
        starts += x[:, 0].tolist()
    local = [s % 100000 for s in starts]
    assert all(s % (T + 1) == 0 for s in local)  # window-aligned, so windows cannot overlap
    expected = [w * 9 for w in range(10)] + [100000 + w * 9 for w in range(6)]
    assert sorted(starts) == expected  # one epoch = every window exactly once
    assert starts != expected  # ... in shuffled order
    again = []
    for _ in range(loader.batches_per_epoch):
        again += loader.next_batch()[0][:, 0].tolist()
    assert loader.epoch == 1
    assert sorted(again) == expected and again != starts  # every epoch: all windows, a new order


def test_ranks_union_equals_single_process(tmp_path):
    path = _positions_file(tmp_path / "t.bin", 9 * 50)
    single = TokenLoader(path, batch_size=6, block_size=8, seed=3)
    ranks = [TokenLoader(path, batch_size=3, block_size=8, rank=r, world_size=2, seed=3) for r in range(2)]
    for step in range(20):  # 50 windows // 6 = 8 steps an epoch: crosses two epoch boundaries
        x, y = single.next_batch()
        (x0, y0), (x1, y1) = (r.next_batch() for r in ranks)
        assert not set(x0[:, 0].tolist()) & set(x1[:, 0].tolist())  # disjoint
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    assert single.epoch == 2 and all(r.state_dict() == single.state_dict() for r in ranks)
    other = TokenLoader(path, batch_size=6, block_size=8, seed=4)
    assert not torch.equal(other.next_batch()[0], TokenLoader(path, 6, 8, seed=3).next_batch()[0])


def test_state_dict_resume_across_epoch(tmp_path):
    path = _positions_file(tmp_path / "t.bin", 9 * 23)  # 23 windows, B=4: 5 steps an epoch
    a = TokenLoader(path, batch_size=4, block_size=8, seed=7)
    for _ in range(3):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # plain ints, survives a checkpoint
    expected = [a.next_batch()[0] for _ in range(6)]  # crosses into epoch 1
    assert a.epoch == 1
    b = TokenLoader(path, batch_size=4, block_size=8, seed=7)
    b.load_state_dict(state)
    for want in expected:
        assert torch.equal(b.next_batch()[0], want)
    # state saved by one rank resumes the others (positions are global)
    r1 = TokenLoader(path, batch_size=2, block_size=8, rank=1, world_size=2, seed=7)
    r1.load_state_dict(state)
    assert torch.equal(r1.next_batch()[0], expected[0][2:])


def test_state_dict_for_other_data_rejected(tmp_path):
    a = TokenLoader(_positions_file(tmp_path / "a.bin", 9 * 23), 4, 8, seed=7)
    b = TokenLoader(_positions_file(tmp_path / "b.bin", 9 * 30), 4, 8, seed=7)
    with pytest.raises(ValueError, match="saved n_windows=23, now 30"):
        b.load_state_dict(a.state_dict())


def test_loader_errors(tmp_path):
    path = _positions_file(tmp_path / "t.bin", 9 * 5)
    with pytest.raises(ValueError, match=r"corpus too small: 45 tokens .* 5 windows .* needs batch_size\*world_size = 6"):
        TokenLoader(path, batch_size=3, block_size=8, world_size=2)
    with pytest.raises(TokenFileError, match="'pos' .* but this run uses 'gpt2'"):
        TokenLoader(path, 1, 8, tokenizer="gpt2", vocab_size=50257)
    other = tmp_path / "u.bin"
    write_tokens(other, np.arange(100), 257, "bytes")
    with pytest.raises(TokenFileError, match="u.bin was written with tokenizer 'bytes'"):
        TokenLoader([path, str(other)], 1, 8)  # shards must agree with each other
    with pytest.raises(FileNotFoundError, match="no token files match"):
        TokenLoader(str(tmp_path / "none_*.bin"), 1, 8)


def test_eval_batches_cover_file_in_order(tmp_path):
    T, B = 8, 3
    path = _positions_file(tmp_path / "val.bin", 9 * 14 + 4)  # 14 windows: batches of 3,3,3,3,2
    per_rank = [list(eval_batches(path, B, T, rank=r, world_size=2)) for r in range(2)]
    assert [len(p) for p in per_rank] == [3, 2]
    ordered = [per_rank[i % 2][i // 2] for i in range(5)]  # batch i lives on rank i % 2
    assert [x.shape[0] for x, _ in ordered] == [3, 3, 3, 3, 2]
    x = torch.cat([x for x, _ in ordered])
    y = torch.cat([y for _, y in ordered])
    assert torch.equal(x[:, 0], torch.arange(14) * 9) and torch.equal(y, x + 1)
    assert torch.equal(x, x[:, :1] + torch.arange(T))
    capped = [list(eval_batches(path, B, T, max_batches=3, rank=r, world_size=2)) for r in range(2)]
    assert [len(p) for p in capped] == [2, 1]
    assert torch.equal(capped[1][0][0], ordered[1][0])
    with pytest.raises(ValueError, match="less than one window"):
        list(eval_batches(path, B, 1000))


# --------------------------------------------------------------------------------------------
# prepare_fineweb (offline, on a local parquet file of the same schema)


DOCS = [f"Document {i}: " + "héllo wörld, the quick brown fox. " * (i % 5 + 1) for i in range(30)]


def _parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "tiny.parquet"
    pq.write_table(pa.table({"text": DOCS, "id": list(range(len(DOCS)))}), path, row_group_size=7)
    return str(path)


def _fineweb(tmp_path, out, *extra):
    return prepare_fineweb.main(["--data_files", _parquet(tmp_path), "--tokenizer", "bytes",
                                 "--out_dir", str(out), "--shard_tokens", "400", "--val_tokens", "300",
                                 "--batch_docs", "4", *extra])


def _stream(out):
    files = [out / "val.bin"] + sorted(out.glob("train_*.bin"))
    return files, np.concatenate([load_tokens(f, tokenizer="bytes", vocab_size=257) for f in files])


def test_prepare_fineweb_shards(tmp_path, capsys):
    out = tmp_path / "out"
    _fineweb(tmp_path, out)
    files, tokens = _stream(out)
    expected = "".join(d + "<|endoftext|>" for d in DOCS)
    assert get_tokenizer("bytes").decode(tokens) == expected
    assert [read_header(f)["n_tokens"] for f in files[:3]] == [300, 400, 400]
    assert len(tokens) == len(expected.encode("utf-8")) - len(DOCS) * (len("<|endoftext|>") - 1)
    progress = json.loads((out / "progress.json").read_text())
    assert progress["done"] and progress["files"][-1]["end_doc"] == len(DOCS)
    # a rerun recognises the finished job and touches nothing
    mtimes = [f.stat().st_mtime_ns for f in files]
    capsys.readouterr()
    _fineweb(tmp_path, out)
    assert "is complete" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_prepare_fineweb_resume(tmp_path, capsys):
    # stop mid-way (inside a document), then resume: same bytes as one uninterrupted run
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    _fineweb(tmp_path, whole)
    _fineweb(tmp_path, parts, "--max_tokens", "1234")
    _, first = _stream(parts)
    assert len(first) == 1234
    kept = [f.stat().st_mtime_ns for f in [parts / "val.bin", parts / "train_000000.bin"]]
    capsys.readouterr()
    _fineweb(tmp_path, parts)
    assert "resuming after train_000001.bin" in capsys.readouterr().out  # the full files are kept
    assert kept == [f.stat().st_mtime_ns for f in [parts / "val.bin", parts / "train_000000.bin"]]
    fw, tw = _stream(whole)
    fp, tp = _stream(parts)
    assert [f.name for f in fw] == [f.name for f in fp]
    np.testing.assert_array_equal(tw, tp)
    with pytest.raises(SystemExit, match="other settings.*shard_tokens: was 400, now 500"):
        prepare_fineweb.main(["--data_files", _parquet(tmp_path), "--tokenizer", "bytes",
                              "--out_dir", str(parts), "--shard_tokens", "500", "--val_tokens", "300"])


def test_prepare_fineweb_jsonl(tmp_path):
    src = tmp_path / "tiny.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:5]))
    out = tmp_path / "j"
    prepare_fineweb.main(["--data_files", str(src), "--tokenizer", "bytes", "--out_dir", str(out),
                          "--val_tokens", "0"])
    assert sorted(os.listdir(out)) == ["doc_lengths.json", "progress.json", "train_000000.bin"]
    text = get_tokenizer("bytes").decode(load_tokens(out / "train_000000.bin"))
    assert text == "".join(d + "<|endoftext|>" for d in DOCS[:5])
    # the document-length histogram packing's dry run reads: 5 documents, every token but the first a target once
    hist = json.load(open(out / "doc_lengths.json"))
    assert sum(hist["documents"]) == 5 and sum(hist["tokens"]) == len(load_tokens(out / "train_000000.bin")) - 1


# --------------------------------------------------------------------------------------------
# prepare_embedded


def test_strip_wiki_markup():
    src = """{{Infobox thing|name={{nested|x}}|size=2}}
'''Anarchism''' is a [[political philosophy]] that {{cite|a={{b|c}}}} advocates [[self-governance|self-governed]] societies.<ref name="a">{{cite book|title=X}}</ref> It has [[history|histories]]<ref name="b" />.
<!-- a hidden comment -->
==History==
[[File:A.jpg|thumb|A [[caption]] with [[x|links]]]]
{| class="wikitable"
|-
| cell || {{tpl}}
|}
It is <b>bold</b> &amp; ''fine'' ({{lang|fr|x}}) here, see [http://example.com the site] and [http://bare.example].
* a list item with [[Link]]s
=== Sub heading ===
Last line&nbsp;here.
== See also ==
* [[Something else]]
[[Category:Anarchism]]
[[de:Anarchismus]]"""
    assert prepare_embedded.strip_wiki_markup(src) == (
        "Anarchism is a political philosophy that advocates self-governed societies. It has histories.\n\n"
        "History\n\n"
        "It is bold & fine here, see the site and.\n"
        "a list item with Links\n"
        "Sub heading\n"
        "Last line here.")


def test_wiki_articles_skip_redirects_and_other_namespaces():
    xml = b"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
      <page><title>Good</title><ns>0</ns><revision><text>Some '''prose'''.</text></revision></page>
      <page><title>Redir</title><ns>0</ns><redirect title="Good" /><revision><text>#REDIRECT [[Good]]</text></revision></page>
      <page><title>Talk:Good</title><ns>1</ns><revision><text>chatter</text></revision></page>
    </mediawiki>"""
    assert prepare_embedded.wiki_articles(xml) == [("Good", "Some prose.")]


def test_prepare_embedded_bytes(tmp_path, capsys):
    out = tmp_path / "emb"
    # The source texts are data inside the gensim wheel, fetched once into data/cache. Skip only when that fetch
    # fails (offline, no cached wheel): gensim_wheel() alone is in the try, so an error of main() itself fails.
    try:
        prepare_embedded.gensim_wheel()
    except RuntimeError as e:
        pytest.skip(f"{prepare_embedded.GENSIM} wheel unavailable: offline and not in {prepare_embedded.CACHE} "
                    f"(pip download failed: {str(e).splitlines()[-1][:200]})")
    meta = prepare_embedded.main(["--tokenizer", "bytes", "--out_dir", str(out)])
    splits = meta["splits"]
    assert splits["train"]["documents"] > 90 and 3 <= splits["val"]["documents"] <= 8
    assert splits["train"]["tokens"] > 2_000_000 and splits["ood_news"]["documents"] == 300
    tok = get_tokenizer("bytes")
    for s in prepare_embedded.SPLITS:
        t = load_tokens(out / f"{s}.bin", tokenizer="bytes", vocab_size=257)
        assert len(t) == splits[s]["tokens"] and t[-1] == tok.eot
        assert int((np.asarray(t) == tok.eot).sum()) == splits[s]["documents"]
    val = tok.decode(load_tokens(out / "val.bin"))
    assert "[[" not in val and "{{" not in val and "<ref" not in val
    capsys.readouterr()
    prepare_embedded.main(["--tokenizer", "bytes", "--out_dir", str(out)])
    assert "already prepared" in capsys.readouterr().out
