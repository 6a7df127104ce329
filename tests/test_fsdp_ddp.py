"""FSDP2 against DDP in one process pair (gloo, CPU, torch.multiprocessing): the sharded student built on the
meta device starts from exactly the weights GPT(cfg) gives; FSDP and DDP compute the same loss and gradients
under bf16 autocast (train_step.micro_batch_loss, the fused loss, a bf16 teacher), and with torch.compile."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow   # two processes (and a compile): seconds

WORLD = 2
SEED = 43


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whole(p):
    from parallel import full
    return full(p.detach()).clone()


def meta_init_is_todays(cfg):
    from model import GPT
    from parallel import build_sharded
    torch.manual_seed(SEED)
    today = GPT(cfg)
    rng_today = torch.get_rng_state()
    torch.manual_seed(SEED)
    sharded = build_sharded(cfg, "cpu")
    assert torch.equal(torch.get_rng_state(), rng_today), "the generator ends elsewhere than after GPT(cfg)"
    want = dict(today.named_parameters())
    got = {k: whole(p) for k, p in sharded.named_parameters()}
    assert sorted(got) == sorted(want)
    differ = [k for k in want if not torch.equal(got[k], want[k].detach())]
    assert not differ, f"{len(differ)} parameters differ from GPT(cfg)'s init, e.g. {differ[:3]}"
    if cfg.tie_embeddings:
        assert sharded.lm_head.weight is sharded.embed_tokens.weight


def loss_and_grads(cfg, parallel, compute_dtype, compile_):
    """One micro-batch's loss (this rank's) and the averaged gradients (whole), as train.py computes them."""
    from model import GPT
    from parallel import build_sharded, wrap_ddp
    from train_step import micro_batch_loss
    torch.manual_seed(SEED)
    raw = build_sharded(cfg, "cpu", compute_dtype) if parallel == "fsdp" else GPT(cfg)
    torch.manual_seed(7)   # the teacher: another tiny model, bf16 in a bf16 run as checkpoint.load_teacher makes it
    teacher = GPT(cfg).requires_grad_(False).eval()
    if compute_dtype is not None:
        teacher.to(compute_dtype)
    # aot_eager: Dynamo's tracing through FSDP2's hooks and AOTAutograd's joint graph, which is where compile and
    # FSDP2 meet; inductor's C++ code generation (minutes on a busy 2-core machine) is checked without FSDP by
    # tests/test_parallel.py and under FSDP by bench/gpu_check.sh's smoke run (train.py --compile=True)
    student = torch.compile(raw, backend="aot_eager") if compile_ else raw
    if parallel == "ddp":
        student = wrap_ddp(student, "cpu")
    g = torch.Generator().manual_seed(100 + dist.get_rank())   # each rank its own batch
    x = torch.randint(0, 257, (2, cfg.block_size), generator=g)
    y = torch.randint(0, 257, (2, cfg.block_size), generator=g)
    loss, ce, kd = micro_batch_loss(student, raw.lm_head, x, y, 0.5, teacher=teacher, teacher_head=teacher.lm_head,
                                    compute_dtype=compute_dtype, temperature=2.0, vocab_size=257)
    loss.backward()
    if parallel == "ddp":   # the gradients are views into DDP's buckets (held once), not storages of their own
        storages = {p.grad.untyped_storage().data_ptr() for p in raw.parameters()}
        assert len(storages) < len(list(raw.parameters())), "DDP keeps a second copy of the gradients"
    return loss.detach(), {k: whole(p.grad) for k, p in raw.named_parameters()}


def worker(rank, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    from model import config_from_preset
    try:
        tied = config_from_preset("tiny-64", 257, 16)
        untied = config_from_preset("tiny-64", 257, 16, tie_embeddings=False)

        # 1. The sharded student, built on the meta device, holds exactly the weights GPT(cfg) gives.
        meta_init_is_todays(tied)
        meta_init_is_todays(untied)

        # 2. FSDP ≡ DDP under bf16 autocast. Same weights, same batch, same ops on each rank (FSDP's bf16 weights
        # are autocast's rounding of the same fp32 ones): the losses are bit-identical. (A bf16 residual stream
        # under FSDP moved this loss by ~2e-5 of itself: only an exact check sees that.) The gradients are the
        # same bf16 GEMMs, averaged over 2 ranks (a + b over 2: exact in any order), but where the residual
        # branches join, FSDP's backward hooks may add the fp32 partial sums in another order. A reordered sum
        # of k terms moves by at most (k − 1)·u of their magnitudes (u = 2^-24); 2 blocks join 4 times, k ≤ 3:
        # 8u ≈ 5e-7 of the terms, which the embedding's scatter-add then sums over tokens; allow 4× for the
        # terms' magnitudes exceeding the result's: 2e-6, norm-wise per tensor.
        ref_loss, ref_g = loss_and_grads(untied, "ddp", torch.bfloat16, False)
        loss, grads = loss_and_grads(untied, "fsdp", torch.bfloat16, False)
        assert torch.equal(loss, ref_loss), f"FSDP's loss {loss.item()} is not DDP's {ref_loss.item()}"
        differ = {k: ((grads[k] - ref_g[k]).norm() / ref_g[k].norm()).item() for k in ref_g}
        assert max(differ.values()) <= 2e-6, f"FSDP's gradients differ from DDP's: {differ}"

        # 3. FSDP2 under torch.compile against eager DDP, fp32: the same math, fused and reordered by the
        # compiler, so the fp32 rounding bounds derived in tests/test_train.py hold (a loss: 2e-4 of itself;
        # one gradient, norm-wise: 1.7e-3).
        ref_loss, ref_g = loss_and_grads(tied, "ddp", None, False)
        loss, grads = loss_and_grads(tied, "fsdp", None, True)
        assert abs(loss.item() - ref_loss.item()) <= 2e-4 * abs(ref_loss.item()), (loss.item(), ref_loss.item())
        for k in ref_g:
            rel = ((grads[k] - ref_g[k]).norm() / ref_g[k].norm()).item()
            assert rel <= 1.7e-3, f"{k}: compiled FSDP's gradient differs from eager DDP's by {rel:.2e}"
    finally:
        dist.destroy_process_group()


def test_fsdp_init_bf16_and_compile_match_today_and_ddp():
    # one pair of processes for all three checks: starting two Python processes with torch is most of the cost
    mp.spawn(worker, args=(free_port(),), nprocs=WORLD, join=True)
