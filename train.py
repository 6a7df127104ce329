"""
Train a GPT, optionally distilling from a frozen teacher:

    loss = (1 − α)·CE(student, data) + α·T²·KL(teacher_T ‖ student_T)

One process:      python train.py configs/tiny_student.py --max_iters=50 --device=cpu
One node, 8 GPUs: torchrun --standalone --nproc_per_node=8 train.py configs/student_1b_teacher_160m.py
Multi-node:       torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT train.py ...
Check a config:   python train.py configs/student_1b_teacher_160m.py --dry_run=True

Defaults below; a config file overrides them, then --key=value (configurator.py); settings.py says each one's range.
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
from distill_loss import resolve_top_k
from data.loader import open_training_data
from data.tokenfile import TokenFileError
from data.tokenizer import padded_vocab_size
from eval import evaluate_splits
from kd_cache import CacheError, TeacherCache, piece_identity
from model import GPT, config_from_preset
from parallel import (apply_fsdp, build_sharded, exit_cleanly, find_sharded, full, full_model_state_dict, init_processes,
                      load_sharded, save_sharded, set_grad_sync, wrap_ddp)
import plan
from runlog import RunLog, claim_out_dir
from settings import check_data_files, check_resume, check_settings
from train_step import loss_path, micro_batch_loss, micro_step_weights

# -----------------------------------------------------------------------------
# defaults
# I/O
out_dir = "out/run"
eval_interval = 100         # steps between validation (and checkpoints)
eval_iters = 20             # batches per validation split
log_interval = 10
resume = False              # continue out_dir/ckpt.pt exactly (model, optimizer, data position, RNG)
overwrite = False           # start over in an out_dir that holds a run (its checkpoint, log and final.json go)
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
packing = False                    # rows of whole documents: attention within each, RoPE per document, padding
                                   # unscored (data/packing.py), as the authors' runs; False = plain windows
train_tokens = 2_000_000           # token budget; steps = train_tokens // batch_tokens
max_iters = 0                      # > 0 overrides the token budget (quick runs)
# model
model = "tiny-128"                 # a preset in model.py
model_args = {}                    # overrides of the preset's shape, e.g. {"n_layer": 6}
vocab_rows = 0                     # embedding rows; 0 = the tokenizer's vocabulary padded to a multiple of 64 (or 8)
loss_all_rows = False              # True: every embedding row enters CE's and KD's softmax, as MaxText's logits do
                                   # (the authors' Qwen3 runs: 151,936 rows, 128,256 ids); False: the tokenizer's ids only
# distillation
teacher_ckpt = ""                  # a nanokd ckpt.pt or a local Hugging Face folder (README); "" = no teacher
teacher_model = ""                 # the teacher's preset, checked against its checkpoint (and used by dry runs)
teacher_cache = ""                 # a teacher_cache.py folder: KD from its sparse targets, no teacher model loaded
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
weight_decay_params = "matrices"   # "matrices" (not norms); "all": every parameter, as the authors' optax.adamw
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
try:   # every setting's type (configurator.py) and range (settings.py), before anything is read or built
    apply_overrides(globals(), sys.argv[1:])
    config = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str, dict))}
    check_settings(config)
except (ConfigError, ValueError, OSError) as e:
    sys.exit(f"train.py: config error: {e}")
if dry_run:   # the plan only: no processes, no data, models on the meta device; a teacher may be just a preset
    plan.dry_run(config)
    sys.exit(0)
if alpha > 0 and not (teacher_ckpt or teacher_cache):
    sys.exit(f"train.py: config error: alpha={alpha} weights a KD term but neither teacher_ckpt nor teacher_cache is set")
try:   # a run already there is continued (--resume) or replaced (--overwrite), never mixed with this one
    claim_out_dir(out_dir, resume, overwrite, master=os.environ.get("RANK", "0") == "0")
except ConfigError as e:
    sys.exit(f"train.py: config error: {e}")

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
        data_dir, batch_size, block_size, rank, world_size, seed, tokenizer, tokenizer_path or teacher_ckpt, packing)
    check_data_files(data_dir, tokenizer, n_vocab, top_k)   # the evaluation files too: now, not after training
except (ValueError, OSError) as e:   # no files, another tokenizer's, a corrupt header, too few tokens
    fail(f"training data: {e}")
if vocab_rows and vocab_rows < n_vocab:
    fail(f"vocab_rows={vocab_rows} is fewer than the {n_vocab} ids of tokenizer {tokenizer!r}: 0 (padded to the "
         f"tokenizer) or at least {n_vocab}")
model_cfg = config_from_preset(model, vocab_rows or padded_vocab_size(n_vocab), block_size, **model_args)
top_k_count = resolve_top_k(top_k, n_vocab)   # round(p·V), as the paper; checked by check_data_files
teacher, kd_cache = None, None
if teacher_cache:   # the teacher's targets from disk (kd_cache.py), checked against this run before any step
    try:
        kd_cache = TeacherCache(teacher_cache)
        kd_cache.check_run(tokenizer=tokenizer, n_vocab=n_vocab, block_size=block_size, temperature=temperature,
                           data_files=train_loader.paths, top_k=top_k_count, kd_loss=kd_loss,
                           pieces=piece_identity(train_loader) if packing else None)
    except (CacheError, OSError) as e:
        fail(str(e))
if teacher_ckpt:
    try:
        teacher = load_teacher(teacher_ckpt, tokenizer=tokenizer, n_vocab=n_vocab, block_size=block_size,
                               preset=teacher_model, device=device,
                               dtype=torch.bfloat16 if dtype == "bfloat16" else None)
    except CheckpointError as e:
        fail(f"teacher: {e}")
    if loss_all_rows and teacher.config.vocab_size != model_cfg.vocab_size:
        fail(f"loss_all_rows=True needs teacher and student with the same embedding rows: teacher "
             f"{teacher.config.vocab_size}, student {model_cfg.vocab_size} (set vocab_rows)")

torch.manual_seed(seed)  # here, after the teacher is built, so the student's init doesn't depend on having one
# FSDP: built on the meta device and sharded before any weight exists, then each rank's shards initialised to
# the values GPT(model_cfg) would hold (parallel.build_sharded); before the optimizer, so it holds the shards
compute_dtype = None if dtype == "float32" else getattr(torch, dtype)
raw_model = build_sharded(model_cfg, device, compute_dtype) if fsdp else GPT(model_cfg).to(device)
raw_model.activation_checkpointing = activation_checkpointing
if fsdp and teacher is not None and fsdp_teacher:
    apply_fsdp(teacher)
optimizer = (torch.optim.SGD(raw_model.parameters(), lr=learning_rate) if optim == "sgd"
             else raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type,
                                             weight_decay_params))
step, tokens_seen, resumed_from = 0, 0, None
ckpt_path = os.path.join(out_dir, "ckpt.pt")
sharded_dir = os.path.join(out_dir, "ckpt_sharded")  # FSDP's resumable checkpoint; ckpt.pt is then model-only
if resume and (find_sharded(sharded_dir) if fsdp else os.path.exists(ckpt_path)):
    try:   # (FSDP loads its shards straight into the sharded model and optimizer)
        ck = load_sharded(sharded_dir, raw_model, optimizer) if fsdp else load_for_resume(ckpt_path, asdict(model_cfg), device)
        check_resume(ck.get("config") or {}, config)
    except (CheckpointError, ConfigError) as e:
        fail(f"--resume: {e}" if isinstance(e, CheckpointError) else str(e))
    resumed_from = ck["step"]
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
loss_options = dict(temperature=temperature, vocab_size=model_cfg.vocab_size if loss_all_rows else n_vocab,
                    kl=kd_loss, top_k=top_k_count,
                    top_k_variant=top_k_variant, label_smoothing=label_smoothing, jsd_beta=jsd_beta)


def alpha_at(it):
    return alpha if alpha_end < 0 else alpha + (alpha_end - alpha) * it / max(1, total_iters)


def lr_at(it):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    progress = (it - warmup_iters) / max(1, total_iters - warmup_iters)
    return learning_rate * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def sum_over_ranks(t):
    on_device = t.to(device)   # NCCL reduces GPU tensors only
    dist.all_reduce(on_device)
    t.copy_(on_device.cpu())


def draw_step():
    """The step's micro-batches (on a GPU in pinned memory, so their copies to it are asynchronous), the teacher
    cache's targets for each, and each one's loss divisor: the step's loss is divided by the tokens all of its
    micro-batches score, on every rank (packing pads rows)."""
    try:
        batches, cached = [], []
        for _ in range(grad_accum_steps):
            batch = train_loader.next_batch()
            batches.append(tuple(t.pin_memory() for t in batch) if device_type == "cuda" else batch)
            cached.append(kd_cache.batch_targets(train_loader, device) if kd_cache else None)
    except CacheError as e:
        fail(str(e))
    except TokenFileError as e:   # an id past the vocabulary: say which file and where, not an IndexError
        fail(f"training data: {e}")
    divisors = micro_step_weights([b[1] for b in batches], world_size,
                                  all_reduce=sum_over_ranks if ddp else None)   # (unpacked too: else d = accum/W)
    return batches, cached, divisors


def check_finite(numbers, step):
    """Stop, naming the last good checkpoint, when a step's loss or gradient norm is not finite."""
    loss_f, ce_f, kd_f, _, grad_norm = numbers
    if not (math.isfinite(loss_f) and math.isfinite(grad_norm)):
        what = f"loss is {loss_f}" if not math.isfinite(loss_f) else f"gradient norm is {grad_norm}"
        fail(f"{what} at step {step} (ce {ce_f}, kd {kd_f}, grad norm {grad_norm}); stopping. {last_good()}")


def run_eval():
    try:   # FSDP: every rank takes part in every forward, so each evaluates all batches
        return evaluate_splits(raw_model, data_dir, batch_size=batch_size, block_size=block_size, n_vocab=n_vocab,
                               tokenizer=tokenizer, max_batches=eval_iters, device=device, autocast=autocast,
                               rank=0 if fsdp else rank, world_size=1 if fsdp else world_size)
    except ValueError as e:   # another tokenizer's file, an id past the vocabulary, too short a file
        fail(f"evaluation data: {e}")


def save(data_state, rng, tag=""):
    """The weights at `step`; data_state and rng as they were before this step drew its batches."""
    global saved_step
    meta = {"model_config": asdict(model_cfg), "tokenizer": tokenizer, "tokenizer_state": tokenizer_state,
            "n_vocab": n_vocab, "config": config,
            "step": step, "tokens_seen": tokens_seen, "data_state": data_state, "git_commit": run_log.commit,
            "rng": rng}
    try:
        if fsdp:  # shards to resume from, and the gathered weights as the usual single file for eval/export/teachers
            save_sharded(sharded_dir, raw_model, optimizer, meta)
            whole = full_model_state_dict(raw_model)
            if master:
                save_checkpoint(ckpt_path, {**meta, "model": whole, "optimizer": None})
        elif master:
            save_checkpoint(ckpt_path, {**meta, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict()})
    except CheckpointError as e:   # a full disk: which file, how big, how much is free (the last checkpoint is whole)
        fail(f"{e}. {last_good()}")
    log(f"saved {sharded_dir if fsdp else ckpt_path} at step {step}{tag}")
    saved_step = step


saved_step = resumed_from   # the step of the checkpoint on disk that this run wrote or resumed from


def last_good():
    return (f"The last good checkpoint is {sharded_dir if fsdp else ckpt_path}, from step {saved_step}."
            if saved_step is not None else "This run saved no checkpoint.")


# A scheduler's SIGTERM (preemption) or a first Ctrl-C: finish the step, checkpoint, exit 143. A second Ctrl-C
# aborts at once, as Ctrl-C does anywhere else, losing what came after the last checkpoint.
stop_requested = []   # the signals received (a list, so the handler needs no `global`)


def on_signal(signum, frame):
    if signum == signal.SIGINT and stop_requested:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.raise_signal(signal.SIGINT)
    if signum == signal.SIGINT and master:   # (os.write: print is not safe inside a signal handler)
        os.write(2, b"train.py: Ctrl-C: finishing this step, then checkpointing; Ctrl-C again aborts\n")
    stop_requested.append(signum)


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
# Test-only: NANOKD_TEST_SIGNAL="SIGKILL@23" makes every process send itself that signal right after step 23
# ("SIGINT,SIGINT@23": those two, in turn), so the fault tests interrupt a run at a known step on any machine.
_test_signals, _, _test_signal_step = os.environ.get("NANOKD_TEST_SIGNAL", "").partition("@")
_test_signals = [getattr(signal, name) for name in _test_signals.split(",") if name]

# ---- the run directory records what produced it (runlog.py) -------------------
run_log = RunLog(out_dir, config, master, wandb_project=wandb_project if wandb_log else None,
                 wandb_run_name=wandb_run_name, model_config=asdict(model_cfg), world_size=world_size,
                 grad_accum_steps=grad_accum_steps, resumed_from=resumed_from)
record = run_log.record

n_student = raw_model.num_params()
log(f"student {model} {n_student / 1e6:.2f}M params"
    + (f", teacher {teacher.num_params() / 1e6:.2f}M params (α={alpha}, T={temperature})" if teacher is not None
       else f", teacher cache {teacher_cache} ({kd_cache.method} k={kd_cache.k}, α={alpha}, T={temperature})" if kd_cache
       else ", no teacher")
    + f" | {world_size} process(es) × {grad_accum_steps} accumulation × {batch_size}×{block_size} = {batch_tokens:,} tokens/step"
    + f" | {total_iters} steps, {loss_path(loss_impl, teacher is not None, **loss_options)} loss, {dtype}")

# ---- training loop -------------------------------------------------------------
flops_per_step = batch_tokens * (raw_model.flops_per_token(block_size) +
                                 (teacher.flops_per_token(block_size, backward=False) if teacher is not None else 0))
peak = plan.peak_flops(device) * world_size
t_start, t_last, step_last, tokens_at_start = time.time(), time.time(), step, tokens_seen
t_run, first_step, stop_flag = time.time(), step, 0.0
loss_f = ce_f = kd_f = None
# The host waits for the device once a step, at its end: every kernel of the step (the optimizer's too) is queued
# first, then the next step's batches are read into pinned memory while the device works, and only then are the
# step's numbers read and checked. A step whose weights are to be checkpointed waits before its optimizer step
# instead, so that the weights it saves have a finite loss and gradient norm (the rest are never saved).
upcoming, upcoming_state = None, None   # the next step's batches, drawn at the end of the step before


def data_state():
    """The loader's position before the batches of the step about to run."""
    return upcoming_state if upcoming is not None else train_loader.state_dict()


while True:
    # The weights at `step` are checkpointed (every eval_interval steps, at the end, on a stop signal) only once
    # their evaluation, and the loss and gradient norm this step computes from them, are finite: a run that
    # diverges keeps its last good checkpoint. So the last step's weights take one more forward and backward.
    last = step >= total_iters or stop_flag > 0
    evaluate = step >= total_iters or (not stop_flag and step % eval_interval == 0 and step > 0)
    if evaluate:
        ev = run_eval()
        log(f"{'final' if last else f'step {step}'}: " + " | ".join(f"{k} {v:.4f}" for k, v in ev.items()))
        record({"step": step, "eval": ev})
        if not all(math.isfinite(v) for v in ev.values()):
            fail(f"evaluation at step {step} is not finite ({ev}); stopping. {last_good()}")
    if evaluate or last:
        resume_state = data_state(), rng_state()   # before this step draws its batches
    if last:
        trained = loss_f, ce_f, kd_f   # the last step's, for final.json (this one is a check, not a step)

    lr, alpha_now = lr_at(step), alpha_at(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    batches, cached, divisors = upcoming if upcoming is not None else draw_step()
    upcoming = None
    sums = torch.zeros(4, device=device)  # loss, ce, kd over the step's scored tokens; a stop flag
    for micro, batch in enumerate(batches):
        x, y, *docs = (t.to(device, non_blocking=True) for t in batch)   # docs: segment ids, positions if packing
        set_grad_sync(student, micro == grad_accum_steps - 1)  # communicate once per step, not per micro-step
        loss, ce, kd = micro_batch_loss(student, raw_model.lm_head, x, y, alpha_now, teacher=teacher_fwd,
                                        teacher_head=teacher.lm_head if teacher is not None else None,
                                        loss_impl=loss_impl, compute_dtype=compute_dtype, **loss_options,
                                        cached=dict(targets=cached[micro], method=kd_cache.method, k=kd_cache.k) if kd_cache else None,
                                        **dict(zip(("segment_ids", "positions"), docs)))
        (loss / divisors[micro]).backward()
        sums[:3] += torch.stack([loss.detach(), ce, kd]).float() / divisors[micro]
    sums[3] = float(bool(stop_requested))
    if ddp:
        dist.all_reduce(sums, op=dist.ReduceOp.AVG)  # the flag rides along: all ranks stop at the same step
    grad_norm = full(torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip))   # (on the device)
    numbers = torch.cat([sums, grad_norm.reshape(1).float()])
    if evaluate or last:   # these weights are saved: their loss and gradient norm must be known to be finite
        check_finite(numbers.tolist(), step)
        save(*resume_state, " (stop requested)" if stop_requested else "")
        if last:
            break
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    numbers = numbers.to("cpu", non_blocking=True)
    if device_type == "cuda":
        step_done = torch.cuda.Event()
        step_done.record()
    upcoming_state = train_loader.state_dict()
    upcoming = draw_step()
    if device_type == "cuda":
        step_done.synchronize()   # the one wait of the step
    loss_f, ce_f, kd_f, stop_flag, grad_norm = numbers.tolist()
    check_finite((loss_f, ce_f, kd_f, stop_flag, grad_norm), step)   # (the weights this step made are never saved)
    step += 1
    tokens_seen += batch_tokens
    record({"step": step, "loss": loss_f, "ce": ce_f, "kd": kd_f, "lr": lr, "alpha": alpha_now, "grad_norm": grad_norm})
    if _test_signals and step == int(_test_signal_step):
        for _signal in _test_signals:
            os.kill(os.getpid(), _signal)

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

if step < total_iters:   # stopped by a signal, and checkpointed
    log(f"stopped by signal at step {step}; continue with --resume=True")
    run_log.finish()
    if ddp:
        exit_cleanly(143)
    sys.exit(143)
final, (loss_f, ce_f, kd_f) = ev, trained
# the measured peak beside plan.py's estimate of it (bench/gpu_check.sh's smoke run reports both)
peak_memory = torch.cuda.max_memory_allocated(device) if device_type == "cuda" else None
plan_memory = plan.memory_bytes(raw_model, teacher, batch_size * block_size, n_vocab, parallel=parallel,
                                world_size=world_size, fsdp_teacher=fsdp_teacher,
                                checkpointing=activation_checkpointing, loss_impl=loss_impl)["total"]
if peak_memory is not None:
    log(f"peak memory {peak_memory / 2**30:.2f} GiB allocated (plan.py estimated {plan_memory / 2**30:.2f} GiB)")
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
