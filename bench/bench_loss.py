"""
Benchmark of the distillation loss, forward + backward, contenders side by side in one process
on the same inputs:

  reference  full logits (x @ W.T) + distill_loss + autograd backward: the naive way
  torch      fused_linear_kd_ce(impl="torch"), the chunked PyTorch implementation
  triton     fused_linear_kd_ce(impl="triton"), CUDA only
  liger      Liger-Kernel's LigerFusedLinearJSDLoss(beta=0) (forward KL), if liger_kernel is installed;
             uncompiled on CPU (torch.compile is its GPU default). Its soft loss has no T² factor, so it
             is the same loss as ours only at T = 1.
  floor      only the four unavoidable matmuls (teacher logits, student logits, dX, dW), chunked as the
             fused loss chunks them: what a perfect fused loss would cost
  chunked    chunked_loss.chunked_linear_kd_ce (per-chunk autograd), forward KL; only when asked for

--loss picks the losses (comma-separated). "forward" (the default) runs the contenders above; every other
ablation runs two contenders, reference:<loss> (full logits + distill_loss + autograd) and chunked:<loss>
(chunked_linear_kd_ce), and the summary gives chunked/reference time (median of per-round ratios) and memory:
  reverse       reverse KL                         hard          T = 0: CE against the teacher's argmax
  topk_teacher  top-k, teacher renormalised        topk_both     top-k, teacher and student renormalised
  topk_bucket   top-k plus an OTHER bucket          jsd           JSD(β), --jsd_beta
  smooth        label smoothing ε (--label_smoothing), no teacher: the paper's no-teacher control
(top-k: --top_k, a count or a fraction of V; α and T from --alpha and --T.)

Time: the median over --repeats rounds; each round runs every contender once, interleaved, so a
machine whose load drifts (a shared CPU box) slows all contenders alike; the order is rotated by one each
round, so which contender runs first, and which right after the reference (which frees several GB),
changes from round to round. Each round's
floor time / fused time is that round's fraction of the matmul floor: the summary gives its median over
rounds, the spread (min-max and interquartile range) and the fused loss's peak memory as a fraction of
the reference's, against the targets (CPU: >= 75% of the floor, memory <= 1/20 of the reference;
CUDA: >= 80% of the floor; --target_floor_pct, --target_memory_fraction). Peak extra memory: on CUDA,
torch.cuda.max_memory_allocated minus what was allocated before the call; on CPU each contender
runs again in a fresh subprocess (so no earlier contender's allocations linger), once to warm up,
then with the kernel's high-water mark of resident memory reset (/proc/self/clear_refs) and glibc
told to return every allocation over 64 KiB to the OS on free (MALLOC_MMAP_THRESHOLD_), so the
high-water mark minus the resident size before the call is what the call itself held at its peak,
gradients included (every contender produces the same ones).

    python bench/bench_loss.py --repeats=7                       # CPU anchor of DESIGN.md
    python bench/bench_loss.py --device=cuda --dtype=bfloat16 --N=16384 --V=128256 --H_s=2048 --H_t=4096
    python bench/bench_loss.py --loss=reverse,hard,topk_teacher,topk_both,topk_bucket,smooth,jsd --repeats=3
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import chunked_loss  # noqa: E402
import fused_kd  # noqa: E402
from distill_loss import distill_loss  # noqa: E402
from plan import peak_for_name  # noqa: E402   (the one table of bf16 peaks)

# torch.OutOfMemoryError is the top-level name only in newer torch; torch.cuda's alias is older
OOM_ERRORS = tuple({getattr(torch, "OutOfMemoryError", RuntimeError), getattr(torch.cuda, "OutOfMemoryError", RuntimeError)})

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--N", type=int, default=4096, help="tokens")
parser.add_argument("--V", type=int, default=50304, help="vocabulary (all columns real)")
parser.add_argument("--H_s", type=int, default=256)
parser.add_argument("--H_t", type=int, default=128)
parser.add_argument("--alpha", type=float, default=0.5)
parser.add_argument("--T", type=float, default=1.0)
parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
parser.add_argument("--chunk_size", type=int, default=None, help="fused loss and floor; default: fused_kd's choice")
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--contenders", default="reference,torch,triton,liger,floor")
parser.add_argument("--block_v", type=int, default=None, help="override fused_kd.TRITON_BLOCK_V")
parser.add_argument("--num_warps", type=int, default=None, help="override fused_kd.TRITON_NUM_WARPS")
parser.add_argument("--peak_tflops", type=float, default=None, help="device bf16 dense peak; default from a table")
parser.add_argument("--no_memory", action="store_true", help="skip the memory measurement")
parser.add_argument("--loss", default="forward", help="comma-separated: forward (fused contenders) and/or "
                    "ablations, each chunked vs reference: reverse,hard,topk_teacher,topk_both,topk_bucket,smooth,jsd")
parser.add_argument("--top_k", type=float, default=0.05, help="top-k ablations: a count, or a fraction of V (round(p·V))")
parser.add_argument("--label_smoothing", type=float, default=0.1, help="the smooth ablation's ε")
parser.add_argument("--jsd_beta", type=float, default=0.5)
parser.add_argument("--target_floor_pct", type=float, default=None,
                    help="goal for the fused loss, %% of the matmul floor's speed (floor time / fused time); "
                    "default 75 on CPU, 80 on CUDA")
parser.add_argument("--target_memory_fraction", type=float, default=1 / 20,
                    help="goal for the fused loss's peak extra memory as a fraction of the reference's")
parser.add_argument("--note", default=None, help="free text stored in the JSON (e.g. that the machine was shared)")
parser.add_argument("--out", default=None, help="JSON path; default bench/results/loss_<device>_<date>.json")
parser.add_argument("--_memory_child", default=None, help=argparse.SUPPRESS)
args = parser.parse_args()

dev = torch.device(args.device)
dtype = getattr(torch, args.dtype)
if args.block_v:
    fused_kd.TRITON_BLOCK_V = args.block_v
if args.num_warps:
    fused_kd.TRITON_NUM_WARPS = args.num_warps
chunk = args.chunk_size or fused_kd._default_chunk_size(args.N, args.V, dev)

try:
    import liger_kernel
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss
except ImportError:
    liger_kernel = None

# ---------------------------------------------------------------------------------------------------------------
# inputs: hidden states of unit scale and weights giving logits of a few units, like trained models'

# On CUDA they are drawn on the device: a CPU draw of the [128256, 4096] teacher weight alone takes seconds
# (the CPU draw is kept on CPU, so CPU figures stay comparable with earlier runs)
g = torch.Generator(device=dev if dev.type == "cuda" else "cpu").manual_seed(0)
gdev = dev if dev.type == "cuda" else torch.device("cpu")
x_s = torch.randn(args.N, args.H_s, generator=g, device=gdev).to(dev, dtype).requires_grad_()
w_s = (torch.randn(args.V, args.H_s, generator=g, device=gdev) * args.H_s ** -0.5 * 2).to(dev, dtype).requires_grad_()
x_t = torch.randn(args.N, args.H_t, generator=g, device=gdev).to(dev, dtype)
w_t = (torch.randn(args.V, args.H_t, generator=g, device=gdev) * args.H_t ** -0.5 * 2).to(dev, dtype)
y = torch.randint(0, args.V, (args.N,), generator=g, device=gdev).to(dev)
y[:: 50] = -100   # a few ignored tokens, as padding would give


def run_reference():
    s = x_s @ w_s.T
    with torch.no_grad():
        t = x_t @ w_t.T
    loss = distill_loss(s, y, t, alpha=args.alpha, temperature=args.T)[0]
    loss.backward()
    return loss


def run_fused(impl):
    loss = fused_kd.fused_linear_kd_ce(x_s, w_s, y, x_t, w_t, alpha=args.alpha, temperature=args.T,
                                       chunk_size=chunk, impl=impl)[0]
    loss.backward()
    return loss


_liger = None


def run_liger():
    global _liger
    if _liger is None:
        _liger = LigerFusedLinearJSDLoss(weight_hard_loss=1 - args.alpha, weight_soft_loss=args.alpha, beta=0.0,
                                         temperature=args.T, compiled=dev.type == "cuda")
    loss = _liger(x_s, w_s, x_t, w_t, y)
    loss.backward()
    return loss


def run_floor():
    # the four matmuls of the fused loss, same chunks, same dtypes and fp32 accumulation, no softmax at all
    with torch.no_grad():
        V, H = args.V, args.H_s
        S = torch.empty(chunk, V, device=dev, dtype=torch.float32)
        Tb = torch.empty(chunk, V, device=dev, dtype=torch.float32)
        G = S if dtype == torch.float32 else torch.zeros(chunk, V, device=dev, dtype=dtype)
        gx = torch.empty(args.N, H, device=dev, dtype=dtype)
        gw = torch.zeros(V, H, device=dev, dtype=torch.float32)
        for i0 in range(0, args.N, chunk):
            i1 = min(i0 + chunk, args.N)
            c = i1 - i0
            fused_kd._to_fp32_logits(x_t[i0:i1], w_t, Tb[:c])
            fused_kd._to_fp32_logits(x_s[i0:i1], w_s, S[:c])
            torch.mm(G[:c], w_s, out=gx[i0:i1])
            if dtype == torch.float32:
                gw.addmm_(G[:c].t(), x_s[i0:i1])
            else:
                fused_kd._accumulate_fp32(gw, G[:c].t(), x_s[i0:i1])
        x_s.grad, w_s.grad = gx, gw.to(dtype)
    return None


# The ablations: distill_loss keyword arguments each (a dict literal; "teacher": False = CE only)
base = dict(alpha=args.alpha, temperature=args.T)
ABLATIONS = {
    "reverse": dict(base, kl="reverse"),
    "hard": dict(base, temperature=0.0),
    "topk_teacher": dict(base, top_k=args.top_k, top_k_variant="teacher"),
    "topk_both": dict(base, top_k=args.top_k, top_k_variant="both"),
    "topk_bucket": dict(base, top_k=args.top_k, top_k_variant="bucket"),
    "smooth": dict(label_smoothing=args.label_smoothing, teacher=False),
    "jsd": dict(base, kl="jsd", jsd_beta=args.jsd_beta),
}
losses_wanted = [name for name in args.loss.split(",") if name]
for name in losses_wanted:
    if name != "forward" and name not in ABLATIONS:
        parser.error(f"--loss: unknown {name!r}; choose from forward,{','.join(ABLATIONS)}")
chunked_chunk = args.chunk_size or chunked_loss.default_chunk_size(args.N, args.V, dev)


def run_ablation(kind, opts):
    opts = dict(opts)
    teacher = opts.pop("teacher", True)
    if kind == "reference":
        s = x_s @ w_s.T
        with torch.no_grad():
            t = x_t @ w_t.T if teacher else None
        loss = distill_loss(s, y, t, **opts)[0]
    else:
        loss = chunked_loss.chunked_linear_kd_ce(x_s, w_s, y, *((x_t, w_t) if teacher else (None, None)),
                                                 chunk_size=chunked_chunk, **opts)[0]
    loss.backward()
    return loss


contenders = {}
if "forward" in losses_wanted:
    contenders = {"reference": run_reference, "torch": lambda: run_fused("torch"), "floor": run_floor,
                  "chunked": lambda: run_ablation("chunked", base)}
    if dev.type == "cuda" and fused_kd.HAS_TRITON:
        contenders["triton"] = lambda: run_fused("triton")
    if liger_kernel is not None:
        contenders["liger"] = run_liger
    wanted = [c for c in args.contenders.split(",") if c]
    unknown = [c for c in wanted if c not in ("reference", "torch", "triton", "liger", "floor", "chunked")]
    if unknown:
        parser.error(f"--contenders: unknown {','.join(unknown)}; choose from reference,torch,triton,liger,floor,chunked")
    why_not = {"triton": "CUDA only" if dev.type != "cuda" else "triton not importable",
               "liger": "liger_kernel not installed"}
    skipped = {c: why_not[c] for c in wanted if c not in contenders}
    contenders = {c: contenders[c] for c in wanted if c in contenders}
else:
    skipped = {}
FUSED = [c for c in ("triton", "torch") if c in contenders]   # the fused loss, held to the targets below
for name in losses_wanted:
    if name != "forward":
        for kind in ("reference", "chunked"):
            contenders[f"{kind}:{name}"] = (lambda kind=kind, opts=ABLATIONS[name]: run_ablation(kind, opts))


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def one_run(fn):
    x_s.grad = w_s.grad = None
    sync()
    t0 = time.perf_counter()
    loss = fn()
    sync()
    return time.perf_counter() - t0, (None if loss is None else loss.item())


def rss_kib(field):
    return int(re.search(rf"{field}:\s+(\d+) kB", open("/proc/self/status").read()).group(1))


def measure_memory(name):
    """Peak bytes held by one call beyond what was held before it (see the module docstring)."""
    if dev.type == "cuda":
        one_run(contenders[name])
        x_s.grad = w_s.grad = None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        one_run(contenders[name])
        return torch.cuda.max_memory_allocated() - before
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    r = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], f"--_memory_child={name}"],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"memory child for {name} failed:\n{r.stderr[-2000:]}")
    return int(r.stdout.strip().splitlines()[-1])


if args._memory_child:   # a fresh process measuring one contender's CPU peak memory, then exiting
    fn = contenders[args._memory_child]
    one_run(fn)   # warm-up: lazy initialisation (MKL buffers, liger's first-call work) is not the loss's
    x_s.grad = w_s.grad = None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")   # reset VmHWM, the high-water mark of resident memory, to the current VmRSS
    before = rss_kib("VmRSS")
    one_run(fn)
    print((rss_kib("VmHWM") - before) * 1024)
    sys.exit(0)

# ---------------------------------------------------------------------------------------------------------------
# time, interleaved rounds


def device_name():
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


print(f"device: {device_name()} | N={args.N} V={args.V} H_s={args.H_s} H_t={args.H_t} alpha={args.alpha} "
      f"T={args.T} {args.dtype} chunk={chunk}")
for name, why in skipped.items():
    print(f"skipping {name}: {why}")
load_before = os.getloadavg()
times = {name: [] for name in contenders}
losses = {}
failed = {}   # contenders that raised something other than running out of memory: the run exits non-zero
for name, fn in list(contenders.items()):   # warm-up (triton compiles, cuBLAS picks kernels, pages get touched)
    try:
        losses[name] = one_run(fn)[1]
    except Exception as e:   # noqa: BLE001 - one broken contender (Liger's compile, an OOM) must not lose the others
        x_s.grad = w_s.grad = None
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        why = "out of memory" if isinstance(e, OOM_ERRORS) and "out of memory" in str(e).lower() else \
            f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        skipped[name] = why
        if why != "out of memory":   # the naive loss at large N·V on a smaller GPU is expected, not a failure
            failed[name] = why
            import traceback
            traceback.print_exc()
        print(f"skipping {name}: {why}")
        del contenders[name], times[name]
order = list(contenders)
for i in range(args.repeats):
    # rotated by one each round: no contender is always first, or always the one after the reference
    for name in order[i % len(order):] + order[:i % len(order)]:
        times[name].append(one_run(contenders[name])[0])
    line = "  ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items())
    shown = [n for n in times if n in FUSED or n == "liger"]
    if "floor" in times and shown:
        line += " | " + "  ".join(f"floor/{n} {times['floor'][-1] / times[n][-1]:.0%}" for n in shown)
    print(f"round {i + 1}/{args.repeats}: {line}", flush=True)
load_after = os.getloadavg()
memory = {}
if not args.no_memory:
    for name in contenders:
        try:
            memory[name] = measure_memory(name)
        except (RuntimeError, *OOM_ERRORS) as e:
            print(f"memory of {name} not measured: {str(e).strip().splitlines()[-1][:300]}")
            memory[name] = None
            if dev.type == "cuda":
                x_s.grad = w_s.grad = None
                torch.cuda.empty_cache()

flops = 2 * args.N * args.V * (args.H_t + 3 * args.H_s)
peak = args.peak_tflops
if peak is None and dev.type == "cuda":
    peak = peak_for_name(device_name()) / 1e12 or None
floor_t = statistics.median(times["floor"]) if "floor" in times else None


def spread(values):
    """min, max and the quartiles (inclusive method: with 5 values q1/q3 are the 2nd/4th)"""
    v = sorted(values)
    q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else (v[0], v[0], v[0])
    return {"min": v[0], "q1": q1, "q3": q3, "max": v[-1]}


results = {}
ref_mem = memory.get("reference")
for name in contenders:
    t = statistics.median(times[name])
    # paired, per round: this round's floor time / this round's time, i.e. the fraction of the matmul floor's
    # speed this contender reached; its median over rounds is robust to a load that drifts between rounds
    of_floor = [b / a for a, b in zip(times[name], times["floor"])] if floor_t else None
    results[name] = {
        "time_median_s": t, "time_min_s": min(times[name]), "times_s": times[name],
        # the older form of the same pairing, time / floor time (so 1/floor_fraction_median, up to the median)
        "ratio_to_floor": statistics.median(a / b for a, b in zip(times[name], times["floor"])) if floor_t else None,
        "ratio_of_medians_to_floor": t / floor_t if floor_t else None,
        "floor_fraction_per_round": of_floor,
        "floor_fraction_median": statistics.median(of_floor) if of_floor else None,
        "floor_fraction_spread": spread(of_floor) if of_floor else None,
        "peak_extra_bytes": memory.get(name),
        "memory_fraction_of_reference": memory[name] / ref_mem if memory.get(name) and ref_mem else None,
        "tflops": flops / t / 1e12,
        "pct_of_bf16_peak": 100 * flops / t / 1e12 / peak if peak and dev.type == "cuda" else None,
        "loss": losses[name],
    }

w = max(10, *(len(n) for n in results)) if results else 10
print(f"{'contender':<{w}} {'median s':>9} {'min s':>8} {'x floor':>8} {'% floor':>8} {'peak extra':>11} "
      f"{'vs ref mem':>10} {'TFLOP/s':>8} {'% peak':>7} {'loss':>10}")
for name, r in results.items():
    mem, pct, loss = r["peak_extra_bytes"], r["pct_of_bf16_peak"], r["loss"]
    mem_s = f"{mem / 2**30:.3f} GiB" if mem is not None else "-"
    vs_ref = f"1/{ref_mem / mem:.1f}" if mem and ref_mem else "-"
    pct_s = f"{pct:.1f}" if pct else "-"
    loss_s = f"{loss:.5f}" if loss is not None else "-"
    ff = r["floor_fraction_median"]
    print(f"{name:<{w}} {r['time_median_s']:9.3f} {r['time_min_s']:8.3f} {r['ratio_to_floor'] or float('nan'):8.2f} "
          f"{(f'{ff:.1%}' if ff else '-'):>8} {mem_s:>11} {vs_ref:>10} {r['tflops']:8.2f} {pct_s:>7} {loss_s:>10}")
print(f"x floor: median over rounds of (time / the same round's floor time); % floor: median over rounds of "
      f"(floor time / time). Load average before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
      f"(other processes shared the machine if well above 0)")

# The fused loss against its targets (issue 10): a fraction of the matmul floor's speed (median of the per-round
# ratios, >= 5 rounds) and a fraction of the reference's peak memory
target_pct = args.target_floor_pct if args.target_floor_pct is not None else (80.0 if dev.type == "cuda" else 75.0)
targets = {}
for name in FUSED:
    r = results.get(name)
    if r is None or r["floor_fraction_median"] is None:
        continue
    ff, sp, mf = r["floor_fraction_median"], r["floor_fraction_spread"], r["memory_fraction_of_reference"]
    targets[name] = {
        "floor_pct_median": 100 * ff, "floor_pct_min": 100 * sp["min"], "floor_pct_max": 100 * sp["max"],
        "floor_pct_q1": 100 * sp["q1"], "floor_pct_q3": 100 * sp["q3"], "rounds": len(r["times_s"]),
        "target_floor_pct": target_pct, "meets_floor_target": 100 * ff >= target_pct and len(r["times_s"]) >= 5,
        "memory_fraction_of_reference": mf, "target_memory_fraction": args.target_memory_fraction,
        "meets_memory_target": None if mf is None else mf <= args.target_memory_fraction,
    }
    t_ = targets[name]
    few = " (fewer than 5 rounds: not a valid test of the target)" if t_["rounds"] < 5 else ""
    mem_s = (f"peak extra memory 1/{1 / mf:.1f} of the reference's, target <= 1/{1 / args.target_memory_fraction:.0f}: "
             f"{'met' if t_['meets_memory_target'] else 'MISSED'}") if mf else "memory vs reference: not measured"
    print(f"target {name}: {t_['floor_pct_median']:.1f}% of the matmul floor (median of {t_['rounds']} per-round "
          f"floor/{name} ratios; min-max {t_['floor_pct_min']:.1f}-{t_['floor_pct_max']:.1f}%, IQR "
          f"{t_['floor_pct_q1']:.1f}-{t_['floor_pct_q3']:.1f}%), target >= {target_pct:.0f}%: "
          f"{'met' if t_['meets_floor_target'] else 'MISSED'}{few}; {mem_s}")

# Each ablation: chunked against its own full-logit reference. Targets (issue 10): memory <= 1/8, time <= 1.
ablations = {}
for name in losses_wanted:
    c, r = f"chunked:{name}", f"reference:{name}"
    if name == "forward" or c not in times or r not in times:
        continue
    mem_c, mem_r = memory.get(c), memory.get(r)
    ablations[name] = {
        "options": ABLATIONS[name], "chunk_size": chunked_chunk,
        "time_ratio": statistics.median(a / b for a, b in zip(times[c], times[r])),   # paired, per round
        "time_ratio_min": min(times[c]) / min(times[r]),
        "memory_fraction": mem_c / mem_r if mem_c and mem_r else None,
        "loss_rel_diff": abs(losses[c] - losses[r]) / max(abs(losses[r]), 1e-30),
    }
    a = ablations[name]
    a["meets_targets"] = a["time_ratio"] <= 1.0 and (a["memory_fraction"] is None or a["memory_fraction"] <= 1 / 8)
if ablations:
    print(f"{'ablation':<13} {'time chunked/ref':>16} {'(min/min)':>9} {'memory chunked/ref':>18} {'loss rel diff':>13} targets")
    for name, a in ablations.items():
        frac = a["memory_fraction"]
        mem_s = f"1/{1 / frac:.1f}" if frac else "-"
        print(f"{name:<13} {a['time_ratio']:16.3f} {a['time_ratio_min']:9.3f} {mem_s:>18} {a['loss_rel_diff']:13.1e} "
              f"{'met' if a['meets_targets'] else 'MISSED'}")
    print("targets: time <= the reference (median over rounds of the paired ratio), peak memory <= 1/8 of it")

def git_commit():
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "fused_kd.py", "chunked_loss.py", "distill_loss.py",
                                "bench/bench_loss.py"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return commit + (" (a loss file or bench_loss.py modified)" if dirty else "")
    except OSError:
        return None


record = {
    "device": device_name(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "git_commit": git_commit(),
    "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    "torch": torch.__version__, "triton": getattr(sys.modules.get("triton"), "__version__", None),
    "liger_kernel": getattr(liger_kernel, "__version__", None) if liger_kernel else None,
    "config": {**{k: v for k, v in vars(args).items() if not k.startswith("_")}, "chunk_size": chunk,
               "triton_block_v": fused_kd.TRITON_BLOCK_V, "triton_num_warps": fused_kd.TRITON_NUM_WARPS,
               "threads": torch.get_num_threads()},
    "flops_unavoidable": flops, "peak_bf16_tflops": peak, "skipped": skipped,
    "load_average_before_after": [load_before, load_after],
    "memory_method": "cuda max_memory_allocated delta" if dev.type == "cuda" else
                     "fresh subprocess per contender: VmHWM after clear_refs minus VmRSS before, MALLOC_MMAP_THRESHOLD_=65536",
    "results": results,
    "targets": targets,
    "ablations": ablations,
    "failed": failed,
    "note": args.note,
    # CUDA: whether this torch's addmm takes bf16 inputs with an fp32 accumulator in place (torch >= 2.10, it
    # seems); if not, fused_kd (and the floor, which calls the same helper) adds an fp32-out GEMM instead
    "addmm_fp32_accumulate": {str(k): v for k, v in fused_kd._addmm_fp32_ok.items()},
}
out = args.out
if out is None:
    tag = re.sub(r"[^a-z0-9]+", "-", device_name().split(",")[0].lower()).strip("-")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       f"loss_{tag}_{datetime.date.today().isoformat()}.json")
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
with open(out, "w") as f:
    json.dump(record, f, indent=1)
print(f"wrote {out}")
if failed:
    print(f"FAILED contenders: {', '.join(failed)}")
    sys.exit(3)
