"""
What does distillation cost per training step? For a train.py config this times, side by side
in one process on random tokens (speed doesn't depend on what the weights are):

  student step   forward + CE (fused, no teacher) + backward + AdamW step
  teacher fwd    the frozen teacher's forward, logits included, no grad
  KD step        student step with the teacher and the KD+CE loss (fused, and reference)

and prints tokens/s, MFU on GPU, peak memory (GPU), and the KD overhead ratio

  KD step ÷ (student step + teacher fwd)         — ideal 1.0: distillation costs a teacher forward and nothing more.

    python bench/bench_step.py configs/tiny_student.py --device=cpu
    python bench/bench_step.py configs/student_1b_teacher_160m.py --batch_size=8 --out=bench/results/step_h200.json

Extra --key=value arguments override the config (same keys as train.py). The contenders run
interleaved (one of each per round, median over rounds) so machine noise hits them alike.
"""

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configurator import read_config_file  # noqa: E402
from model import GPT, config_from_preset  # noqa: E402
from plan import peak_flops  # noqa: E402
from data.tokenizer import N_VOCAB, padded_vocab_size  # noqa: E402
from train_step import micro_batch_loss  # noqa: E402


def load_config(path, overrides):
    cfg = dict(model="tiny-128", model_args={}, teacher_model="", tokenizer="bytes", batch_size=16, block_size=256,
               alpha=0.5, temperature=1.0, compile=False)
    if path:
        cfg.update({k: v for k, v in read_config_file(path).items() if k in cfg})
    for arg in overrides:
        key, _, value = arg[2:].partition("=")
        if key not in cfg:
            sys.exit(f"bench_step.py: unknown key {key!r}; known: {', '.join(cfg)}")
        cfg[key] = type(cfg[key])(value) if not isinstance(cfg[key], bool) else value == "True"
    if not cfg["teacher_model"]:
        sys.exit("bench_step.py: the config names no teacher_model; pass --teacher_model=<preset>")
    return cfg


def build(cfg, device, dtype):
    """Student, teacher and optimizer as train.py builds them (seeded, the teacher frozen, in bf16 when the run
    is), and the step functions to time, each going through train_step.micro_batch_loss as train.py does."""
    cuda = device.startswith("cuda")
    compute_dtype = None if dtype == "float32" else getattr(torch, dtype)
    n_vocab = N_VOCAB[cfg["tokenizer"]]
    V = padded_vocab_size(n_vocab)
    torch.manual_seed(0)
    student = GPT(config_from_preset(cfg["model"], V, cfg["block_size"], **cfg["model_args"])).to(device)
    teacher = GPT(config_from_preset(cfg["teacher_model"], V, cfg["block_size"])).to(device).eval().requires_grad_(False)
    if compute_dtype is not None:
        teacher.to(compute_dtype)   # as checkpoint.load_teacher does for a bf16 run
    optimizer = student.configure_optimizers(0.1, 1e-4, (0.9, 0.95), "cuda" if cuda else "cpu")
    s_fwd = torch.compile(student) if cfg["compile"] else student
    t_fwd = torch.compile(teacher) if cfg["compile"] else teacher
    B, T = cfg["batch_size"], cfg["block_size"]
    x = torch.randint(0, n_vocab, (B, T), device=device)
    y = torch.randint(0, n_vocab, (B, T), device=device)
    options = dict(temperature=cfg["temperature"], vocab_size=n_vocab)
    autocast = torch.autocast(x.device.type, dtype=compute_dtype) if compute_dtype is not None else nullcontext()

    def student_step():
        loss, _, _ = micro_batch_loss(s_fwd, student.lm_head, x, y, 0.0, compute_dtype=compute_dtype, **options)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def teacher_forward():
        with autocast:
            return teacher.lm_head(t_fwd(x))

    def kd_step(loss_impl):
        loss, _, _ = micro_batch_loss(s_fwd, student.lm_head, x, y, cfg["alpha"], teacher=t_fwd,
                                      teacher_head=teacher.lm_head, loss_impl=loss_impl, compute_dtype=compute_dtype,
                                      **options)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    contenders = {"student step": student_step, "teacher fwd": teacher_forward,
                  "KD step (fused)": lambda: kd_step("fused"), "KD step (reference)": lambda: kd_step("reference")}
    return student, teacher, contenders


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default="configs/tiny_student.py")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                    help="as train.py: auto = bfloat16 autocast on GPUs that have it, else float32")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args, overrides = ap.parse_known_args()
    cfg = load_config(args.config, overrides)
    device = args.device
    cuda = device.startswith("cuda")
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
    torch.backends.cuda.matmul.allow_tf32 = True   # as train.py
    torch.backends.cudnn.allow_tf32 = True
    n_vocab = N_VOCAB[cfg["tokenizer"]]
    student, teacher, contenders = build(cfg, device, dtype)
    B, T = cfg["batch_size"], cfg["block_size"]
    alpha = cfg["alpha"]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = {k: [] for k in contenders}
    peak_mem = {}
    for r in range(args.warmup + args.rounds):
        for name, fn in contenders.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)
                if cuda:
                    peak_mem[name] = max(peak_mem.get(name, 0), torch.cuda.max_memory_allocated() - base)

    tokens = B * T
    flops = {"student step": student.flops_per_token(T) * tokens,
             "teacher fwd": teacher.flops_per_token(T, backward=False) * tokens}
    flops["KD step (fused)"] = flops["KD step (reference)"] = flops["student step"] + flops["teacher fwd"]
    peak = peak_flops(device)
    med = {k: statistics.median(v) for k, v in times.items()}
    results = {}
    print(f"{cfg['model']} student, {cfg['teacher_model']} teacher, {B}×{T} tokens, vocab {n_vocab}, α={alpha}, {dtype}, "
          f"{device}{' (' + torch.cuda.get_device_name() + ')' if cuda else ''}, median of {args.rounds}")
    print(f"{'':22s}{'ms':>10s}{'tokens/s':>12s}{'MFU':>8s}{'peak mem':>11s}")
    for name in contenders:
        mfu = flops[name] / med[name] / peak if peak else None
        results[name] = {"ms": 1e3 * med[name], "tokens_per_s": tokens / med[name], "mfu": mfu,
                         "peak_mem_bytes": peak_mem.get(name)}
        print(f"{name:22s}{1e3 * med[name]:10.1f}{tokens / med[name]:12,.0f}"
              f"{(f'{100 * mfu:.1f}%' if mfu else '—'):>8s}"
              f"{(f'{peak_mem[name] / 2**30:.2f} GiB' if name in peak_mem else '—'):>11s}")
    base = med["student step"] + med["teacher fwd"]
    ratios = {k: med[k] / base for k in ("KD step (fused)", "KD step (reference)")}
    for k, v in ratios.items():
        print(f"KD overhead ratio, {k[9:-1]:9s} = {v:.3f}   (KD step ÷ (student step + teacher fwd); ideal 1.0)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"config": cfg, "dtype": dtype, "device": torch.cuda.get_device_name() if cuda else "cpu",
                       "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "torch": torch.__version__,
                       "results": results, "kd_overhead_ratio": ratios}, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
