"""
Train a GPT, optionally distilling from a frozen teacher:

    loss = (1 − α)·CE(student, data) + α·T²·KL(teacher_T ‖ student_T)

One process:      python train.py configs/tiny_student.py --max_iters=50 --device=cpu
One node, 8 GPUs: torchrun --standalone --nproc_per_node=8 train.py configs/student_1b_teacher_160m.py
Multi-node:       torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT train.py ...
Check a config:   python train.py configs/student_1b_teacher_160m.py --dry_run=True

Defaults below; a config file overrides them, then --key=value (configurator.py).
"""

import glob
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import torch
import torch.distributed as dist

from checkpoint import CheckpointError, load_for_resume, load_teacher, rng_state, save_checkpoint, set_rng_state
from configurator import ConfigError, apply_overrides
from distill_loss import check_kd_args, check_loss_options
from data.loader import open_training_data
from data.tokenfile import TokenFileError
from data.tokenizer import padded_vocab_size
from eval import evaluate_splits
from model import GPT, config_from_preset
from parallel import (apply_fsdp, build_sharded, exit_cleanly, find_sharded, full, full_model_state_dict, init_processes,
                      load_sharded, save_sharded, set_grad_sync, wrap_ddp)
import plan
from runlog import RunLog
from train_step import loss_path, micro_batch_loss

# -----------------------------------------------------------------------------
# defaults
# I/O
out_dir = "out/run"
eval_interval = 100         # steps between validation (and checkpoints)
eval_iters = 20             # batches per validation split
log_interval = 10
resume = False              # continue out_dir/ckpt.pt exactly (model, optimizer, data position, RNG)
dry_run = False             # build the models on the meta device, print the plan, exit
wandb_log = False
wandb_project = "nanokd"
wandb_run_name = ""
# data
data_dir = "data/embedded_bytes"   # train*.bin, val.bin, ood_*.bin (data/prepare_*.py)
tokenizer = "bytes"                # must match the data files and the teacher; "hf": the teacher's tokenizer.json
tokenizer_path = ""                # hf: its folder or tokenizer.json ("" = teacher_ckpt); llama3: tokenizer.model
batch_size = 16                    # sequences per micro-step per process
block_size = 256
batch_tokens = 16 * 256            # tokens per optimizer step over all processes; sets grad accumulation
train_tokens = 2_000_000           # token budget; steps = train_tokens // batch_tokens
max_iters = 0                      # > 0 overrides the token budget (quick runs)
# model
model = "tiny-128"                 # a preset in model.py
model_args = {}                    # overrides of the preset's shape, e.g. {"n_layer": 6}
# distillation
teacher_ckpt = ""                  # path to a nanokd checkpoint; "" = no teacher
teacher_model = ""                 # the teacher's preset, checked against its checkpoint (and used by dry runs)
alpha = 0.0                        # weight of KD: 0 = plain LM training, 1 = pure distillation
alpha_end = -1.0                   # >= 0: α moves linearly from alpha to alpha_end over training
temperature = 1.0                  # 0 = the teacher's argmax as hard labels
kd_loss = "forward"                # "forward" KL(teacher‖student) as the paper, "reverse", or "jsd"
jsd_beta = 0.5                     # kd_loss="jsd": the mixture m = β·teacher + (1−β)·student
top_k = 0.0                        # > 0: keep only the teacher's top-k (a count, or a fraction p of the vocab: round(p·V))
top_k_variant = "teacher"          # how top-k renormalises, as the authors' three variants: "teacher", "both", "bucket"
label_smoothing = 0.0              # the no-teacher control for "is a weak teacher only a smoother target?"
loss_impl = "fused"                # "fused": never the batch's logits (chunked_loss.py); "reference": distill_loss.py
# optimizer (the paper's AdamW and schedule)
learning_rate = 3e-4
min_lr_ratio = 0.1                 # cosine decays to this fraction of the peak
warmup_frac = 0.05
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
optim = "adamw"                    # or "sgd" (no momentum): the tests' choice, as Adam's 1/√v amplifies rounding
# system
device = "auto"                    # "auto", "cpu", "cuda"
dtype = "auto"                     # "auto" = bfloat16 autocast on GPUs that have it, else float32
compile = False                    # torch.compile student and teacher (the fused loss stays eager)
parallel = "ddp"                   # "ddp", or "fsdp" to shard the student (parallel.py; README says when)
fsdp_teacher = False               # with parallel="fsdp", shard the teacher too
activation_checkpointing = False   # recompute each block in backward: less memory, ~30% more compute
seed = 43                          # the paper: teacher 42, student 43
# -----------------------------------------------------------------------------
try:
    apply_overrides(globals(), sys.argv[1:])
    check_kd_args(alpha, temperature)
    check_loss_options(kd_loss, temperature, top_k, top_k_variant, jsd_beta)
    if alpha_end >= 0:
        check_kd_args(alpha_end, temperature)
    for key, choices in (("loss_impl", ("fused", "reference")), ("optim", ("adamw", "sgd")), ("parallel", ("ddp", "fsdp"))):
        if globals()[key] not in choices:
            raise ConfigError(f"{key} must be one of {choices}, got {globals()[key]!r}")
except (ConfigError, ValueError, OSError) as e:
    sys.exit(f"train.py: config error: {e}")
config = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str, dict))}
if dry_run:   # the plan only: no processes, no data, models on the meta device; a teacher may be just a preset
    plan.dry_run(config)
    sys.exit(0)
if alpha > 0 and not teacher_ckpt:
    sys.exit(f"train.py: config error: alpha={alpha} weights a KD term but no teacher_ckpt is set")

# ---- processes and devices ---------------------------------------------------
if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
ddp, rank, world_size, device = init_processes(device)
master = rank == 0
fsdp = parallel == "fsdp"
if fsdp and not ddp:
    sys.exit("train.py: config error: parallel='fsdp' shards over processes; launch with torchrun")
device_type = "cuda" if device.startswith("cuda") else "cpu"
if dtype == "auto":
    dtype = "bfloat16" if device_type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
autocast = nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=getattr(torch, dtype))
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True


def log(msg):
    if master:
        print(msg, flush=True)


def fail(msg):
    """A clear error on every rank, then exit without a traceback wall."""
    print(f"train.py: error: {msg}", file=sys.stderr, flush=True)
    if ddp:
        dist.destroy_process_group()
    sys.exit(1)


per_step = batch_size * block_size * world_size
if batch_tokens % per_step:
    fail(f"batch_tokens={batch_tokens} is not a multiple of batch_size·block_size·processes = {per_step}")
grad_accum_steps = batch_tokens // per_step
total_iters = max_iters if max_iters > 0 else train_tokens // batch_tokens
warmup_iters = int(warmup_frac * total_iters)

# ---- data, models ------------------------------------------------------------
try:
    train_loader, n_vocab, (tokenizer, tokenizer_state) = open_training_data(
        data_dir, batch_size, block_size, rank, world_size, seed, tokenizer, tokenizer_path or teacher_ckpt)
except (ValueError, OSError) as e:   # no files, another tokenizer's, a corrupt header, too few tokens
    fail(f"training data: {e}")
model_cfg = config_from_preset(model, padded_vocab_size(n_vocab), block_size, **model_args)
teacher = None
if teacher_ckpt:
    try:
        teacher = load_teacher(teacher_ckpt, tokenizer=tokenizer, n_vocab=n_vocab, block_size=block_size,
                               preset=teacher_model, device=device,
                               dtype=torch.bfloat16 if dtype == "bfloat16" else None)
    except CheckpointError as e:
        fail(f"teacher: {e}")

torch.manual_seed(seed)  # here, after the teacher is built, so the student's init doesn't depend on having one
# FSDP: built on the meta device and sharded before any weight exists, then each rank's shards initialised to
# the values GPT(model_cfg) would hold (parallel.build_sharded); before the optimizer, so it holds the shards
compute_dtype = None if dtype == "float32" else getattr(torch, dtype)
raw_model = build_sharded(model_cfg, device, compute_dtype) if fsdp else GPT(model_cfg).to(device)
raw_model.activation_checkpointing = activation_checkpointing
if fsdp and teacher is not None and fsdp_teacher:
    apply_fsdp(teacher)
optimizer = (torch.optim.SGD(raw_model.parameters(), lr=learning_rate) if optim == "sgd"
             else raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type))
step, tokens_seen = 0, 0
ckpt_path = os.path.join(out_dir, "ckpt.pt")
sharded_dir = os.path.join(out_dir, "ckpt_sharded")  # FSDP's resumable checkpoint; ckpt.pt is then model-only
if resume and (find_sharded(sharded_dir) if fsdp else os.path.exists(ckpt_path)):
    try:   # (FSDP loads its shards straight into the sharded model and optimizer)
        ck = load_sharded(sharded_dir, raw_model, optimizer) if fsdp else load_for_resume(ckpt_path, asdict(model_cfg), device)
    except CheckpointError as e:
        fail(f"--resume: {e}")
    if not fsdp:
        raw_model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
    train_loader.load_state_dict(ck["data_state"])
    step, tokens_seen = ck["step"], ck["tokens_seen"]
    set_rng_state(ck["rng"])
    log(f"resumed {ckpt_path} at step {step} ({tokens_seen:,} tokens)")
    del ck
elif resume:
    log(f"--resume: no checkpoint at {ckpt_path} yet, starting fresh")

# `student` is what the loop calls: raw_model, maybe compiled, maybe DDP-wrapped (FSDP shards raw_model in place)
student = torch.compile(raw_model) if compile else raw_model
teacher_fwd = torch.compile(teacher) if compile and teacher is not None else teacher
if ddp and not fsdp:
    student = wrap_ddp(student, device)

# "fused": lm_head and loss together (fused_kd.py's kernel for the paper's loss and plain CE, chunked_loss.py
# for every other ablation), never the micro-batch's [tokens, V] logits; "reference": distill_loss.py.
top_k_count = (round(top_k * n_vocab) if top_k < 1 else int(top_k)) if top_k > 0 else None  # round(p·V), as the paper
loss_options = dict(temperature=temperature, vocab_size=n_vocab, kl=kd_loss, top_k=top_k_count,
                    top_k_variant=top_k_variant, label_smoothing=label_smoothing, jsd_beta=jsd_beta)


def alpha_at(it):
    return alpha if alpha_end < 0 else alpha + (alpha_end - alpha) * it / max(1, total_iters)


def lr_at(it):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    progress = (it - warmup_iters) / max(1, total_iters - warmup_iters)
    return learning_rate * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def next_batch():
    """The next micro-batch from the loader; on a GPU in pinned memory, so its copy to the device is asynchronous."""
    try:
        x, y = train_loader.next_batch()
    except TokenFileError as e:   # an id past the vocabulary: say which file and where, not an IndexError
        fail(f"training data: {e}")
    return (x.pin_memory(), y.pin_memory()) if device_type == "cuda" else (x, y)


def run_eval():
    try:   # FSDP: every rank takes part in every forward, so each evaluates all batches
        return evaluate_splits(raw_model, data_dir, batch_size=batch_size, block_size=block_size, n_vocab=n_vocab,
                               tokenizer=tokenizer, max_batches=eval_iters, device=device, autocast=autocast,
                               rank=0 if fsdp else rank, world_size=1 if fsdp else world_size)
    except ValueError as e:   # another tokenizer's file, an id past the vocabulary, too short a file
        fail(f"evaluation data: {e}")


def save(tag=""):
    meta = {"model_config": asdict(model_cfg), "tokenizer": tokenizer, "tokenizer_state": tokenizer_state,
            "n_vocab": n_vocab, "config": config,
            "step": step, "tokens_seen": tokens_seen, "data_state": data_state(), "git_commit": run_log.commit,
            "rng": rng_state()}
    if fsdp:  # shards to resume from, and the gathered weights as the usual single file for eval/export/teachers
        save_sharded(sharded_dir, raw_model, optimizer, meta)
        whole = full_model_state_dict(raw_model)
        if master:
            save_checkpoint(ckpt_path, {**meta, "model": whole, "optimizer": None})
    elif master:
        save_checkpoint(ckpt_path, {**meta, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict()})
    log(f"saved {sharded_dir if fsdp else ckpt_path} at step {step}{tag}")


# A scheduler's SIGTERM (preemption) or Ctrl-C: finish the step, checkpoint, exit.
stop_requested = []   # the signals received (a list, so the handler needs no `global`)
signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.append(signum))
# Test-only: NANOKD_TEST_SIGNAL="SIGKILL@23" makes every process send itself that signal right after step 23,
# so the fault tests interrupt a run at a known step on any machine, however fast its steps are.
_test_signal, _, _test_signal_step = os.environ.get("NANOKD_TEST_SIGNAL", "").partition("@")
_test_signal = getattr(signal, _test_signal) if _test_signal else None

# ---- the run directory records what produced it (runlog.py) -------------------
run_log = RunLog(out_dir, config, master, wandb_project=wandb_project if wandb_log else None,
                 wandb_run_name=wandb_run_name, model_config=asdict(model_cfg), world_size=world_size,
                 grad_accum_steps=grad_accum_steps)
record = run_log.record

n_student = raw_model.num_params()
log(f"student {model} {n_student / 1e6:.2f}M params"
    + (f", teacher {teacher.num_params() / 1e6:.2f}M params (α={alpha}, T={temperature})" if teacher is not None else ", no teacher")
    + f" | {world_size} process(es) × {grad_accum_steps} accumulation × {batch_size}×{block_size} = {batch_tokens:,} tokens/step"
    + f" | {total_iters} steps, {loss_path(loss_impl, teacher is not None, **loss_options)} loss, {dtype}")

# ---- training loop -------------------------------------------------------------
flops_per_step = batch_tokens * (raw_model.flops_per_token(block_size) +
                                 (teacher.flops_per_token(block_size, backward=False) if teacher is not None else 0))
peak = plan.peak_flops(device) * world_size
t_start, t_last, step_last, tokens_at_start = time.time(), time.time(), step, tokens_seen
t_run, first_step, loss_f = time.time(), step, None
# The host waits for the GPU once a step, at its very end: every kernel of the step (optimizer included) is
# queued first, then the next step's first batch is read into pinned memory while the GPU works, and only then
# are the step's numbers read and checked. So a non-finite step is caught before anything is saved (the
# weights it produced are never checkpointed), and a checkpoint records the loader's position before that
# prefetched batch.
prefetched, prefetch_state = None, None


def data_state():
    return prefetch_state if prefetched is not None else train_loader.state_dict()


while step < total_iters:
    if step % eval_interval == 0 and step > 0:
        ev = run_eval()
        log(f"step {step}: " + " | ".join(f"{k} {v:.4f}" for k, v in ev.items()))
        record({"step": step, "eval": ev})
        save()

    lr, alpha_now = lr_at(step), alpha_at(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    sums = torch.zeros(4, device=device)  # loss, ce, kd averaged over micro-steps; a stop flag
    for micro in range(grad_accum_steps):
        x, y = prefetched if prefetched is not None else next_batch()
        prefetched = None
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        set_grad_sync(student, micro == grad_accum_steps - 1)  # communicate once per step, not per micro-step
        loss, ce, kd = micro_batch_loss(student, raw_model.lm_head, x, y, alpha_now, teacher=teacher_fwd,
                                        teacher_head=teacher.lm_head if teacher is not None else None,
                                        loss_impl=loss_impl, compute_dtype=compute_dtype, **loss_options)
        (loss / grad_accum_steps).backward()
        sums[:3] += torch.stack([loss.detach(), ce, kd]).float() / grad_accum_steps
    sums[3] = float(bool(stop_requested))
    if ddp:
        dist.all_reduce(sums, op=dist.ReduceOp.AVG)  # the flag rides along: all ranks stop at the same step
    grad_norm = full(torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip))   # (on the device)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    numbers = torch.cat([sums, grad_norm.reshape(1).float()]).to("cpu", non_blocking=True)
    if device_type == "cuda":
        step_done = torch.cuda.Event()
        step_done.record()
    if step + 1 < total_iters:
        prefetch_state, prefetched = train_loader.state_dict(), next_batch()
    if device_type == "cuda":
        step_done.synchronize()   # the one wait of the step
    loss_f, ce_f, kd_f, stop_flag, grad_norm = numbers.tolist()
    if not (math.isfinite(loss_f) and math.isfinite(grad_norm)):
        # the checkpoint on disk is from the last eval of a finite run; leave it alone (the weights this step
        # made are never saved)
        fail(f"{'loss' if not math.isfinite(loss_f) else 'gradient norm'} is "
             f"{loss_f if not math.isfinite(loss_f) else grad_norm} at step {step} (loss {loss_f}, ce {ce_f}, "
             f"kd {kd_f}, grad norm {grad_norm}); stopping. The last good checkpoint is {ckpt_path} if one was saved.")
    step += 1
    tokens_seen += batch_tokens
    record({"step": step, "loss": loss_f, "ce": ce_f, "kd": kd_f, "lr": lr, "alpha": alpha_now, "grad_norm": grad_norm})
    if _test_signal is not None and step == int(_test_signal_step):
        os.kill(os.getpid(), _test_signal)

    if step == first_step + 1:  # throughput leaves out the first step: compilation, allocator warm-up
        t_start, t_last, step_last, tokens_at_start = time.time(), time.time(), step, tokens_seen
    elif step % log_interval == 0 or step == total_iters:
        now = time.time()
        tok_s = (tokens_seen - tokens_at_start) / (now - t_start)
        eta = (total_iters - step) * batch_tokens / max(tok_s, 1e-9)
        mfu = f" | MFU {100 * flops_per_step * (step - step_last) / (now - t_last) / peak:.1f}%" if peak else ""
        log(f"step {step}/{total_iters} | loss {loss_f:.4f} ce {ce_f:.4f} kd {kd_f:.4f} | lr {lr:.2e} α {alpha_now:.2f} | "
            f"{tok_s:,.0f} tok/s{mfu} | ETA {eta / 60:.1f} min")
        t_last, step_last = now, step
    if stop_flag > 0:
        save(" (stop requested)")
        log(f"stopped by signal at step {step}; continue with --resume=True")
        run_log.finish()
        if ddp:
            exit_cleanly(143)
        sys.exit(143)

final = run_eval()
log("final: " + " | ".join(f"{k} {v:.4f}" for k, v in final.items()))
# measured peak beside plan.py's estimate of it (bench/gpu_check.sh's smoke run reports both)
peak_memory = torch.cuda.max_memory_allocated(device) if device_type == "cuda" else None
plan_memory = plan.memory_bytes(raw_model, teacher, batch_size * block_size, n_vocab, parallel=parallel,
                                world_size=world_size, fsdp_teacher=fsdp_teacher,
                                checkpointing=activation_checkpointing, loss_impl=loss_impl)["total"]
if peak_memory is not None:
    log(f"peak memory {peak_memory / 2**30:.2f} GiB allocated (plan.py estimated {plan_memory / 2**30:.2f} GiB)")
record({"step": step, "eval": final})
save()
if master:
    with open(os.path.join(out_dir, "final.json"), "w") as f:
        json.dump({"step": step, "tokens_seen": tokens_seen, "eval": final, "train_loss": loss_f,
                   "minutes": (time.time() - t_run) / 60, "peak_memory_bytes": peak_memory,
                   "plan_memory_bytes": plan_memory}, f, indent=2)
# the numbers a KD run is compared by, as the wandb run's summary
run_log.finish({"loss": loss_f, "ce": ce_f, "kd": kd_f, "alpha": alpha_at(step), "temperature": temperature,
                "teacher": teacher_ckpt or "none", **{f"eval/{k}": v for k, v in final.items()}})
if ddp:
    exit_cleanly(0)
