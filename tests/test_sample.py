"""sample.py and model.py's KV cache: cached generation is the same as reading everything again, the same as
transformers' generate, sampling filters as defined, seeds reproduce, streaming never cuts a character."""

import json
import os
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from checkpoint import save_checkpoint  # noqa: E402
from data.tokenizer import ByteTokenizer  # noqa: E402
from model import GPT, GPTConfig, KVCache  # noqa: E402
from sample import TextStream, filter_logits, generate, main  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small gain nothing from a second thread, and on a shared 2-core machine two threads that wait
    on each other made these tests 15x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


VARIANTS = {
    "mha-tied":         dict(n_head=4, n_kv_head=4, tie_embeddings=True),
    "gqa-untied":       dict(n_head=4, n_kv_head=2, tie_embeddings=False, rope_theta=777.0),
    "gqa-qknorm":       dict(n_head=4, n_kv_head=1, head_dim=24, qk_norm=True, tie_embeddings=True, rope_theta=1e6),
    "llama31-scaling":  dict(n_head=4, n_kv_head=2, rope_theta=500.0, rope_scaling=dict(
        factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)),
}


def random_model(block_size=48, dtype=torch.float64, **kw):
    """Weights large enough that logits vary by several units, so greedy choices are not near-ties."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=264, block_size=block_size, n_layer=2, n_embd=48, mlp_hidden=96, **kw)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.3 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    return model.to(dtype).eval()


def count_feeds(model):
    """Record the shape of every forward call: (tokens fed, tokens already cached or None without a cache)."""
    calls, forward = [], model.forward

    def recording(idx, cache=None):
        calls.append((idx.shape[1], None if cache is None else cache.pos))
        return forward(idx, cache=cache)
    model.forward = recording
    return calls


# ---- the cache ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_logits_equal_a_full_forward(variant):
    """Teacher-forced: the sequence fed in pieces (a prefill, single tokens, then a chunk of several after a
    past, which needs the offset causal mask) gives the logits one full forward gives, position by position.
    float64: the two differ only in summation order, ~1e-15 relative; 1e-9 leaves room, a bug is O(0.1)."""
    model = random_model(**VARIANTS[variant])
    x = torch.randint(0, 257, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model.logits(x)
        cache = KVCache(model.config, 2, 40, "cpu", torch.float64)
        pieces, at = [], 0
        for n in (7, 1, 1, 1, 5, 1, 24):
            pieces.append(model.logits(x[:, at:at + n], cache=cache))
            at += n
            assert cache.pos == at
    assert full.std() > 1.0
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=0, atol=1e-9)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_with_cache_equals_greedy_by_full_forwards(variant):
    """Token for token, including past the context (block_size 48: a 30-token prompt and 60 new tokens move the
    window twice), and with the cache every step after a window's prefill feeds exactly one token."""
    model = random_model(**VARIANTS[variant])
    prompt = torch.randint(0, 257, (30,), generator=torch.Generator().manual_seed(2)).tolist()
    calls = count_feeds(model)
    cached = list(generate(model, prompt, 60, n_vocab=257, temperature=0))
    cached_calls, calls[:] = list(calls), []
    full = list(generate(model, prompt, 60, n_vocab=257, temperature=0, use_cache=False))
    assert cached == full
    assert len(set(cached)) > 5   # a real sequence, not one token repeated

    assert len(cached_calls) == len(calls) == 60
    assert all(pos is None for _, pos in calls)   # the reference reads the window afresh every time
    prefills = [i for i, (n, pos) in enumerate(cached_calls) if pos == 0]
    # the window: 30 prompt tokens + 18 new fill 48; at 49 it moves to the last 24, and so again 24 tokens later
    assert prefills == [0, 19, 44]
    for i, (n, pos) in enumerate(cached_calls):
        assert n == (1 if i not in prefills else 30 if i == 0 else 24), (i, n, pos)
        assert calls[i][0] == 30 + i - (0 if i < 19 else 30 + 19 - 24 if i < 44 else 30 + 44 - 24)

    stop = cached[10]
    assert list(generate(model, prompt, 60, n_vocab=257, temperature=0, stop_ids={stop})) == \
        cached[:cached.index(stop) + 1]   # the stop token comes out, and nothing after it


def test_a_wrong_rope_offset_is_caught(monkeypatch):
    """Negative control for the tolerance: a cache that forgets its offset (new tokens rotated as if at position 0)
    moves the logits by far more than 1e-9."""
    import model as model_py
    model = random_model(**VARIANTS["gqa-untied"])
    x = torch.randint(0, 257, (1, 20), generator=torch.Generator().manual_seed(1))
    rope = model_py.rope_cos_sin
    monkeypatch.setattr(model_py, "rope_cos_sin", lambda n, dim, theta, device, scaling=None, positions=None, start=0:
                        rope(n, dim, theta, device, scaling, positions))
    with torch.no_grad():
        full = model.logits(x)
        cache = KVCache(model.config, 1, 20, "cpu", torch.float64)
        model.logits(x[:, :19], cache=cache)
        last = model.logits(x[:, 19:], cache=cache)
    assert (last[:, -1] - full[:, -1]).abs().max() > 1e-3


# ---- against transformers ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["gqa-untied", "gqa-qknorm"])
def test_greedy_equals_transformers_generate(variant, tmp_path):
    """The exported model (export.py) under transformers' own greedy generate, both in float64 so that near-ties
    cannot flip either one: the same tokens. Llama and Qwen3 (QK-norm) layouts."""
    import transformers
    from export import export
    model = random_model(block_size=64, dtype=torch.float32, **VARIANTS[variant])
    ckpt = dict(model=model.state_dict(), model_config=asdict(model.config), tokenizer="bytes", n_vocab=257,
                config={}, step=0, tokens_seen=0)
    export(ckpt, tmp_path, with_tokenizer=False)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64,
                                                           attn_implementation="eager").eval()
    prompt = torch.randint(0, 257, (12,), generator=torch.Generator().manual_seed(3)).tolist()
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, len(prompt):].tolist()
    ours = list(generate(model.double(), prompt, 40, n_vocab=257, temperature=0))
    assert len(theirs) == 40
    assert ours == theirs
    assert len(set(ours)) > 5


# ---- sampling ------------------------------------------------------------------------------------------

def test_seeded_sampling_is_reproducible_and_seeds_differ():
    model = random_model(**VARIANTS["gqa-qknorm"])
    prompt = [256, 72, 105]

    def draw(seed, **kw):
        return list(generate(model, prompt, 40, n_vocab=257, temperature=1.0, top_k=50, top_p=0.95,
                             generator=torch.Generator().manual_seed(seed), **kw))
    a = draw(1)
    assert a == draw(1)
    assert a == draw(1, use_cache=False)   # float64: the cache changes no draw either
    assert a != draw(2)


def test_padding_rows_are_never_chosen():
    """Rows past the tokenizer's vocabulary are padding: planted here as the most likely token by far (every
    position's hidden state is h, as below, and padding row 260 is 5·h), they must still never come out."""
    model = random_model(**VARIANTS["gqa-untied"])
    with torch.no_grad():
        model.embed_tokens.weight.copy_(model.embed_tokens.weight[65].clone())
        model.lm_head.weight[260] = 5 * model(torch.tensor([[65, 66]]))[0, -1]
    assert model.logits(torch.tensor([[65]]))[0, -1].argmax() == 260
    for temperature in (0, 1.0):
        out = list(generate(model, [65], 20, n_vocab=257, temperature=temperature,
                            generator=torch.Generator().manual_seed(0)))
        assert len(out) == 20 and max(out) < 257


def reference_kept(logits, top_k, top_p):
    """The definition, in float64 numpy, one row: the k largest, then of those (renormalised) the fewest most likely
    whose probability reaches p."""
    order = np.argsort(-logits, kind="stable")
    if top_k:
        order = order[:top_k]
    z = logits[order] - logits[order].max()
    probs = np.exp(z) / np.exp(z).sum()
    kept, mass = [], 0.0
    for i, p in zip(order, probs):
        if mass >= top_p:
            break
        kept.append(int(i))
        mass += p
    return set(kept)


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (1, 1.0), (10, 1.0), (0, 0.5), (0, 0.9), (0, 0.01),
                                         (20, 0.8), (5, 0.999)])
def test_filter_logits_against_a_reference(top_k, top_p):
    g = torch.Generator().manual_seed(top_k * 1000 + int(top_p * 1000))
    logits = torch.randn(16, 300, generator=g, dtype=torch.float64) * 3
    out = filter_logits(logits, top_k, top_p)
    for row, filtered in zip(logits.numpy(), out):
        kept = set(torch.nonzero(filtered > float("-inf")).flatten().tolist())
        assert kept == reference_kept(row, top_k, top_p)
        assert torch.equal(filtered[list(kept)], torch.from_numpy(row)[list(kept)])   # kept logits untouched


def test_filter_logits_agrees_with_transformers_warpers():
    """A second, independent implementation: transformers' TopK and TopP logits processors, in that order."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper
    logits = torch.randn(32, 500, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2
    for k, p in [(40, 0.9), (0, 0.7), (200, 0.3)]:
        theirs = logits.clone()
        if k:
            theirs = TopKLogitsWarper(k)(None, theirs)
        theirs = TopPLogitsWarper(p)(None, theirs)
        assert torch.equal(filter_logits(logits, k, p) > float("-inf"), theirs > float("-inf"))


# ---- streaming text ------------------------------------------------------------------------------------

def stream_all(decode, ids, context=()):
    s = TextStream(decode, context)
    pieces = [s.push(t) for t in ids]
    return pieces, s.flush()


def test_stream_never_cuts_a_character():
    """Byte tokens: every multi-byte character (2, 3 and 4 bytes) arrives over several tokens; no printed piece
    holds a replacement character and the pieces join to the text."""
    tok = ByteTokenizer()
    text = "héllo wörld — 日本語 🙂🚀 end"
    pieces, rest = stream_all(tok.decode, tok.encode(text), context=[256])
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + rest == text
    assert rest == ""
    assert pieces[tok.encode(text).index(0xF0) + 3] == "🙂"   # printed when its fourth byte arrived, not before


def test_stream_joins_to_decode_even_for_invalid_bytes():
    """Whatever bytes a model produces, broken UTF-8 included, the pieces join to the tokenizer's decode of all."""
    tok = ByteTokenizer()
    rng = np.random.default_rng(0)
    for _ in range(50):
        ids = rng.choice([0x41, 0x20, 0xC3, 0xA9, 0xE6, 0x97, 0xA5, 0xF0, 0x9F, 0x99, 0x82, 0xFF, 256], size=30).tolist()
        pieces, rest = stream_all(tok.decode, ids, context=[0x41])
        assert "".join(pieces) + rest == tok.decode(ids)


def test_stream_with_hf_tokenizers(tmp_path):
    """A byte-level BPE (as export.py writes for bytes) cuts characters the same way; a SentencePiece-style
    decoder drops the leading space of the first token it decodes, which streaming must not lose."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from data.hf_tokenizer import HFTokenizer
    from export import hf_tokenizer
    hf_tokenizer("bytes").save_pretrained(tmp_path)
    tok = HFTokenizer(open(tmp_path / "tokenizer.json").read(), json.load(open(tmp_path / "tokenizer_config.json")))
    text = "naïve 日本 🙂"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    pieces, rest = stream_all(tok.decode, ids, context=tok.encode("x"))
    assert all("\ufffd" not in p for p in pieces) and "".join(pieces) + rest == text

    vocab = {"<unk>": 0, "▁Hello": 1, "▁world": 2, "!": 3}
    sp = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    sp.decoder = decoders.Metaspace()
    assert sp.decode([2, 3]) == "world!"   # decoded alone, the space before "world" is gone
    pieces, rest = stream_all(sp.decode, [2, 3], context=[1])
    assert "".join(pieces) + rest == " world!"


# ---- the command ---------------------------------------------------------------------------------------

def write_checkpoint(path, model, **extra):
    save_checkpoint(path, dict(model={k: v.float() for k, v in model.state_dict().items()},
                               model_config=asdict(model.config), tokenizer="bytes", n_vocab=257, config={},
                               step=0, tokens_seen=0, **extra))


def run_main(capsys, *args):
    main(list(args))
    return capsys.readouterr()


def test_cli_checkpoint_and_hf_folder_give_the_same_greedy_text(tmp_path, capsys):
    """sample.py on a nanokd checkpoint and on its export: the same model, so the same greedy text; both stream
    the prompt first and report tokens per second."""
    from export import export
    model = random_model(block_size=64, **VARIANTS["gqa-untied"])
    write_checkpoint(tmp_path / "ckpt.pt", model)
    export(str(tmp_path / "ckpt.pt"), tmp_path / "hf")
    args = ["--prompt", "Once upon", "--temperature", "0", "--max_new_tokens", "20", "--no_stop", "--device", "cpu"]
    a = run_main(capsys, "--ckpt", str(tmp_path / "ckpt.pt"), *args)
    b = run_main(capsys, "--ckpt", str(tmp_path / "hf"), *args)
    assert a.out.startswith("Once upon") and len(a.out) > len("Once upon") + 5
    assert a.out == b.out
    assert "tokens/s" in a.err and "20 tokens" in a.err and "note:" not in a.err
    c = run_main(capsys, "--ckpt", str(tmp_path / "ckpt.pt"), *args, "--num_samples", "2")
    assert c.out.count("Once upon") == 2 and c.err.count("tokens/s") == 2


def test_cli_stops_at_end_of_text_unless_told(tmp_path, capsys):
    """A model built to put end-of-text first: every input embedding the same, so every position's hidden state is
    the same vector h, and lm_head's only non-zero row is end-of-text's, h itself."""
    model = random_model(block_size=64, **VARIANTS["gqa-untied"])
    with torch.no_grad():
        model.embed_tokens.weight.copy_(model.embed_tokens.weight[65].clone())
        h = model(torch.tensor([[65, 66]]))[0, -1]
        model.lm_head.weight.zero_()
        model.lm_head.weight[256] = h
    write_checkpoint(tmp_path / "ckpt.pt", model)
    common = ["--ckpt", str(tmp_path / "ckpt.pt"), "--prompt", "Hi", "--temperature", "0", "--max_new_tokens", "9"]
    stopped = run_main(capsys, *common)
    assert stopped.out == "Hi\n" and "1 tokens" in stopped.err and "stopped at end-of-text" in stopped.err
    on = run_main(capsys, *common, "--no_stop")
    assert on.out == "Hi" + "<|endoftext|>" * 9 + "\n" and "stopped at max_new_tokens" in on.err


def test_cli_says_when_the_context_is_too_short(tmp_path, capsys):
    model = random_model(block_size=16, **VARIANTS["mha-tied"])
    write_checkpoint(tmp_path / "ckpt.pt", model)
    r = run_main(capsys, "--ckpt", str(tmp_path / "ckpt.pt"), "--prompt", "abcdefghij", "--max_new_tokens", "20",
                 "--no_stop", "--seed", "3")
    assert "longer than the model's context of 16 tokens" in r.err and "20 tokens" in r.err
    r = run_main(capsys, "--ckpt", str(tmp_path / "ckpt.pt"), "--prompt", "x" * 40, "--max_new_tokens", "2")
    assert "the prompt is cropped to its last 8 tokens" in r.err


@pytest.mark.parametrize("arg,value,says", [
    ("--num_samples", "0", "--num_samples=0 is not allowed: an integer >= 1"),
    ("--max_new_tokens", "-5", "--max_new_tokens=-5 is not allowed"),
    ("--temperature", "-1", "--temperature=-1.0 is not allowed: a finite number >= 0"),
    ("--temperature", "nan", "--temperature=nan is not allowed"),
    ("--top_k", "-1", "--top_k=-1 is not allowed"),
    ("--top_p", "0", "--top_p=0.0 is not allowed: a number in (0, 1]"),
    ("--top_p", "1.5", "--top_p=1.5 is not allowed"),
    ("--seed", "-2", "--seed=-2 is not allowed"),
    ("--device", "tpu", "--device='tpu' is not allowed: cpu, cuda or cuda:N"),
    ("--top_k", "many", "argument --top_k: invalid int value: 'many'"),
    ("--prompt_file", "/nonexistent/p.txt", "--prompt_file='/nonexistent/p.txt' is not allowed: no such file"),
])
def test_bad_arguments_are_one_line_errors_before_any_work(arg, value, says, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"not even read: the arguments are checked first")
    with pytest.raises(SystemExit) as e:
        main(["--ckpt", str(ckpt), arg, value])
    message = str(e.value.code)
    assert says in message and "\n" not in message


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match=r"--ckpt='.*nope.pt' is not allowed: no such file"):
        main(["--ckpt", str(tmp_path / "nope.pt")])
    (tmp_path / "folder").mkdir()
    with pytest.raises(SystemExit, match="a folder must be a Hugging Face model folder"):
        main(["--ckpt", str(tmp_path / "folder")])
