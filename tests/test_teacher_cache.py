"""The teacher cache: teacher_cache.py writes it, kd_cache.py reads it, sparse_kd.py turns it into the KD term.

References are independent: distill_loss.py on full float64 logits for the losses, the teacher model run
directly for the cached values, a single-process loader for the keys, the exact gradient T·(p − q) for the
sampled estimator."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from statistics import NormalDist

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import teacher_cache
from checkpoint import save_checkpoint
from data.loader import TokenLoader
from data.tokenfile import write_tokens
from distill_loss import distill_loss
from kd_cache import SHARD_NAME, CacheError, TeacherCache, read_header
from model import GPT, GPTConfig
from sparse_kd import sampled_kl, sparse_linear_kd_ce

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V = 257   # the byte tokenizer: 256 bytes + end of text


def cache_rows(t, method, k, T=1.0, gen=None):
    """What teacher_cache.py stores for teacher logits t, as the reader returns it (dict of torch rows)."""
    if method == "top-k":
        ids, vals, lse, tail = teacher_cache.top_k_targets(t, T, k)
        return {"ids": ids, "logits": vals, "lse": lse, "tail": tail}
    ids, counts = teacher_cache.sampled_targets(t, T, k, gen)
    return {"ids": ids, "counts": counts.to(t.dtype)}


# ---- the loss from cached rows ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["teacher", "both", "bucket"])
def test_top_k_variants_from_the_cache_equal_the_online_loss(variant):
    """A top-12 cache read at a run's top_k = 5: loss and both gradients equal distill_loss on the full logits
    (float64, so the only difference is summation order: ~1e-15 relative). The cache holds more ids than the
    run keeps, so "bucket" also checks that the entries past k' join the OTHER mass."""
    torch.manual_seed(0)
    N, H, Vt, T = 24, 16, 40, 2.0
    x = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    w = torch.randn(Vt, H, dtype=torch.float64, requires_grad=True)
    t = 3 * torch.randn(N, Vt, dtype=torch.float64)
    y = torch.randint(0, Vt, (N,))
    y[3] = -100
    rows = cache_rows(t, "top-k", 12, T)
    got = sparse_linear_kd_ce(x, w, y, rows, method="top-k", cache_k=12, alpha=0.6, temperature=T, top_k=5,
                              top_k_variant=variant, chunk_size=7)
    gx, gw = torch.autograd.grad(got[0], (x, w))
    ref = distill_loss(x @ w.T, y, t, alpha=0.6, temperature=T, top_k=5, top_k_variant=variant)
    rx, rw = torch.autograd.grad(ref[0], (x, w))
    for a, b in ((got[0], ref[0]), (got[2], ref[2]), (gx, rx), (gw, rw)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_full_cache_gives_the_full_forward_kl():
    """k = V and top_k = 0: the paper's forward KL, equal to distill_loss without truncation (float64)."""
    torch.manual_seed(1)
    N, H, T = 20, 8, 1.5
    x = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, H, dtype=torch.float64, requires_grad=True)
    t = 4 * torch.randn(N, V, dtype=torch.float64)
    y = torch.randint(0, V, (N,))
    got = sparse_linear_kd_ce(x, w, y, cache_rows(t, "top-k", V, T), method="top-k", cache_k=V, alpha=0.5,
                              temperature=T, chunk_size=6)
    ref = distill_loss(x @ w.T, y, t, alpha=0.5, temperature=T)
    torch.testing.assert_close(torch.autograd.grad(got[0], (x, w)), torch.autograd.grad(ref[0], (x, w)),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="k = V"):
        sparse_linear_kd_ce(x, w, y, cache_rows(t, "top-k", 16, T), method="top-k", cache_k=16, alpha=0.5)


# ---- the sampled estimator: unbiased, by a test that can tell ------------------------------------------

FALSE_FAILURE_RATE = 1e-6


def mean_gradient_z(grads, exact):
    """max over coordinates of |mean − exact| / (sd / √M): under an unbiased estimator each is ~N(0, 1) (CLT,
    M draws), so with a Bonferroni threshold at Φ⁻¹(1 − α / 2d) the test fails an unbiased estimator with
    probability <= α. An estimator with no spread (deterministic) gets sd floored at 1e-12: any bias rejects."""
    M = grads.shape[0]
    sd = grads.std(0).clamp(min=1e-12)
    return ((grads.mean(0) - exact).abs() / (sd / M ** 0.5)).max().item()


def test_sampled_kd_gradient_is_unbiased_and_top_k_renormalised_is_not():
    torch.manual_seed(2)
    rows, Vt, K, M, T = 4, 10, 4, 4000, 2.0
    s = torch.randn(rows, Vt, dtype=torch.float64)
    t = 2 * torch.randn(rows, Vt, dtype=torch.float64)
    exact = T * (F.softmax(s / T, -1) - F.softmax(t / T, -1))        # d/ds of T²·KL(q_T ‖ p_T)
    threshold = NormalDist().inv_cdf(1 - FALSE_FAILURE_RATE / (2 * rows * Vt))   # ≈ 6.1

    def per_draw_grads(make_rows):
        S = s.repeat(M, 1).requires_grad_(True)     # M independent draws of every row, as one batch
        (g,) = torch.autograd.grad(sampled_kl(S, make_rows(t.repeat(M, 1)), T).sum(), S)
        return g.reshape(M, rows, Vt).reshape(M, -1)

    gen = torch.Generator().manual_seed(3)
    unbiased = per_draw_grads(lambda tt: cache_rows(tt, "sampled", K, T, gen))
    assert mean_gradient_z(unbiased, exact.reshape(-1)) < threshold

    # planted: the teacher's top-K renormalised (what a top-k cache's "teacher" variant trains on), as counts
    def top_k_renormalised(tt):
        q = F.softmax(tt / T, -1)
        vals, ids = q.topk(K, dim=-1)
        return {"ids": ids, "counts": vals / vals.sum(-1, keepdim=True)}
    assert mean_gradient_z(per_draw_grads(top_k_renormalised), exact.reshape(-1)) > threshold

    # planted: sampling at T = 1 instead of the run's T (a random estimator, biased)
    gen = torch.Generator().manual_seed(4)
    wrong_t = per_draw_grads(lambda tt: cache_rows(tt, "sampled", K, 1.0, gen))
    assert mean_gradient_z(wrong_t, exact.reshape(-1)) > threshold


# ---- the command and the reader ---------------------------------------------------------------------------

BLOCK = 16


@pytest.fixture
def small_run(tmp_path):
    """A byte corpus of 2 train files (25 + 14 windows of 17 tokens) and a random tiny teacher checkpoint."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    write_tokens(str(data / "train_000.bin"), rng.integers(0, 256, 25 * (BLOCK + 1) + 5), V, "bytes")
    write_tokens(str(data / "train_001.bin"), rng.integers(0, 256, 14 * (BLOCK + 1)), V, "bytes")
    write_tokens(str(data / "val.bin"), rng.integers(0, 256, 4 * (BLOCK + 1)), V, "bytes")
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=264, block_size=BLOCK, n_layer=1, n_embd=16, n_head=2, n_kv_head=1)
    teacher = GPT(cfg)
    ckpt = str(tmp_path / "teacher.pt")
    save_checkpoint(ckpt, dict(model=teacher.state_dict(), model_config=asdict(cfg), tokenizer="bytes", n_vocab=V,
                               config={}, step=1, tokens_seen=1))
    return dict(data=str(data), ckpt=ckpt, teacher=teacher.eval(), tmp=tmp_path)


def build(run, out, *extra):
    teacher_cache.main([f"--teacher_ckpt={run['ckpt']}", f"--data_dir={run['data']}", f"--out={out}",
                        f"--block_size={BLOCK}", "--device=cpu", "--units_per_shard=10", "--batch_size=4", *extra])


def test_cache_holds_the_teachers_logits_by_window(small_run, capsys):
    """A top-V cache's rows of any window equal the teacher run directly on that window (fp32: the same
    GEMMs on other batch shapes may round differently, ~1e-6 relative). Keys are global windows across both
    files, so a 2-rank loader's batch reads the same rows as the matching slice of the 1-process batch."""
    out = str(small_run["tmp"] / "cache")
    build(small_run, out, f"--k={V}", "--temperature=2.0")
    assert "ETA" in capsys.readouterr().out
    cache = TeacherCache(out)
    assert (cache.n_units, cache.n_shards, cache.k) == (39, 4, V)
    files = sorted(os.path.join(small_run["data"], f) for f in os.listdir(small_run["data"]) if f.startswith("train"))
    one = TokenLoader(files, 6, BLOCK, seed=5, tokenizer="bytes", vocab_size=V)
    two = [TokenLoader(files, 3, BLOCK, rank=r, world_size=2, seed=5, tokenizer="bytes", vocab_size=V) for r in (0, 1)]
    for _ in range(8):   # past an epoch boundary (39 windows, 6 a step)
        x, _ = one.next_batch()
        rows = cache.targets(one.last_windows)
        with torch.no_grad():
            t = F.linear(small_run["teacher"](x), small_run["teacher"].lm_head.weight[:V]).reshape(-1, V)
        top_vals, top_ids = t.topk(V, dim=-1)
        torch.testing.assert_close(rows["logits"], top_vals, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rows["lse"], torch.logsumexp(t / 2.0, -1), rtol=1e-5, atol=1e-5)
        for r, loader in enumerate(two):
            xr, _ = loader.next_batch()
            assert torch.equal(xr, x[3 * r:3 * r + 3])
            assert torch.equal(cache.targets(loader.last_windows)["ids"], rows["ids"][3 * r * BLOCK:(3 * r + 3) * BLOCK])


def test_cache_resumes_checks_and_refuses(small_run):
    out = str(small_run["tmp"] / "cache")
    build(small_run, out, "--k=8")
    first = os.path.join(out, SHARD_NAME.format(0))
    mtime = os.path.getmtime(first)
    os.remove(os.path.join(out, SHARD_NAME.format(2)))
    with pytest.raises(CacheError, match="incomplete cache.*shard_00002"):
        TeacherCache(out)
    build(small_run, out, "--k=8")                          # resume: only the missing shard is written
    assert os.path.getmtime(first) == mtime
    cache = TeacherCache(out)
    with pytest.raises(SystemExit):                          # another cache's settings into the same folder
        build(small_run, out, "--k=4")

    files = [os.path.join(small_run["data"], f) for f in ("train_000.bin", "train_001.bin")]
    ok = dict(tokenizer="bytes", n_vocab=V, block_size=BLOCK, temperature=1.0, data_files=files, top_k=8, kd_loss="forward")
    cache.check_run(**ok)
    for change, needle in ((dict(block_size=32), "block_size: cache 16, run 32"), (dict(temperature=2.0), "temperature"),
                           (dict(top_k=9), "top_k=9 exceeds the cache's k=8"), (dict(top_k=None), "top_k=0 asks for the full"),
                           (dict(tokenizer="gpt2"), "tokenizer"), (dict(data_files=files[:1]), "data files"),
                           (dict(kd_loss="reverse"), "forward KL only")):
        with pytest.raises(CacheError, match=needle):
            cache.check_run(**{**ok, **change})
    write_tokens(files[1], np.zeros(14 * (BLOCK + 1), np.int64), V, "bytes")   # same size, other tokens
    with pytest.raises(CacheError, match="data file train_001.bin: cache made from"):
        cache.check_run(**ok)
    with pytest.raises(CacheError, match="window 39 is not in teacher cache"):
        cache.targets([39])

    # a flipped payload byte: found by the checksum when the shard is first read
    with open(first, "r+b") as f:
        f.seek(-3, os.SEEK_END)
        b = f.read(1)
        f.seek(-3, os.SEEK_END)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(CacheError, match="checksum mismatch"):
        TeacherCache(out).targets([0])
    with open(first, "ab") as f:
        f.write(b"\0")
    with pytest.raises(CacheError, match="truncated or appended"):
        TeacherCache(out).targets([0])
    header, _ = read_header(os.path.join(out, SHARD_NAME.format(1)))
    assert header["teacher"]["sha256"] and header["data"][0]["file"] == "train_000.bin" and header["k"] == 8


def test_sampled_cache_is_the_same_for_any_world_size(small_run, tmp_path):
    """Shard j draws with its own seed, so its bytes do not depend on which rank wrote it or what else that
    rank wrote: shards 1 and 3 rewritten alone (as rank 1 of 2 would) are identical to the first build's."""
    a = str(tmp_path / "a")
    build(small_run, a, "--method=sampled", "--k=16")
    before = {j: open(os.path.join(a, SHARD_NAME.format(j)), "rb").read() for j in range(4)}
    for j in (1, 3):
        os.remove(os.path.join(a, SHARD_NAME.format(j)))
    build(small_run, a, "--method=sampled", "--k=16")
    assert all(open(os.path.join(a, SHARD_NAME.format(j)), "rb").read() == before[j] for j in range(4))
    rows = TeacherCache(a).targets([0, 38])
    assert (rows["counts"].sum(-1) == 16).all() and rows["ids"].max() < V


# ---- packing=True: a cache keyed by document piece ------------------------------------------------------------

@pytest.fixture
def packed_run(small_run):
    """The small run's folder with documents in its train files: byte documents of 1..40 tokens, each ended by
    the end-of-text id (256), so some are cut into row-length chunks (T = 16) and rows hold several pieces.
    The teacher's head is scaled ×30 (logits of std ~2.4 instead of ~0.08): a near-uniform random teacher
    gives nearly the same targets at every token, and a test could not tell misplaced targets from right ones."""
    rng = np.random.default_rng(1)
    for name, n_docs in (("train_000.bin", 20), ("train_001.bin", 9)):
        docs = [np.append(rng.integers(0, 256, rng.integers(1, 41)), 256) for _ in range(n_docs)]
        write_tokens(os.path.join(small_run["data"], name), np.concatenate(docs), V, "bytes")
    teacher = small_run["teacher"]
    with torch.no_grad():
        teacher.lm_head.weight.mul_(30.0)
    save_checkpoint(small_run["ckpt"], dict(model=teacher.state_dict(), model_config=asdict(teacher.config),
                                            tokenizer="bytes", n_vocab=V, config={}, step=1, tokens_seen=1))
    return small_run


def packed_loaders(run, batch_size, seed, world_size=1):
    from data.packing import PackedLoader, document_mark
    files = [os.path.join(run["data"], f) for f in ("train_000.bin", "train_001.bin")]
    return [PackedLoader(files, batch_size, BLOCK, document_mark("bytes"), rank=r, world_size=world_size, seed=seed,
                         tokenizer="bytes", vocab_size=V) for r in range(world_size)]


def test_packed_cache_gives_the_teacher_of_each_packed_row(packed_run):
    """Targets assembled from a piece-keyed top-V cache equal the teacher run on the packed row itself (segment
    ids and positions, attention within documents), in float64, at every scored token; whatever the seed and
    world size. The cache is float32: a 1-layer width-16 teacher's fp32 logits are dot products of at most 64
    terms, so |error| ≲ 64·eps32·max|t| per logit (and per lse, a log-sum-exp of those, T = 2 halves it)."""
    out = str(packed_run["tmp"] / "pcache")
    build(packed_run, out, f"--k={V}", "--temperature=2.0", "--packing=True", "--units_per_shard=7")
    cache = TeacherCache(out)
    assert cache.keying == "chunk" and cache.n_shards > 2   # pieces from both files, spread over several shards
    teacher = packed_run["teacher"].double()
    W = teacher.lm_head.weight[:V]
    one = packed_loaders(packed_run, 4, seed=3)[0]
    two = packed_loaders(packed_run, 2, seed=3, world_size=2)
    scored = 0
    for step in range(6):   # past an epoch (~40 pieces, ≤ 4 rows a step)
        x, y, seg, pos = one.next_batch()
        rows = cache.batch_targets(one)
        with torch.no_grad():
            t = F.linear(teacher(x, segment_ids=seg, positions=pos), W).reshape(-1, V)
        v = y.reshape(-1) != -100
        scored += int(v.sum())
        got, tol = rows["logits"].double()[v], 64 * torch.finfo(torch.float32).eps * float(t.abs().max())
        torch.testing.assert_close(got, t[v].gather(1, rows["ids"][v]), rtol=0, atol=tol)
        torch.testing.assert_close(rows["lse"].double()[v], torch.logsumexp(t[v] / 2.0, -1), rtol=0, atol=tol)
        assert (got[:, :-1] >= got[:, 1:]).all()                      # sorted, so top_k' < V keeps the largest
        assert torch.isfinite(rows["logits"]).all() and torch.isfinite(rows["lse"]).all()   # padding: finite filler
        for r, loader in enumerate(two):   # another world size reads the same rows for the same pieces
            loader.next_batch()
            assert loader.last_pieces == one.last_pieces[2 * r:2 * r + 2]
            part = cache.batch_targets(loader)
            assert torch.equal(part["logits"], rows["logits"][2 * r * BLOCK:(2 * r + 2) * BLOCK])
    assert scored > 6 * 4 * BLOCK // 2   # rows were mostly documents, not padding
    other = packed_loaders(packed_run, 4, seed=11)[0]   # another seed packs other rows: same cache, still exact
    x, y, seg, pos = other.next_batch()
    assert other.last_pieces != one.last_pieces
    with torch.no_grad():
        t = F.linear(teacher(x, segment_ids=seg, positions=pos), W).reshape(-1, V)
    rows, v = cache.batch_targets(other), y.reshape(-1) != -100
    tol = 64 * torch.finfo(torch.float32).eps * float(t.abs().max())
    torch.testing.assert_close(rows["logits"].double()[v], t[v].gather(1, rows["ids"][v]), rtol=0, atol=tol)


def test_packed_and_plain_caches_refuse_the_other_kind_of_run(packed_run):
    from kd_cache import piece_identity
    files = [os.path.join(packed_run["data"], f) for f in ("train_000.bin", "train_001.bin")]
    ok = dict(tokenizer="bytes", n_vocab=V, block_size=BLOCK, temperature=1.0, data_files=files, top_k=4,
              kd_loss="forward")
    packed, plain = str(packed_run["tmp"] / "packed"), str(packed_run["tmp"] / "plain")
    build(packed_run, packed, "--k=4", "--packing=True")
    build(packed_run, plain, "--k=4")
    pieces = piece_identity(packed_loaders(packed_run, 1, seed=0)[0])
    TeacherCache(packed).check_run(**ok, pieces=pieces)
    TeacherCache(plain).check_run(**ok)
    with pytest.raises(CacheError, match="made with packing .* trains without it"):
        TeacherCache(packed).check_run(**ok)
    with pytest.raises(CacheError, match="made without packing .* trains with it"):
        TeacherCache(plain).check_run(**ok, pieces=pieces)
    with pytest.raises(CacheError, match="document pieces: cache"):   # other pieces (e.g. another mark)
        TeacherCache(packed).check_run(**ok, pieces={**pieces, "mark": [10, "end"]})
    with pytest.raises(SystemExit):   # a folder of the other keying is another cache, not one to resume
        build(packed_run, plain, "--k=4", "--packing=True")
    rows = TeacherCache(packed).packed_targets([[(0, 0)]])
    assert rows["ids"].shape == (BLOCK, 4)


# ---- end to end: train.py from the cache ----------------------------------------------------------------------

def run_train(*args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    r = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def losses(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [rec["loss"] for rec in map(json.loads, f) if "loss" in rec]


@pytest.mark.slow
def test_student_from_a_full_cache_trains_as_the_online_student(small_run):
    """k = V at the default (float32) precision: the cached run's loss curve equals the online run's.
    Tolerance: both compute the same fp32 quantities in other orders (fused kernel online, chunked sparse
    cached): per-token KD and CE agree to ~V·eps32 relative (≈3e-5 for V = 257), and SGD (no Adam
    amplification) carries that into the weights at lr·grad size per step, so over 6 steps the curves stay
    within ~1e-4 of each other; 1e-3 absolute leaves margin and is still far below the KD term's effect
    (the no-KD run differs by > 1e-2 by step 3, checked below)."""
    out = str(small_run["tmp"] / "cache")
    build(small_run, out, f"--k={V}")
    common = [f"--data_dir={small_run['data']}", f"--block_size={BLOCK}", "--batch_size=4", f"--batch_tokens={4 * BLOCK}",
              "--model=tiny-96", "--max_iters=6", "--eval_interval=1000", "--eval_iters=1", "--device=cpu",
              "--optim=sgd", "--learning_rate=0.5", "--alpha=0.7", "--log_interval=1", "--model_args={'n_layer': 1}"]
    tmp = small_run["tmp"]
    run_train(*common, f"--teacher_ckpt={small_run['ckpt']}", f"--out_dir={tmp / 'online'}")
    run_train(*common, f"--teacher_cache={out}", f"--out_dir={tmp / 'cached'}")
    run_train(*common[:-3], "--alpha=0.0", "--log_interval=1", "--model_args={'n_layer': 1}", f"--out_dir={tmp / 'nokd'}")
    online, cached, nokd = losses(tmp / "online"), losses(tmp / "cached"), losses(tmp / "nokd")
    assert len(online) == len(cached) == 6
    assert max(abs(a - b) for a, b in zip(online, cached)) < 1e-3, (online, cached)
    assert max(abs(a - b) for a, b in zip(online, nokd)) > 1e-2
    # a run that does not fit the cache is refused before training, naming what differs
    r = subprocess.run([sys.executable, "train.py", *common, f"--teacher_cache={out}", "--temperature=2.0",
                        f"--out_dir={tmp / 'bad'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "temperature: cache 1.0, run 2.0" in r.stderr


def test_packed_cache_at_half_precision_and_sampled(packed_run):
    """The other stored forms through the packed reader: bfloat16 logits are the float32 cache's rounded to
    bfloat16 (the same teacher GEMMs on the CPU, so exactly equal); a sampled cache's rows hold K draws, its
    padding a valid filler (all K on one id)."""
    f32, bf16, smp = (str(packed_run["tmp"] / n) for n in ("f32", "bf16", "smp"))
    build(packed_run, f32, "--k=8", "--packing=True")
    build(packed_run, bf16, "--k=8", "--packing=True", "--value_dtype=bfloat16")
    build(packed_run, smp, "--k=16", "--packing=True", "--method=sampled")
    loader, padding = packed_loaders(packed_run, 3, seed=2)[0], 0
    for _ in range(4):
        _, y, _, _ = loader.next_batch()
        padding += int((y == -100).sum())
        a, b = TeacherCache(f32).batch_targets(loader), TeacherCache(bf16).batch_targets(loader)
        assert torch.equal(a["ids"], b["ids"]) and torch.equal(a["logits"].bfloat16().float(), b["logits"])
        rows = TeacherCache(smp).batch_targets(loader)
        assert (rows["counts"].sum(-1) == 16).all() and (rows["ids"] < V).all()
    assert padding > 0   # the batches had padding, so the filler was exercised


@pytest.mark.slow
def test_packed_student_from_a_full_cache_trains_as_the_online_packed_student(packed_run):
    """packing=True, k = V, float32 cache: the cached student's loss curve equals the online packed student's,
    within 1e-3 as in the unpacked test above (the same fp32 quantities in other orders, plus the teacher's
    attention run on a piece alone against within a packed row: also ~eps32 relative per logit)."""
    out = str(packed_run["tmp"] / "pcache")
    build(packed_run, out, f"--k={V}", "--packing=True")
    common = [f"--data_dir={packed_run['data']}", f"--block_size={BLOCK}", "--batch_size=4", f"--batch_tokens={4 * BLOCK}",
              "--model=tiny-96", "--max_iters=6", "--eval_interval=1000", "--eval_iters=1", "--device=cpu",
              "--optim=sgd", "--learning_rate=0.5", "--log_interval=1", "--model_args={'n_layer': 1}", "--packing=True"]
    tmp = packed_run["tmp"]
    run_train(*common, "--alpha=0.7", f"--teacher_ckpt={packed_run['ckpt']}", f"--out_dir={tmp / 'online'}")
    run_train(*common, "--alpha=0.7", f"--teacher_cache={out}", f"--out_dir={tmp / 'cached'}")
    run_train(*common, "--alpha=0.0", f"--out_dir={tmp / 'nokd'}")
    online, cached, nokd = losses(tmp / "online"), losses(tmp / "cached"), losses(tmp / "nokd")
    assert len(online) == len(cached) == 6
    assert max(abs(a - b) for a, b in zip(online, cached)) < 1e-3, (online, cached)
    assert max(abs(a - b) for a, b in zip(online, nokd)) > 1e-2
    # the same cache without packing is refused before training, saying so
    r = subprocess.run([sys.executable, "train.py", *common[:-1], "--alpha=0.7", f"--teacher_cache={out}",
                        f"--out_dir={tmp / 'bad'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "made with packing" in r.stderr, r.stderr[-2000:]


# ---- sweep.py: one cache per teacher, every student of it reads the cache ---------------------------------

def test_sweep_grid_trains_each_teachers_students_from_one_cache(tmp_path, capsys):
    import sweep
    grid = tmp_path / "g.py"
    grid.write_text("""
common = dict(device="cpu", block_size=64, learning_rate=1e-3, data_dir="d")
teachers = {"a": dict(config="configs/tiny_teacher.py")}
students = {"s": dict(config="configs/tiny_student.py")}
alphas = [0.2, 0.5]
seeds = [43, 44]
caches = {"top4": dict(method="top-k", k=4, train=dict(top_k=4)), "smp8": dict(method="sampled", k=8)}
evals = {"loss": "--tasks loss"}
""")
    runs = sweep.expand(sweep.load_grid(str(grid)))
    caches = [r for r in runs if r["kind"] == "cache"]
    assert [r["name"] for r in caches] == ["cache_a_top4", "cache_a_smp8"] and all(r["deps"] == ["teacher_a"] for r in caches)
    args = sweep.train_args(caches[0])
    assert args[0] == "teacher_cache.py" and "--k=4" in args and "--block_size=64" in args and "--data_dir=d" in args
    assert "--learning_rate=0.001" not in args and "--teacher_ckpt=out/g/teacher_a/ckpt.pt" in args
    r = next(r for r in runs if r["name"] == "s_a_a0.5_top4_s44")
    assert r["deps"] == ["cache_a_top4"] and r["overrides"]["teacher_cache"] == caches[0]["out_dir"]
    assert r["overrides"]["teacher_ckpt"] == "" and r["overrides"]["top_k"] == 4
    assert "top_k" not in next(r for r in runs if r["name"] == "s_a_a0.5_smp8_s44")["overrides"]
    assert "s_a_a0.5_s44" in [r["name"] for r in runs]            # the online-KD students stay
    assert len(runs) == 1 + 2 + 2 * (1 + 2 * 3)
    assert sweep.run_evals(caches[0], {"loss": ""}) == {} and sweep.done_file(caches[0]).endswith("summary.json")
    sweep.main([str(grid), "--dry"])
    plan = capsys.readouterr().out
    assert "teacher a runs once here; 4 student(s) train from this cache" in plan and "2 teacher caches" in plan


@pytest.mark.slow
def test_cache_under_torchrun_ddp_and_resume(small_run):
    """torchrun: 2 ranks write the same sampled cache, byte for byte, as one process. Training from it, 2 ranks ×
    batch 4 follow the 1-process batch-8 curve (the same windows, so the same cached rows; only the gradient's
    summation order differs: the rounding bound is test_train's LOSS_RTOL 1e-5), and a run SIGKILLed after step 4
    and resumed from its step-3 checkpoint reproduces the straight run exactly (same machine, same threads)."""
    tmp = small_run["tmp"]
    one, two = str(tmp / "one"), str(tmp / "two")
    build(small_run, one, "--method=sampled", "--k=8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "teacher_cache.py", f"--teacher_ckpt={small_run['ckpt']}", f"--data_dir={small_run['data']}",
                        f"--out={two}", f"--block_size={BLOCK}", "--device=cpu", "--units_per_shard=10", "--batch_size=4",
                        "--method=sampled", "--k=8"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for j in range(4):
        with open(os.path.join(one, SHARD_NAME.format(j)), "rb") as a, open(os.path.join(two, SHARD_NAME.format(j)), "rb") as b:
            assert a.read() == b.read(), j

    common = [f"--data_dir={small_run['data']}", f"--block_size={BLOCK}", f"--batch_tokens={8 * BLOCK}", "--model=tiny-64",
              "--max_iters=6", "--eval_interval=3", "--eval_iters=1", "--device=cpu", "--optim=sgd", "--learning_rate=0.05",
              "--warmup_frac=0.0", "--alpha=0.5", "--log_interval=1", f"--teacher_cache={one}"]
    run_train(*common, "--batch_size=8", f"--out_dir={tmp / 'single'}")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
                        *common, "--batch_size=4", f"--out_dir={tmp / 'ddp'}"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    single, ddp = losses(tmp / "single"), losses(tmp / "ddp")
    assert len(single) == len(ddp) == 6
    assert all(abs(a - b) <= 1e-5 * abs(a) + 1e-7 for a, b in zip(single, ddp)), (single, ddp)

    killed = tmp / "killed"
    r = subprocess.run([sys.executable, "train.py", *common, "--batch_size=8", f"--out_dir={killed}"], cwd=REPO,
                       env={**env, "NANOKD_TEST_SIGNAL": "SIGKILL@4"}, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    r = run_train(*common, "--batch_size=8", f"--out_dir={killed}", "--resume=True")
    assert "resumed" in r.stdout
    curve = {}
    with open(killed / "log.jsonl") as f:
        for rec in map(json.loads, f):
            if "loss" in rec:
                curve[rec["step"]] = rec["loss"]   # the resumed run's records of steps 4.. replace the killed run's
    assert [curve[s] for s in sorted(curve)] == single


def test_readme_cache_tables_are_generated_from_the_results():
    """The README's teacher-cache tables are bench_cache.py's output from the JSON in bench/results/, not typed."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import bench_cache
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    for name in ("teacher_cache_cpu_2026-12-06.json", "laptop_cache_grid_2026-12-06.json"):
        for line in bench_cache.table(os.path.join(REPO, "bench", "results", name)).splitlines():
            assert line in readme, f"README lacks this line of {name}'s table: {line}"
