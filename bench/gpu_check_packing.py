"""
Document-aware attention on a GPU (bench/gpu_check.sh runs it): the compiled FlexAttention block-mask path that
packed rows take (model.document_mask / masked_attention), checked and timed.

1. correctness, fp32: a small GPT's packed rows through compiled flex attention equal the same rows through
   dense-mask SDPA, forward and the gradient of every parameter; and, compiled as train.py compiles it
   (torch.compile(model)), the same forward again.
2. speed and memory at the paper's shape, bf16: one attention layer of llama3.1-1b (32 query / 8 kv heads,
   head_dim 128) over a row of 8,192 tokens packed with ~1,000-token documents, forward + backward:
   flex with the block mask against plain causal SDPA (flash) on the same row, and the block mask's bytes
   (the dense [T, T] mask it replaces would be T² bytes a row).

    python bench/gpu_check_packing.py [--out FILE.json]     # DRY=1: on the CPU, eager flex, small shapes,
                                                            # forward only (flex has no CPU backward)
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPTConfig, document_mask, masked_attention  # noqa: E402

DRY = os.environ.get("DRY") == "1"
DEVICE = "cpu" if DRY else "cuda"


def packed_segments(B, T, mean_len, seed):
    """Segment ids and positions of rows packed with documents of exponential lengths (mean mean_len), the
    last one cut at the row's end."""
    g = torch.Generator().manual_seed(seed)
    seg, pos = torch.zeros(B, T, dtype=torch.long), torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        col, d = 0, 1
        while col < T:
            n = min(T - col, max(1, int(torch.empty(1).exponential_(1 / mean_len, generator=g).item())))
            seg[b, col:col + n], pos[b, col:col + n] = d, torch.arange(n)
            col, d = col + n, d + 1
    return seg.to(DEVICE), pos.to(DEVICE)


def correctness():
    torch.manual_seed(0)
    T = 256 if DRY else 1024
    cfg = GPTConfig(vocab_size=512, block_size=T, n_layer=2, n_embd=128, n_head=8, n_kv_head=2, head_dim=32)
    model = GPT(cfg).to(DEVICE)
    idx = torch.randint(0, 512, (2, T), device=DEVICE)
    seg, pos = packed_segments(2, T, T // 6, 1)
    out = {}
    grads = {}
    for name, block_mask in (("dense", False), ("flex", True)):
        model.zero_grad()
        with torch.set_grad_enabled(not DRY):
            logits = model.logits(idx, seg, pos, block_mask=block_mask)
        out[name] = logits.detach()
        if not DRY:
            logits.float().square().mean().backward()
            grads[name] = [p.grad.clone() for p in model.parameters()]
    # fp32: a logit is a chain of reductions of length ≤ max(T, d) per layer; u·(2·2·T)·|logit| ≈ 6e-8·4096·~1
    # bounds the difference of two summation orders: 1e-3 absolute leaves a margin and is far below a wrong mask
    logit_err = (out["flex"] - out["dense"]).abs().max().item()
    grad_err = max((((a - b).norm() / b.norm().clamp(min=1e-30)).item() for a, b in zip(grads.get("flex", []), grads.get("dense", []))),
                   default=0.0)
    compiled = torch.compile(model)
    with torch.no_grad():
        whole = compiled(idx, seg, pos, block_mask=True)
        ref = model(idx, seg, pos, block_mask=False)
    compiled_err = (whole - ref).abs().max().item()
    return {"T": T, "max_logit_err": logit_err, "max_grad_rel_err": grad_err, "compiled_model_max_err": compiled_err,
            "ok": logit_err < 1e-3 and grad_err < 1e-3 and compiled_err < 1e-3}


def timed(fn, repeats):
    fn()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def speed():
    T, H, Hkv, D, mean_len = (512, 4, 2, 32, 100) if DRY else (8192, 32, 8, 128, 1000)
    dtype = torch.float32 if DRY else torch.bfloat16
    seg, _ = packed_segments(1, T, mean_len, 2)
    q = torch.randn(1, H, T, D, device=DEVICE, dtype=dtype, requires_grad=not DRY)
    k, v = (torch.randn(1, Hkv, T, D, device=DEVICE, dtype=dtype, requires_grad=not DRY) for _ in range(2))
    mask = document_mask(seg, block_mask=True)
    finish = (lambda y: y.sum()) if DRY else (lambda y: y.sum().backward())

    def flex():
        finish(masked_attention(q, k, v, mask, enable_gqa=True))

    def causal():
        finish(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))

    repeats = 3 if DRY else 20
    t_flex, t_causal = timed(flex, repeats), timed(causal, repeats)
    mask_bytes = sum(t.numel() * t.element_size() for t in mask.as_tuple() if isinstance(t, torch.Tensor))
    return {"T": T, "heads": [H, Hkv, D], "documents": int(seg.max()), "block_sparsity_pct": float(mask.sparsity()),
            "pass": "forward" if DRY else "forward+backward", "flex_ms": 1e3 * t_flex, "causal_sdpa_ms": 1e3 * t_causal,
            "block_mask_bytes": mask_bytes, "dense_mask_bytes": T * T}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not DRY and not torch.cuda.is_available():
        sys.exit("gpu_check_packing: no CUDA device (DRY=1 runs it on the CPU)")
    result = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (DRY)", "torch": torch.__version__,
              "correctness": correctness(), "speed": speed()}
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    sys.exit(0 if result["correctness"]["ok"] else 1)
