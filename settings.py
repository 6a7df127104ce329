"""
What each train.py setting may be. configurator.py gives every key the type of its default in train.py;
this table says which values of that type make sense. train.py checks them all at start-up, before any
data or model is touched, and a bad value is one line: the key, its value, what is allowed.

    check_settings(config)          every key against RULES, then the checks that involve several keys
    check_data_files(...)           once the training files are open: their vocabulary, and the eval files'
    check_resume(saved, config)     a resumed run keeps what fixes its data order and schedule

Booleans need no rule (their type is the whole range); every other key has one (tests/test_settings.py
holds train.py's defaults to that).
"""

import glob
import math
import os
from dataclasses import fields

import torch

from configurator import ConfigError
from data.tokenizer import N_VOCAB
from distill_loss import KL_CHOICES, TOP_K_VARIANTS, check_loss_options, resolve_top_k
from model import ALIASES, PRESETS, GPTConfig, config_from_preset


def at_least(lo):
    return lambda v: math.isfinite(v) and v >= lo


def above(lo):
    return lambda v: math.isfinite(v) and v > lo


def within(lo, hi, hi_open=False):
    return lambda v: math.isfinite(v) and lo <= v and (v < hi if hi_open else v <= hi)


def one_of(*choices):
    return lambda v: v in choices


def anything(v):
    return True


def no_file_in_the_way(path):
    """A folder, or a path where one can be made: no file at it or at any folder above it."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.path.isdir(path)


def whole_count_or_fraction(v):
    return v == 0 or (0 < v < 1) or (v >= 1 and float(v).is_integer() and math.isfinite(v))


def known_tokenizer(v):
    return v in N_VOCAB or v == "hf" or v.startswith("hf-")


def known_device(v):
    return v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())


MODELS = sorted(PRESETS) + sorted(ALIASES)

# key: (test, what is allowed). Each test sees a value of the default's type.
RULES = {
    # I/O
    "out_dir": (lambda v: v != "" and no_file_in_the_way(v), "a folder (made if missing), not a file"),
    "eval_interval": (at_least(1), "an integer >= 1 (steps between evaluations and checkpoints)"),
    "eval_iters": (at_least(1), "an integer >= 1 (batches per validation split)"),
    "log_interval": (at_least(1), "an integer >= 1"),
    "wandb_project": (anything, "any name"),
    "wandb_run_name": (anything, "any name (\"\" = out_dir's)"),
    # data
    "data_dir": (lambda v: v != "", "a folder of train*.bin files"),
    "tokenizer": (known_tokenizer, f"one of {', '.join(N_VOCAB)}, hf or hf-<hash>"),
    "tokenizer_path": (anything, "a path, or \"\""),
    "batch_size": (at_least(1), "an integer >= 1"),
    "block_size": (at_least(1), "an integer >= 1"),
    "batch_tokens": (at_least(1), "an integer >= 1 (a multiple of batch_size·block_size·processes)"),
    "train_tokens": (at_least(1), "an integer >= 1"),
    "max_iters": (at_least(0), "an integer >= 0 (0 = train_tokens // batch_tokens steps)"),
    # model
    "model": (one_of(*MODELS), f"a preset of model.py: {', '.join(MODELS)}"),
    "model_args": (anything, "a dict of GPTConfig fields"),   # checked below, by building the config
    "vocab_rows": (at_least(0), "0 (the tokenizer's vocabulary, padded) or a count of embedding rows >= it"),
    # distillation
    "teacher_ckpt": (anything, "a checkpoint path, or \"\" for no teacher"),
    "teacher_model": (one_of("", *MODELS), "\"\" or a preset of model.py"),
    "teacher_cache": (anything, "a teacher_cache.py folder, or \"\" (then the teacher, if any, runs online)"),
    "alpha": (within(0, 1), "a number in [0, 1] (the weight of KD against CE)"),
    "alpha_end": (lambda v: math.isfinite(v) and v <= 1, "< 0 (off: α stays alpha) or a number in [0, 1]"),
    "temperature": (at_least(0), "a finite number >= 0 (0 = the teacher's argmax as hard labels)"),
    "kd_loss": (one_of(*KL_CHOICES), f"one of {', '.join(KL_CHOICES)}"),
    "jsd_beta": (within(0, 1), "a number in [0, 1] (kd_loss=jsd needs it inside (0, 1))"),
    "top_k": (whole_count_or_fraction, "0 (off), a fraction p in (0, 1) of the vocabulary, or a whole count >= 1"),
    "top_k_variant": (one_of(*TOP_K_VARIANTS), f"one of {', '.join(TOP_K_VARIANTS)}"),
    "label_smoothing": (within(0, 1, hi_open=True), "a number in [0, 1)"),
    "loss_impl": (one_of("fused", "reference"), "fused or reference"),
    # optimizer
    "learning_rate": (above(0), "a finite number > 0"),
    "min_lr_ratio": (within(0, 1), "a number in [0, 1] (the cosine's floor, a fraction of the peak)"),
    "warmup_frac": (within(0, 1), "a number in [0, 1] (the fraction of steps spent warming up)"),
    "weight_decay": (at_least(0), "a finite number >= 0"),
    "beta1": (within(0, 1, hi_open=True), "a number in [0, 1)"),
    "beta2": (within(0, 1, hi_open=True), "a number in [0, 1)"),
    "grad_clip": (above(0), "a finite number > 0 (the largest gradient norm; 1e30 turns clipping off)"),
    "optim": (one_of("adamw", "sgd"), "adamw or sgd"),
    "weight_decay_params": (one_of("matrices", "all"), "matrices or all (every parameter, as the authors' optax.adamw)"),
    # system
    "device": (known_device, "auto, cpu, cuda or cuda:N"),
    "dtype": (one_of("auto", "float32", "bfloat16"), "auto, float32 or bfloat16 (float16 would need a loss scaler)"),
    "parallel": (one_of("ddp", "fsdp"), "ddp or fsdp"),
    "seed": (within(0, 2**32, hi_open=True), "an integer in [0, 2**32)"),
}


def bad(key, value, allowed):
    return ConfigError(f"{key}={value!r}; allowed: {allowed}")


def check_model_args(model, model_args, block_size):
    settable = {f.name for f in fields(GPTConfig)} - {"vocab_size", "block_size"}
    allowed = f"a dict of GPTConfig fields ({', '.join(sorted(settable))}) with positive sizes"
    for key, value in model_args.items():
        if key not in settable:
            raise bad("model_args", model_args, allowed)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in ("tie_embeddings", "qk_norm"):
            ok = isinstance(value, bool)
        elif key == "rope_scaling":
            ok = value is None or isinstance(value, dict)
        elif key in ("rope_theta", "norm_eps"):
            ok = number and math.isfinite(value) and value > 0
        else:   # the sizes
            ok = (value is None and key in ("n_kv_head", "head_dim", "mlp_hidden")) or (
                isinstance(value, int) and not isinstance(value, bool) and value >= 1)
        if not ok:
            raise bad("model_args", model_args, allowed)
    try:   # the shape's own rules (heads divide the width, GQA groups): a dataclass, no tensors
        config_from_preset(model, 256, block_size, **model_args)
    except (AssertionError, TypeError, ValueError) as e:
        raise bad("model_args", model_args, f"a shape GPTConfig accepts ({e or type(e).__name__})") from None


def check_settings(config):
    """Raise ConfigError (one line) for the first setting that is out of range."""
    for key, (test, allowed) in RULES.items():
        if key in config and not test(config[key]):
            raise bad(key, config[key], allowed)
    c = config
    check_model_args(c["model"], c["model_args"], c["block_size"])
    if c["max_iters"] == 0 and c["train_tokens"] < c["batch_tokens"]:
        raise bad("train_tokens", c["train_tokens"], f"at least one step of batch_tokens={c['batch_tokens']}")
    if c["batch_tokens"] % (c["batch_size"] * c["block_size"]):
        raise bad("batch_tokens", c["batch_tokens"], f"a multiple of batch_size·block_size = "
                  f"{c['batch_size'] * c['block_size']} (times the number of processes)")
    if c.get("teacher_cache") and c["teacher_ckpt"]:
        raise bad("teacher_cache", c["teacher_cache"], "\"\" when teacher_ckpt is set (one teacher: online or cached)")
    try:
        check_loss_options(c["kd_loss"], c["temperature"], c["top_k"], c["top_k_variant"], c["jsd_beta"])
        if c["tokenizer"] in N_VOCAB:   # (an hf tokenizer's size is known once it is read: train.py checks then)
            resolve_top_k(c["top_k"], N_VOCAB[c["tokenizer"]])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if c["device"].startswith("cuda") and not c.get("dry_run"):   # a dry run plans GPUs from anywhere
        n = torch.cuda.device_count()
        index = int(c["device"][5:]) if ":" in c["device"] else 0
        if index >= n:
            raise bad("device", c["device"], f"auto or cpu: this machine has {n} CUDA device(s)")


# What fixes a run's data order and schedule; a resumed run that changed one would mean something else by its
# data position and learning-rate step. (batch_size may change with the number of processes; batch_tokens not.)
FIXED_ON_RESUME = ("batch_tokens", "train_tokens", "max_iters", "seed")


def check_resume(saved, config):
    for key in FIXED_ON_RESUME:
        if key in saved and saved[key] != config[key]:
            raise ConfigError(f"--resume: {key}={config[key]!r} but the checkpoint's run has {key}={saved[key]!r}; "
                              f"resume with {key}={saved[key]!r}, or start a new run in another out_dir")


def check_data_files(data_dir, tokenizer, n_vocab, top_k):
    """Once the training files are open: their headers carry the tokenizer's own vocabulary (a wrong one is
    blamed on the training file that has it), the evaluation files match them, so a mismatch is found at
    start-up rather than after training; and top_k keeps at least one token of that vocabulary."""
    from data.tokenfile import load_tokens, read_header
    from eval import loss_splits
    for path in sorted(glob.glob(os.path.join(data_dir, "train*.bin"))):
        vocab = read_header(path)["vocab_size"]
        if tokenizer in N_VOCAB and vocab != N_VOCAB[tokenizer]:
            raise ValueError(f"{path}: its header says vocabulary {vocab}, but tokenizer {tokenizer!r} has "
                             f"{N_VOCAB[tokenizer]}: the file is corrupt or was written by another tool")
    for path in loss_splits(data_dir).values():
        load_tokens(path, tokenizer, n_vocab)
    resolve_top_k(top_k, n_vocab)
