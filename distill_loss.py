"""
The reference distillation loss, on full logits, in plain PyTorch.

    loss = (1 − α)·CE(student, labels) + α·T²·KL(q_teacher,T ‖ p_student,T)

averaged over tokens whose label is not ignore_index. Columns at or past
`vocab_size` (embedding padding) are dropped for both models before any
softmax. This is the definition everything faster (fused_kd.py) must match;
it favours being obviously right over being fast or small.

Ablations from the paper live here too: reverse KL, T = 0 (the teacher's argmax
as a hard label), top-k truncation of the teacher (renormalised over its k
largest entries), and label smoothing as the no-teacher control.
"""

import torch
import torch.nn.functional as F


def check_kd_args(alpha, temperature):
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (it weights KD against CE), got {alpha}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means the teacher's argmax as hard labels), got {temperature}")


def distill_loss(student_logits, labels, teacher_logits=None, *, alpha=0.0, temperature=1.0,
                 ignore_index=-100, vocab_size=None, kl="forward", top_k=None, label_smoothing=0.0):
    """Returns (loss, ce, kd): loss differentiable, ce and kd detached for logging (kd is 0 without a teacher)."""
    check_kd_args(alpha, temperature)
    if kl not in ("forward", "reverse"):
        raise ValueError(f"kl must be 'forward' or 'reverse', got {kl!r}")
    if kl == "reverse" and top_k is not None:
        raise ValueError("reverse KL against a top-k truncated teacher is infinite; use forward KL with top_k")
    V = student_logits.shape[-1] if vocab_size is None else vocab_size
    math_dtype = torch.promote_types(student_logits.dtype, torch.float32)  # fp32 at least; fp64 stays fp64 for tests
    s = student_logits.reshape(-1, student_logits.shape[-1])[:, :V].to(math_dtype)
    y = labels.reshape(-1)
    valid = y != ignore_index
    n_valid = valid.sum().clamp(min=1)

    ce_tok = F.cross_entropy(s, y, ignore_index=ignore_index, reduction="none", label_smoothing=label_smoothing)
    ce = ce_tok.sum() / n_valid
    if teacher_logits is None:
        return ce, ce.detach(), torch.zeros_like(ce).detach()

    t = teacher_logits.reshape(-1, teacher_logits.shape[-1])[:, :V].to(math_dtype)
    T = temperature
    if T == 0:
        # hard distillation: cross-entropy against the teacher's most likely token
        kd_tok = F.cross_entropy(s, t.argmax(-1), reduction="none")
    else:
        log_p = F.log_softmax(s / T, dim=-1)
        t_scaled = t / T
        if top_k is not None:
            # keep the teacher's k largest logits; the rest get probability 0 after renormalising
            kth = t_scaled.topk(top_k, dim=-1).values[:, -1:]
            t_scaled = t_scaled.masked_fill(t_scaled < kth, float("-inf"))
        log_q = F.log_softmax(t_scaled, dim=-1)
        q = log_q.exp()
        if kl == "forward":   # KL(q ‖ p): mass-covering, the paper's choice
            kd_tok = torch.where(q > 0, q * (log_q - log_p), 0.0).sum(-1)   # 0·log 0 := 0 (top-k)
        else:                 # KL(p ‖ q): mode-seeking
            p = log_p.exp()
            kd_tok = (p * (log_p - log_q)).sum(-1)
        kd_tok = kd_tok * T * T
    kd = (kd_tok * valid).sum() / n_valid
    loss = (1 - alpha) * ce + alpha * kd
    return loss, ce.detach(), kd.detach()
