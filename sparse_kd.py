"""
The KD term from a teacher cache's sparse targets (kd_cache.py), through chunked_loss.py's chunking: the
student's logits and softmax are computed as always, one chunk of tokens at a time; the teacher side is
only the cache's [tokens, k] rows, never a [tokens, V] tensor.

Top-k cache (ids and raw logits t_K of the teacher's k largest, sorted; lse = log Σ_v exp(t_v/T); the tail
mass outside the k): with a run's top_k = k' ≤ k, the set K is the cache's first k' ids, which is the
online top-k' set (ties aside), and each of the authors' three variants (distill_loss.py) is exact:

    "teacher": q̃ = softmax(t_K / T) over K,  p over the whole vocabulary:   T²·Σ_K q̃ (log q̃ − log p)
    "both":    q̃ as above, p̃ = softmax(s_K / T) over K:                      T²·Σ_K q̃ (log q̃ − log p̃)
    "bucket":  log q_K = t_K / T − lse, q_o = tail + Σ of the cache's entries past k', p_o = the student's
               tail sum:  T²·[Σ_K q (log q − log p) + q_o (log max(q_o, ε) − log max(p_o, ε))]

With k = V the cache holds the whole distribution and top_k = 0 gives the paper's full forward KL
(T²·Σ_v q (log q − log p), log q = t/T − lse). With k < V the full forward KL is unknowable (the tail's
shape is gone); kd_cache.TeacherCache.check_run refuses it.

Sampled cache (Anshumann et al., ACL 2025): K draws from q_T, stored as distinct ids and counts c. With
q̂ = c / K, the term T²·Σ_j q̂_j (log q̂_j − log p_j) has gradient T·(p_T − q̂) in the student logits,
whose expectation over the draws is T·(p_T − q_T): the exact forward-KL gradient, unbiased. (Its value is
not an unbiased estimate of the KL: Σ q̂ log q̂ is biased, but it does not depend on the student.)
"""

import torch
import torch.nn.functional as F

from chunked_loss import chunked_linear_kd_ce
from distill_loss import BUCKET_EPS, check_kd_args

# Divergences over a chunk: s [C, V] student logits (fp32 or wider), t a dict of the cache's [C, ...] rows.


def _top(t, k, T, dtype):
    return t["ids"][:, :k], t["logits"][:, :k].to(dtype) / T


def cached_forward(s, t, T):
    """The full forward KL from a cache that holds every id (k = V)."""
    ids, z = _top(t, t["ids"].shape[1], T, s.dtype)
    log_q = z - t["lse"].to(s.dtype)[:, None]
    log_p = F.log_softmax(s / T, -1).gather(1, ids)
    return T * T * (log_q.exp() * (log_q - log_p)).sum(-1)


def cached_topk_teacher(s, t, T, k):
    ids, z = _top(t, k, T, s.dtype)
    log_q = F.log_softmax(z, -1)
    log_p = F.log_softmax(s / T, -1).gather(1, ids)
    return T * T * (log_q.exp() * (log_q - log_p)).sum(-1)


def cached_topk_both(s, t, T, k):
    ids, z = _top(t, k, T, s.dtype)
    log_q = F.log_softmax(z, -1)
    log_p = F.log_softmax((s / T).gather(1, ids), -1)
    return T * T * (log_q.exp() * (log_q - log_p)).sum(-1)


def cached_topk_bucket(s, t, T, k):
    ids, z = _top(t, k, T, s.dtype)
    lse = t["lse"].to(s.dtype)[:, None]
    log_q = z - lse
    # the teacher's OTHER mass: what lies outside the cache's k, plus the cache's entries past the run's k'
    q_o = t["tail"].to(s.dtype) + ((t["logits"][:, k:].to(s.dtype) / T) - lse).exp().sum(-1)
    log_p_all = F.log_softmax(s / T, -1)
    kept = torch.zeros_like(s, dtype=torch.bool).scatter_(1, ids, True)
    p_o = log_p_all.exp().masked_fill(kept, 0.0).sum(-1)
    log_p = log_p_all.gather(1, ids)
    kl_kept = (log_q.exp() * (log_q - log_p)).sum(-1)
    kl_other = q_o * (q_o.clamp(min=BUCKET_EPS).log() - p_o.clamp(min=BUCKET_EPS).log())
    return T * T * (kl_kept + kl_other)


def sampled_kl(s, t, T):
    """T²·Σ q̂ (log q̂ − log p) with q̂ = counts / K; empty slots (count 0) add nothing."""
    c = t["counts"].to(s.dtype)
    q = c / c.sum(-1, keepdim=True)
    log_p = F.log_softmax(s / T, -1).gather(1, t["ids"])
    return T * T * torch.where(c > 0, q * (q.clamp(min=1e-30).log() - log_p), 0.0).sum(-1)


def pick_sparse_divergence(method, cache_k, n_vocab, temperature, top_k=None, top_k_variant="teacher"):
    """The per-chunk function for a cache of `method` and `cache_k` and a run's T, top_k (a count or None) and
    variant. ValueError for what the cache cannot give exactly (kd_cache.check_run says the same, earlier)."""
    T = float(temperature)
    if T <= 0:
        raise ValueError(f"a teacher cache needs temperature > 0, got {temperature}")
    if method == "sampled":
        if top_k is not None:
            raise ValueError("a sampled cache estimates the full forward KL; top_k must be 0")
        return lambda s, t: sampled_kl(s, t, T)
    if top_k is None or top_k >= n_vocab:
        if cache_k < n_vocab:
            raise ValueError(f"the full forward KL needs a cache of k = V = {n_vocab}, this one has k = {cache_k}")
        return lambda s, t: cached_forward(s, t, T)
    if top_k > cache_k:
        raise ValueError(f"top_k={top_k} exceeds the cache's k={cache_k}")
    fn = {"teacher": cached_topk_teacher, "both": cached_topk_both, "bucket": cached_topk_bucket}[top_k_variant]
    return lambda s, t: fn(s, t, T, top_k)


def sparse_linear_kd_ce(x_s, w_s, labels, targets, *, method, cache_k, alpha=0.0, temperature=1.0, top_k=None,
                        top_k_variant="teacher", ignore_index=-100, vocab_size=None, chunk_size=None,
                        label_smoothing=0.0):
    """(1 − α)·CE + α·KD with the KD term from cached targets (dict of [N, k] rows: kd_cache.TeacherCache.targets),
    never the teacher's [N, V] logits. x_s [N, H] (or [..., H]), w_s [V_pad, H]; returns (loss, ce, kd) as
    chunked_linear_kd_ce does."""
    check_kd_args(alpha, temperature)
    V = w_s.shape[0] if vocab_size is None else int(vocab_size)
    divergence = pick_sparse_divergence(method, cache_k, V, temperature, top_k, top_k_variant)
    return chunked_linear_kd_ce(x_s, w_s, labels, alpha=alpha, temperature=temperature, ignore_index=ignore_index,
                                vocab_size=V, chunk_size=chunk_size, label_smoothing=label_smoothing,
                                divergence=divergence, targets=targets)
