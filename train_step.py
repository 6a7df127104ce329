"""
The loss of one training micro-batch, as train.py computes it: both forwards, the final hidden states
cast to the run's compute dtype, the lm_head fused into the loss. bench/bench_step.py times this same
function, so what it measures is the path training takes.

    loss, ce, kd = micro_batch_loss(student, raw_student.lm_head, x, y, alpha, teacher=teacher,
                                    teacher_head=raw_teacher.lm_head, compute_dtype=torch.bfloat16, **loss_options)
"""

from contextlib import nullcontext

import torch

from chunked_loss import in_kernel, linear_kd_ce
from distill_loss import distill_loss
from parallel import full
from sparse_kd import sparse_linear_kd_ce


def loss_path(loss_impl, has_teacher, kl="forward", temperature=1.0, top_k=None, label_smoothing=0.0, **_):
    """Which code computes the loss (for the log): "reference" (distill_loss.py on full logits), "fused"
    (fused_kd.py's kernel: plain CE, or forward KL at T > 0) or "chunked" (chunked_loss.py: every other option)."""
    if loss_impl == "reference":
        return "reference"
    return "fused" if in_kernel(has_teacher, kl, temperature, top_k, label_smoothing) else "chunked"


def micro_batch_loss(student, student_head, x, y, alpha, *, teacher=None, teacher_head=None,
                     loss_impl="fused", compute_dtype=None, segment_ids=None, positions=None, cached=None,
                     **loss_options):
    """Forward both models on a micro-batch; return (loss, ce, kd): the objective at α = alpha, and its two
    terms (ce against the data, kd against the teacher; kd is 0 without one), ce and kd detached.

    student       callable, x [B, T] -> final hidden states [B, T, H] (a GPT, or it compiled / DDP-wrapped)
    student_head  the raw student's lm_head: its weight is read here (gathered under FSDP), never called
    teacher, teacher_head   the same for the frozen teacher; None = no teacher (plain CE)
    loss_impl     "fused" (never the [B·T, V] logits) or "reference" (distill_loss.py on full logits)
    segment_ids, positions   [B, T] of packed rows (data/packing.py): both models attend within documents,
                  RoPE restarts per document; padding has target ignore_index, so neither loss scores it
    cached        instead of a teacher: a teacher cache's rows for this micro-batch (kd_cache.py), as
                  dict(targets=..., method=..., k=...); the KD term then comes from sparse_kd.py, chunked
    compute_dtype None = fp32; torch.bfloat16 / float16 = autocast the forwards in it and cast the final
                  hidden states to it, so the fused lm_head GEMMs run in it, as an autocast lm_head would
    loss_options  distill_loss's keywords: temperature, vocab_size, kl, top_k (a count), top_k_variant,
                  label_smoothing, jsd_beta, ignore_index"""
    autocast = torch.autocast(x.device.type, dtype=compute_dtype) if compute_dtype is not None else nullcontext()
    h_t = None
    docs = () if segment_ids is None else (segment_ids, positions)
    with autocast:
        h = student(x, *docs)
        if teacher is not None:
            with torch.no_grad():
                h_t = teacher(x, *docs)
    # Under FSDP the lm_head weights may still be shards: gathered differentiably (parallel.full)
    w_s = full(student_head.weight)
    w_t = full(teacher_head.weight) if teacher is not None else None
    if cached is not None:   # always chunked: the student's logits a chunk at a time, the teacher's only sparse
        h = h.to(compute_dtype) if compute_dtype is not None else h
        o = loss_options
        return sparse_linear_kd_ce(h, w_s, y, cached["targets"], method=cached["method"], cache_k=cached["k"],
                                   alpha=alpha, temperature=o.get("temperature", 1.0), top_k=o.get("top_k"),
                                   top_k_variant=o.get("top_k_variant", "teacher"), vocab_size=o.get("vocab_size"),
                                   label_smoothing=o.get("label_smoothing", 0.0), ignore_index=o.get("ignore_index", -100))
    if loss_impl == "fused":
        # The residual stream is fp32 under autocast, so the fused loss's GEMMs would run in fp32 (TF32 at
        # best) with fp32 gradient buffers: the cast makes them bf16 GEMMs with fp32 accumulation.
        if compute_dtype is not None:
            h, h_t = h.to(compute_dtype), (h_t.to(compute_dtype) if h_t is not None else None)
        return linear_kd_ce(h, w_s, y, h_t, w_t, alpha=alpha, **loss_options)
    with autocast:
        logits = torch.nn.functional.linear(h, w_s)
        t_logits = torch.nn.functional.linear(h_t, w_t) if teacher is not None else None
    return distill_loss(logits, y, t_logits, alpha=alpha, **loss_options)


def micro_step_weights(targets, world_size=1, ignore_index=-100, all_reduce=None):
    """Each micro-batch's share of the step's loss, so that the step's objective is the sum over every scored
    token of the step (all micro-steps, all ranks) divided by their number, as MaxText divides by the count of
    nonzero target segments. A micro-batch's mean loss times its weight, summed over micro-steps, then averaged
    over ranks by DDP, is that objective, whatever the padding each holds. Returned as divisors (loss / d):
    without padding every d is exactly the accumulation count, so an unpacked run is bit for bit as before.
    targets: this rank's micro-batches' y; all_reduce: sums a tensor over ranks in place (None: one process)."""
    scored = torch.tensor([float((y != ignore_index).sum()) for y in targets], dtype=torch.float64)
    total = scored.sum()
    if all_reduce is not None:
        all_reduce(total)
    return [float(total) / max(1.0, float(n) * world_size) for n in scored.tolist()]
