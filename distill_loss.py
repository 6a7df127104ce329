"""
The reference distillation loss, on full logits, in plain PyTorch.

    loss = (1 − α)·CE(student, labels) + α·T²·KL(q_teacher,T ‖ p_student,T)

averaged over tokens whose label is not ignore_index. Columns at or past
`vocab_size` (embedding padding) are dropped for both models before any
softmax. This is the definition everything faster (fused_kd.py, chunked_loss.py)
must match; it favours being obviously right over being fast or small.

Ablations from the paper live here too: reverse KL, T = 0 (the teacher's argmax
as a hard label), top-k truncation of the teacher in the three variants of the
authors' code (see top_k_variant below), label smoothing as the no-teacher
control, and JSD(β) as an example of another divergence.
"""

import torch
import torch.nn.functional as F

KL_CHOICES = ("forward", "reverse", "jsd")
TOP_K_VARIANTS = ("teacher", "both", "bucket")
# The "bucket" variant clamps both OTHER masses at this floor before the log, as the authors' code does
# with jnp.finfo(dtype).eps of their fp32 probabilities. A fixed constant (not the input's eps) keeps the
# loss one function whatever dtype it is computed in, so fp64 runs can check fp32 ones.
BUCKET_EPS = torch.finfo(torch.float32).eps


def check_kd_args(alpha, temperature):
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (it weights KD against CE), got {alpha}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means the teacher's argmax as hard labels), got {temperature}")


def resolve_top_k(top_k, vocab_size):
    """A count, or a fraction p < 1 of the vocabulary: k = round(p·V), as the authors' grid computes it
    (round(128256 * 0.01) = 1283). None/0 = no truncation; k ≥ V also keeps everything, as in their code."""
    if top_k is None or top_k == 0:
        return None
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    k = round(top_k * vocab_size) if top_k < 1 else int(top_k)
    if k < 1:
        raise ValueError(f"top_k={top_k} of a vocabulary of {vocab_size} keeps no token (round(p·V) = 0)")
    return None if k >= vocab_size else k


def check_loss_options(kl, temperature, top_k, top_k_variant, jsd_beta):
    if kl not in KL_CHOICES:
        raise ValueError(f"kl must be one of {KL_CHOICES}, got {kl!r}")
    if top_k_variant not in TOP_K_VARIANTS:
        raise ValueError(f"top_k_variant must be one of {TOP_K_VARIANTS}, got {top_k_variant!r}")
    if top_k is not None and top_k != 0 and kl != "forward":
        raise ValueError(f"top_k truncates the teacher of forward KL (the paper's ablation); got kl={kl!r}")
    if kl == "jsd" and not 0.0 < jsd_beta < 1.0:
        raise ValueError(f"jsd_beta must be in (0, 1) (at 0 and 1 JSD is identically 0), got {jsd_beta}")
    if temperature == 0 and kl != "forward":
        raise ValueError(f"temperature=0 means hard teacher labels (cross-entropy), which has no kl={kl!r} form")


def distill_loss(student_logits, labels, teacher_logits=None, *, alpha=0.0, temperature=1.0,
                 ignore_index=-100, vocab_size=None, kl="forward", top_k=None, top_k_variant="teacher",
                 label_smoothing=0.0, jsd_beta=0.5):
    """Returns (loss, ce, kd): loss differentiable, ce and kd detached for logging (kd is 0 without a teacher).

    kl: "forward" KL(q‖p) (the paper's), "reverse" KL(p‖q), or "jsd": β·KL(q‖m) + (1−β)·KL(p‖m) with
        m = β·q + (1−β)·p (q teacher, p student, both at T; β = jsd_beta, 0.5 = the symmetric JSD).
    temperature: T > 0 softens both; KD is scaled by T². T = 0: KD = CE against the teacher's argmax
        (no T², as in the authors' code).
    top_k: keep the teacher's k largest entries (a count, or a fraction of the vocabulary), forward KL only.
    top_k_variant, after the authors' MaxText/max_utils.py (TaiMingLu/maxtext-distillation, commit
        1d40b1da19b381f402ac0707189c2872150e0cf9):
        "teacher": the teacher renormalised over its top-k set K, the student over the whole vocabulary
                   (their kl_divergence_between_logits, no OTHER bucket):  Σ_K q̃·(log q̃ − log p)
        "both":    teacher and student each renormalised over K (their kl_divergence_between_logits_efficient,
                   top-k path without the bucket):                          Σ_K q̃·(log q̃ − log p̃)
        "bucket":  no renormalisation; the mass outside K forms one OTHER entry for each model (their
                   use_other_bucket=True):  Σ_K q·(log q − log p) + q_o·(log max(q_o, ε) − log max(p_o, ε)),
                   q_o = Σ_{v∉K} q_v, p_o = Σ_{v∉K} p_v, ε = BUCKET_EPS
    label_smoothing: ε of the CE term (with or without a teacher), as F.cross_entropy defines it over the
        real vocabulary.
    """
    check_kd_args(alpha, temperature)
    check_loss_options(kl, temperature, top_k, top_k_variant, jsd_beta)
    V = student_logits.shape[-1] if vocab_size is None else vocab_size
    k = resolve_top_k(top_k, V)
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
        log_q = F.log_softmax(t / T, dim=-1)
        if k is not None:
            kept = torch.zeros_like(s, dtype=torch.bool).scatter_(1, t.topk(k, dim=-1).indices, True)
        if k is None or kl != "forward":
            pass
        elif top_k_variant == "teacher":
            log_q = F.log_softmax((t / T).masked_fill(~kept, float("-inf")), dim=-1)   # 0 outside K
        elif top_k_variant == "both":
            log_q = F.log_softmax((t / T).masked_fill(~kept, float("-inf")), dim=-1)
            log_p = F.log_softmax((s / T).masked_fill(~kept, float("-inf")), dim=-1)
        q, p = log_q.exp(), log_p.exp()
        if kl == "forward":   # KL(q ‖ p): mass-covering, the paper's choice
            if k is not None and top_k_variant == "bucket":
                q_o = q.masked_fill(kept, 0.0).sum(-1)
                p_o = p.masked_fill(kept, 0.0).sum(-1)
                kd_tok = (torch.where(kept, q * (log_q - log_p), 0.0).sum(-1)
                          + q_o * (q_o.clamp(min=BUCKET_EPS).log() - p_o.clamp(min=BUCKET_EPS).log()))
            else:
                kd_tok = torch.where(q > 0, q * (log_q - log_p), 0.0).sum(-1)   # 0·log 0 := 0 (top-k)
        elif kl == "reverse":  # KL(p ‖ q): mode-seeking
            kd_tok = (p * (log_p - log_q)).sum(-1)
        else:                  # JSD(β): both against the mixture m, computed in log space
            b = jsd_beta
            log_m = torch.logaddexp(log_q + torch.log(torch.tensor(b, dtype=s.dtype)),
                                    log_p + torch.log(torch.tensor(1 - b, dtype=s.dtype)))
            kd_tok = b * (q * (log_q - log_m)).sum(-1) + (1 - b) * (p * (log_p - log_m)).sum(-1)
        kd_tok = kd_tok * T * T
    kd = (kd_tok * valid).sum() / n_valid
    loss = (1 - alpha) * ce + alpha * kd
    return loss, ce.detach(), kd.detach()
