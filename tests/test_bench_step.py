"""bench/bench_step.py times the path training takes: every contender goes through train_step.micro_batch_loss,
the function train.py's loop calls, so under bf16 autocast the fused loss gets bf16 hidden states (an earlier
copy in bench_step skipped that cast and timed fp32 lm_head GEMMs training never runs)."""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench_step  # noqa: E402
import chunked_loss  # noqa: E402
import train_step  # noqa: E402

CFG = dict(model="tiny-64", model_args={}, teacher_model="tiny-64", tokenizer="bytes", batch_size=2, block_size=16,
           alpha=0.5, temperature=2.0, compile=False)


def test_train_py_and_bench_step_call_the_same_loss_function():
    # train.py is a script (running it trains), so its import line is what can be checked without a subprocess;
    # tests/test_train.py's spy test runs it and sees the same dtypes as below
    src = open(os.path.join(ROOT, "train.py")).read()
    assert "from train_step import loss_path, micro_batch_loss" in src
    assert "micro_batch_loss(student, raw_model.lm_head" in src
    assert bench_step.micro_batch_loss is train_step.micro_batch_loss


@pytest.mark.parametrize("dtype,want", [("bfloat16", torch.bfloat16), ("float32", torch.float32)])
def test_every_contender_reaches_the_loss_as_training_does(monkeypatch, dtype, want):
    seen = []

    def spy(name, fn):
        def wrapped(*args, **kw):
            seen.append((name, *(a.dtype for a in args[:5] if isinstance(a, torch.Tensor) and a.is_floating_point())))
            return fn(*args, **kw)
        return wrapped
    monkeypatch.setattr(chunked_loss, "fused_linear_kd_ce", spy("fused", chunked_loss.fused_linear_kd_ce))
    monkeypatch.setattr(train_step, "distill_loss", spy("reference", train_step.distill_loss))
    calls = []
    monkeypatch.setattr(bench_step, "micro_batch_loss",
                        lambda *a, **kw: calls.append(kw.get("loss_impl", "fused")) or train_step.micro_batch_loss(*a, **kw))

    _, _, contenders = bench_step.build(CFG, "cpu", dtype)
    for name in ("student step", "KD step (fused)", "KD step (reference)"):
        contenders[name]()
    assert calls == ["fused", "fused", "reference"]
    # student step: (x_s, w_s); KD fused: (x_s, w_s, x_t, w_t); reference: (logits, t_logits). The student's
    # weight stays fp32 (autocast casts it inside the GEMM); hidden states and logits are in the run's dtype.
    assert seen[0] == ("fused", want, torch.float32)
    assert seen[1] == ("fused", want, torch.float32, want, want)   # teacher weights: bf16 for a bf16 run, as load_teacher
    assert seen[2] == ("reference", want, want)
