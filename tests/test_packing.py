"""Document-aware training (data/packing.py, model.py's document mask, train_step.micro_step_weights): pieces found
from the end-of-text marks, first-fit rows, DDP ≡ one process, exact resume, a packed row's logits and losses equal
its documents run alone, padding scores nothing."""

import json

import numpy as np
import pytest
import torch

from data.packing import (BINS, PackedLoader, boundary_share, document_pieces, first_fit, length_histogram,
                          packed_attention_share)
from data.tokenfile import write_tokens
from distill_loss import distill_loss
from fused_kd import fused_linear_kd_ce
from model import GPT, GPTConfig, document_mask, masked_attention
from train_step import micro_step_weights

EOT = 256


def random_documents(n_docs, seed, lo=1, hi=40):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, rng.integers(lo, hi)) for _ in range(n_docs)]


def stream(docs):
    return np.concatenate([np.append(d, EOT) for d in docs])


def test_pieces_are_documents_cut_at_T_and_score_every_token_once():
    docs = random_documents(60, 0, hi=30) + [np.arange(70) % 256]   # one long document, cut into chunks
    toks = stream(docs)
    T = 16
    first, n = document_pieces(toks, (EOT, "end"), T)
    # independent reference: walk the stream, a document is its tokens up to and including its EOT
    want, start = [], 0
    for d in docs:
        doc_targets = len(d) + 1                          # its tokens and its EOT, each predicted once
        lead = 1 if start > 0 else 0                      # the previous EOT is its first input
        a = start - lead
        targets = doc_targets - (1 - lead)
        for j in range(0, targets, T):
            want.append((a + j, min(T, targets - j)))
        start += len(d) + 1
    assert list(zip(first.tolist(), n.tolist())) == want
    # every target position of the stream is scored exactly once
    scored = np.concatenate([np.arange(f + 1, f + k + 1) for f, k in want])
    assert sorted(scored.tolist()) == list(range(1, len(toks)))
    # no piece's inputs cross a document: an EOT appears only as a piece's first input
    for f, k in want:
        assert EOT not in toks[f + 1:f + k].tolist()


def test_start_marks_and_histogram():
    toks = np.array([5, 1, 2, 5, 3, 5, 4, 4, 4])   # documents start at each 5
    first, n = document_pieces(toks, (5, "start"), 8)
    assert list(zip(first.tolist(), n.tolist())) == [(0, 2), (3, 1), (5, 3)]
    h = length_histogram(stream([np.zeros(3), np.zeros(9), np.zeros(40)]), (EOT, "end"))
    # targets 3 (first document: no EOT before it), 10, 41 on bins [2,4), [8,16), [32,64)
    assert h["documents"] == [0, 1, 0, 1, 0, 1] and h["tokens"] == [0, 3, 0, 10, 0, 41]
    assert h["sum_sq"][5] == 41 ** 2
    # T = 16: 41 tokens lie in a document longer than T; 41 - 16 of them see no boundary in their window
    assert boundary_share(h, 16) == pytest.approx(1 - 25 / 54)
    assert packed_attention_share(h, 16) == pytest.approx((9 + 100 + 41 * 16) / (16 * 54))


def test_first_fit_is_grains():
    # 30 open rows; a length goes to the first that has room; the set ends at the first that fits none
    rows, used = first_fit(np.array([6, 6, 3, 5] + [8] * 27 + [1]), 10, bins=BINS)
    assert rows[0] == [0, 2, 31] and rows[1] == [1]      # 3, then the last 1, fill the first row's room
    assert rows[2] == [3] and used == 32 and len(rows) == 30
    rows, used = first_fit(np.array([6, 6, 3, 5] + [8] * 28), 10, bins=BINS)
    assert used == 31 and len(rows) == 30                  # the 28th 8 fits none of the 30 rows: the set is emitted


@pytest.fixture
def packed_file(tmp_path):
    path = tmp_path / "train.bin"
    write_tokens(path, stream(random_documents(400, 1, hi=50)), 257, "bytes")
    return str(path)


def batches(loader, k):
    return [loader.next_batch() for _ in range(k)]


def test_rows_hold_whole_pieces_and_an_epoch_visits_each_once(packed_file):
    B, T = 1, 32   # one row a batch: the epoch counter tells which epoch each row came from
    loader = PackedLoader(packed_file, B, T, (EOT, "end"), seed=3)
    toks = np.fromfile(packed_file, dtype="<u2", offset=256).astype(np.int64)
    seen = []
    while True:
        x, y, seg, pos = loader.next_batch()
        if loader.epoch == 1:
            break
        for i, placed in enumerate(loader.last_pieces):
            for p, col in placed:
                _, first, n = loader.piece_location(p)
                assert torch.equal(x[i, col:col + n], torch.from_numpy(toks[first:first + n]))
                assert torch.equal(y[i, col:col + n], torch.from_numpy(toks[first + 1:first + n + 1]))
                assert torch.equal(pos[i, col:col + n], torch.arange(n))
                assert (seg[i, col:col + n] == seg[i, col]).all() and seg[i, col] > 0
                seen.append(p)
            end = sum(loader.piece_len[p] for p, _ in placed)
            assert (y[i, end:] == -100).all() and (seg[i, end:] == 0).all()   # padding: unscored, segment 0
    assert sorted(seen) == list(range(loader.n_pieces)) and seen != sorted(seen)   # each once, shuffled
    assert loader.n_pieces > 400   # documents of up to 50 tokens: some were cut into two chunks


def test_ranks_equal_one_process_and_resume_is_exact(packed_file):
    T = 32
    single = PackedLoader(packed_file, 6, T, (EOT, "end"), seed=5)
    ranks = [PackedLoader(packed_file, 3, T, (EOT, "end"), rank=r, world_size=2, seed=5) for r in range(2)]
    for _ in range(70):   # 400 documents of ~25 tokens fill ~330 rows of 32: crosses sets and an epoch
        whole = single.next_batch()
        parts = [r.next_batch() for r in ranks]
        for k in range(4):
            assert torch.equal(torch.cat([parts[0][k], parts[1][k]]), whole[k])
    assert single.epoch >= 1 and all(r.state_dict() == single.state_dict() for r in ranks)
    state = json.loads(json.dumps(single.state_dict()))
    want = batches(single, 12)
    again = PackedLoader(packed_file, 6, T, (EOT, "end"), seed=5)
    again.load_state_dict(state)
    for a, b in zip(want, batches(again, 12)):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError, match="without packing"):
        again.load_state_dict({"epoch": 0, "position": 0, "seed": 5, "n_windows": 9, "block_size": T})


# ---- the model: a packed row is its documents run alone -----------------------------------------------------

STUDENT = GPTConfig(vocab_size=264, block_size=48, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, mlp_hidden=64)
TEACHER = GPTConfig(vocab_size=264, block_size=48, n_layer=2, n_embd=24, n_head=2, head_dim=16, qk_norm=True,
                    tie_embeddings=True, rope_theta=1e4)
# float64: each logit is a chain of reductions of length ≤ max(T, d, mlp) = 64 per layer, 2 layers plus the
# head; a packed row sums the same nonzero terms as its document alone, plus exact zeros from the mask, in
# another order. Linear bound ≈ (2·3·64 + 32)·u64·(magnitude ~10) ≈ 1e-12; 1e-10 leaves two orders for the
# accumulation's growth and is still 1e5 below a real difference (a token seeing another document: ~1e-2).
ATOL = 1e-10


def packed_row(docs, T):
    x = torch.zeros(1, T, dtype=torch.long)
    seg, pos = torch.zeros_like(x), torch.zeros_like(x)
    col = 0
    for d, doc in enumerate(docs, start=1):
        n = len(doc)
        x[0, col:col + n], seg[0, col:col + n], pos[0, col:col + n] = torch.as_tensor(doc), d, torch.arange(n)
        col += n
    return x, seg, pos


@pytest.mark.parametrize("cfg", [STUDENT, TEACHER], ids=["student", "teacher"])
@pytest.mark.parametrize("block_mask", [False, True], ids=["dense-sdpa", "flex-block-mask"])
def test_packed_logits_equal_each_document_alone(cfg, block_mask):
    torch.manual_seed(0)
    model = GPT(cfg).double().eval()
    docs = [d for d in random_documents(3, 7, lo=5, hi=15)]
    x, seg, pos = packed_row(docs, 40)          # 40 > Σ lengths: a padded tail too
    with torch.no_grad():
        packed = model.logits(x, seg, pos, block_mask=block_mask)
        col = 0
        for doc in docs:
            alone = model.logits(torch.as_tensor(doc)[None])
            torch.testing.assert_close(packed[0, col:col + len(doc)], alone[0], atol=ATOL, rtol=0)
            col += len(doc)
        # the check can fail: the same row without the mask is a different function after the first document
        plain = model.logits(x)
        assert (plain[0, len(docs[0]):col] - packed[0, len(docs[0]):col]).abs().max() > 1e-3


def test_block_mask_equals_dense_mask_sdpa():
    g = torch.Generator().manual_seed(0)
    B, H, Hkv, T, D = 2, 4, 2, 200, 8   # T past one 128-block, so whole blocks are skipped
    seg = torch.sort(torch.randint(0, 5, (B, T), generator=g), dim=1).values
    q, k, v = (torch.randn(B, h, T, D, generator=g, dtype=torch.float64) for h in (H, Hkv, Hkv))
    dense = masked_attention(q, k, v, document_mask(seg, block_mask=False), enable_gqa=True)
    flex = masked_attention(q, k, v, document_mask(seg, block_mask=True), enable_gqa=True)
    torch.testing.assert_close(flex, dense, atol=1e-12, rtol=0)   # softmax over ≤ 200 terms, float64


# ---- the loss: a packed row scores its documents, padding nothing --------------------------------------------

def test_packed_ce_and_kd_are_token_weighted_sums_over_documents():
    torch.manual_seed(1)
    student, teacher = GPT(STUDENT).double(), GPT(TEACHER).double()
    docs = random_documents(3, 9, lo=6, hi=14)
    T = 40
    x, seg, pos = packed_row([d[:-1] for d in docs], T)
    y = torch.full((1, T), -100)
    col = 0
    for d in docs:
        y[0, col:col + len(d) - 1] = torch.as_tensor(d[1:])
        col += len(d) - 1
    # float64 through the reference loss (the fused one computes its rows in fp32; it is checked against the
    # reference in test_fused_kd.py): the packed row's CE and KD ...
    _, ce, kd = distill_loss(student.logits(x, seg, pos)[0], y[0], teacher.logits(x, seg, pos)[0], alpha=0.5,
                             vocab_size=257)
    want_ce = want_kd = 0.0
    n_all = sum(len(d) - 1 for d in docs)
    for d in docs:   # ... and each document alone, through the reference loss on full logits
        xi, yi = torch.as_tensor(d[:-1])[None], torch.as_tensor(d[1:])
        _, ce_i, kd_i = distill_loss(student.logits(xi)[0], yi, teacher.logits(xi)[0], alpha=0.5, vocab_size=257)
        want_ce += ce_i * (len(d) - 1) / n_all
        want_kd += kd_i * (len(d) - 1) / n_all
    torch.testing.assert_close(ce, want_ce, atol=ATOL, rtol=0)
    torch.testing.assert_close(kd, want_kd, atol=ATOL, rtol=0)
    # padding contributes nothing, in the fused loss training uses: other padding tokens leave the loss and
    # every gradient unchanged
    loss, _, _ = fused_linear_kd_ce(student(x, seg, pos)[0], student.lm_head.weight, y[0],
                                    teacher(x, seg, pos)[0].detach(), teacher.lm_head.weight, alpha=0.5,
                                    vocab_size=257, impl="torch")
    loss.backward()
    grads = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    x2 = x.clone()
    x2[0, n_all:] = torch.randint(0, 256, (T - n_all,))
    loss2, _, _ = fused_linear_kd_ce(student(x2, seg, pos)[0], student.lm_head.weight, y[0],
                                     teacher(x2, seg, pos)[0].detach(), teacher.lm_head.weight, alpha=0.5,
                                     vocab_size=257, impl="torch")
    loss2.backward()
    assert loss2.item() == loss.item()
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, student.parameters()))


def test_step_weights_make_ranks_and_micro_steps_one_mean_over_scored_tokens():
    # 2 ranks × 2 micro-steps with different padding: Σ over micro-steps of mean/divisor, averaged over ranks
    # (as DDP does), must be the mean over every scored token of the step
    g = torch.Generator().manual_seed(0)
    values = [[torch.rand(3, 5, generator=g, dtype=torch.float64) for _ in range(2)] for _ in range(2)]
    targets = [[torch.randint(0, 9, (3, 5), generator=g) for _ in range(2)] for _ in range(2)]
    for r in range(2):
        for m in range(2):
            targets[r][m][torch.rand(3, 5, generator=g) < 0.2 * (1 + r + 2 * m)] = -100
    total = float(sum((t != -100).sum() for ts in targets for t in ts))
    step = 0.0
    for r in range(2):
        div = micro_step_weights(targets[r], world_size=2, all_reduce=lambda t: t.fill_(total))
        for m in range(2):
            keep = targets[r][m] != -100
            step += values[r][m][keep].mean().item() / div[m] / 2
    want = sum(values[r][m][targets[r][m] != -100].sum().item() for r in range(2) for m in range(2)) / total
    assert step == pytest.approx(want, rel=1e-12)
    # without padding each divisor is exactly the accumulation count: unpacked runs unchanged bit for bit
    assert micro_step_weights([torch.zeros(2, 4)] * 3, world_size=1) == [3.0, 3.0, 3.0]


def test_dry_run_states_attention_under_packing(tmp_path):
    from data.packing import write_length_histogram
    from plan import attention_under_packing
    write_tokens(tmp_path / "train.bin", stream([np.zeros(30, dtype=np.int64)] * 10 + [np.zeros(200, dtype=np.int64)]), 257, "bytes")
    hist = write_length_histogram(str(tmp_path))
    config = {"packing": True, "data_dir": str(tmp_path), "block_size": 64}
    share, line = attention_under_packing(config)
    # by hand: targets 30 (first document), 31 × 9, 201 cut at 64 → Σn² / (64·Σn) with 201 counted as 201·64
    n = [30] + [31] * 9
    assert share == pytest.approx((sum(x * x for x in n) + 201 * 64) / (64 * (sum(n) + 201)))
    assert f"{share:.3f}" in line and "doc_lengths.json" in line and sum(hist["documents"]) == 11
    assert attention_under_packing({**config, "packing": False})[0] == 1.0
    assert attention_under_packing({**config, "data_dir": str(tmp_path / "none")})[0] == 1.0   # no histogram: full rows
