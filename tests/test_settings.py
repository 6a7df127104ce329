"""train.py's settings, checked in-process: every default has a rule in settings.py, each bad value a user
might type is one line naming the key, its value and what is allowed, and a resumed run may not change what
fixes its data order and schedule. Also the out_dir rules of runlog.py (a run is never mixed with another)."""

import ast
import copy
import functools
import json
import os

import pytest
import torch

from configurator import ConfigError, apply_overrides
from runlog import RunLog, claim_out_dir
from settings import RULES, check_resume, check_settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_defaults():
    """train.py's defaults, read from its source: the assignments before its first `try` (literals, or
    arithmetic on them such as 16 * 256). A fresh copy each call."""
    return copy.deepcopy(_train_defaults())


@functools.lru_cache
def _train_defaults():
    with open(os.path.join(ROOT, "train.py")) as f:
        tree = ast.parse(f.read())
    defaults = {}
    for node in tree.body:
        if isinstance(node, ast.Try):
            break
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            expression = compile(ast.Expression(node.value), "train.py", "eval")
            defaults[node.targets[0].id] = eval(expression, {"__builtins__": {}})
    return defaults


def configured(*argv):
    """What train.py's check sees after these --key=value arguments."""
    return apply_overrides(train_defaults(), list(argv))


def test_every_setting_has_a_rule_and_the_defaults_pass():
    defaults = train_defaults()
    assert len(defaults) > 40 and "grad_clip" in defaults and "seed" in defaults
    missing = [k for k, v in defaults.items() if not isinstance(v, bool) and k not in RULES]
    assert not missing, f"train.py settings without a rule in settings.py: {missing}"
    assert not set(RULES) - set(defaults), "rules for settings train.py does not have"
    check_settings(defaults)


# (argument, the key the error must name, words from what it allows)
BAD = [
    ("--grad_clip=-1", "grad_clip", "> 0"),
    ("--grad_clip=0", "grad_clip", "> 0"),
    ("--min_lr_ratio=-5", "min_lr_ratio", "[0, 1]"),
    ("--warmup_frac=2", "warmup_frac", "[0, 1]"),
    ("--max_iters=-3", "max_iters", ">= 0"),
    ("--top_k=1.5", "top_k", "whole count"),
    ("--top_k=-5", "top_k", "whole count"),
    ("--top_k=0.001", "top_k", "keeps no token"),   # round(0.001 · 257) = 0 of the byte vocabulary
    ("--eval_iters=0", "eval_iters", ">= 1"),
    ("--alpha_end=2", "alpha_end", "[0, 1]"),
    ("--alpha=1.5", "alpha", "[0, 1]"),
    ("--temperature=1e999", "temperature", "finite"),
    ("--temperature=-1", "temperature", ">= 0"),
    ("--dtype=float8", "dtype", "bfloat16"),
    ("--dtype=fp16", "dtype", "bfloat16"),
    ("--dtype=float16", "dtype", "loss scaler"),
    ("--device=gpu", "device", "cuda:N"),
    ("--device=cuda:99", "device", "CUDA device"),
    ("--batch_size=0", "batch_size", ">= 1"),
    ("--block_size=0", "block_size", ">= 1"),
    ("--model=gpt-5", "model", "tiny-64"),
    ("--teacher_model=gpt-5", "teacher_model", "preset"),
    ("--model_args={'n_layers': 6}", "model_args", "n_layer"),
    ("--model_args={'n_head': 0}", "model_args", "positive"),
    ("--model_args={'n_head': 5}", "model_args", "n_embd must divide"),
    ("--model_args={'rope_theta': -1.0}", "model_args", "GPTConfig"),
    ("--learning_rate=-0.001", "learning_rate", "> 0"),
    ("--learning_rate=1e999", "learning_rate", "finite"),
    ("--eval_interval=0", "eval_interval", ">= 1"),
    ("--log_interval=0", "log_interval", ">= 1"),
    ("--seed=-1", "seed", "[0, 2**32)"),
    ("--label_smoothing=2", "label_smoothing", "[0, 1)"),
    ("--label_smoothing=1", "label_smoothing", "[0, 1)"),
    ("--weight_decay=-0.1", "weight_decay", ">= 0"),
    ("--beta2=1", "beta2", "[0, 1)"),
    ("--jsd_beta=1.5", "jsd_beta", "(0, 1)"),
    ("--kd_loss=kl", "kd_loss", "forward"),
    ("--top_k_variant=all", "top_k_variant", "bucket"),
    ("--loss_impl=fast", "loss_impl", "reference"),
    ("--optim=adam", "optim", "sgd"),
    ("--parallel=tp", "parallel", "fsdp"),
    ("--tokenizer=gpt4", "tokenizer", "llama3"),
    ("--data_dir=", "data_dir", "train*.bin"),
    ("--batch_tokens=0", "batch_tokens", ">= 1"),
    ("--batch_tokens=1000", "batch_tokens", "multiple of batch_size·block_size = 4096"),
    ("--train_tokens=100", "train_tokens", "one step of batch_tokens=4096"),
]


@pytest.mark.parametrize("arg,key,allowed", BAD, ids=[b[0] for b in BAD])
def test_a_bad_setting_is_one_line_naming_key_value_and_range(arg, key, allowed):
    if arg.startswith("--device=cuda") and torch.cuda.device_count() > 99:
        pytest.skip("this machine has that GPU")
    config = configured(arg)
    with pytest.raises(ConfigError) as e:
        check_settings(config)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{key}={config[key]!r}") or f"top_k={config['top_k']}" in message, message
    assert allowed in message, message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused_but_a_dry_run_plans_it(device):
    with pytest.raises(ConfigError, match=rf"^device='{device}'; allowed: auto or cpu: this machine has 0 CUDA"):
        check_settings(configured(f"--device={device}"))
    check_settings(configured(f"--device={device}", "--dry_run=True"))


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    for out in (tmp_path / "f", tmp_path / "f" / "run"):
        with pytest.raises(ConfigError, match=r"^out_dir=.*; allowed: a folder"):
            check_settings(configured(f"--out_dir={out}"))
    check_settings(configured(f"--out_dir={tmp_path / 'new' / 'run'}"))


def test_good_edges_pass():
    for args in (["--top_k=0.5"], ["--top_k=20"], ["--top_k=1"], ["--alpha_end=-1"], ["--alpha_end=0"],
                 ["--warmup_frac=0"], ["--min_lr_ratio=1"], ["--temperature=0"], ["--max_iters=0"],
                 ["--model_args={'n_layer': 1, 'rope_theta': 1e4}"], ["--device=cpu"], ["--model=llama-0.7b"],
                 ["--kd_loss=jsd", "--jsd_beta=0.1"], ["--tokenizer=hf"]):
        check_settings(configured(*args))


@pytest.mark.parametrize("key,value", [("batch_tokens", 8192), ("train_tokens", 10**6), ("max_iters", 7), ("seed", 44)])
def test_resume_refuses_a_changed_schedule_or_data_order(key, value):
    saved = train_defaults()
    with pytest.raises(ConfigError, match=rf"^--resume: {key}={value!r} but the checkpoint's run has {key}="):
        check_resume(saved, {**saved, key: value})


def test_resume_accepts_another_batch_size_and_an_old_checkpoint():
    saved = train_defaults()
    check_resume(saved, {**saved, "batch_size": 8, "learning_rate": 1e-4})   # e.g. twice the processes
    check_resume({}, saved)   # a checkpoint that carries no config


# ---- out_dir ----------------------------------------------------------------------------------------------

def test_a_run_in_out_dir_is_continued_or_replaced_never_mixed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    claim_out_dir(str(out), resume=False, overwrite=False, master=True)   # empty: fine
    for name in ("final.json", "ckpt.pt", "log.jsonl"):
        (out / name).write_text("{}")
    (out / ".ckpt-abc.tmp").write_bytes(b"half a checkpoint")
    with pytest.raises(ConfigError, match=r"holds a run \(final.json, ckpt.pt\); continue it with --resume=True, "
                                          r"or replace it with --overwrite=True"):
        claim_out_dir(str(out), resume=False, overwrite=False, master=True)
    claim_out_dir(str(out), resume=True, overwrite=False, master=False)    # other ranks leave the files alone
    assert (out / ".ckpt-abc.tmp").exists()
    claim_out_dir(str(out), resume=True, overwrite=False, master=True)
    assert sorted(os.listdir(out)) == ["ckpt.pt", "final.json", "log.jsonl"]   # the stale temp file is gone
    claim_out_dir(str(out), resume=False, overwrite=True, master=True)
    assert os.listdir(out) == []


def test_a_resumed_log_drops_what_is_redone_and_marks_the_resume(tmp_path):
    lines = [{"step": s, "loss": 1.0} for s in range(1, 13)] + [{"step": 10, "eval": {"val": 2.0}}]
    lines.sort(key=lambda e: (e["step"], "eval" in e))
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"step": 13, "lo')
    log = RunLog(str(tmp_path), {}, True, resumed_from=10)
    log.record({"step": 10, "eval": {"val": 2.5}})
    log.record({"step": 11, "loss": 0.5})
    log.finish()
    got = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert got == ([{"step": s, "loss": 1.0} for s in range(1, 11)] + [{"step": 10, "resumed": True},
                   {"step": 10, "eval": {"val": 2.5}}, {"step": 11, "loss": 0.5}])
    RunLog(str(tmp_path), {}, True).finish()   # a run from the start begins a fresh log
    assert (tmp_path / "log.jsonl").read_text() == ""


def test_data_files_are_checked_at_start_up_and_the_right_file_is_blamed(tmp_path):
    import numpy as np
    from data.tokenfile import write_tokens
    from settings import check_data_files
    tokens = np.arange(5000) % 257
    write_tokens(tmp_path / "train.bin", tokens, 300, "bytes")   # a header with another vocabulary than bytes'
    write_tokens(tmp_path / "val.bin", tokens, 257, "bytes")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'train.bin'}: its header says vocabulary 300, but "
                                         r"tokenizer 'bytes' has 257"):
        check_data_files(str(tmp_path), "bytes", 300, 0.0)
    write_tokens(tmp_path / "train.bin", tokens, 257, "bytes")
    write_tokens(tmp_path / "ood_x.bin", tokens, 300, "bytes")      # an evaluation file that does not match
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'ood_x.bin'} was written with tokenizer 'bytes' \(vocab 300\)"):
        check_data_files(str(tmp_path), "bytes", 257, 0.0)
    (tmp_path / "ood_x.bin").unlink()
    check_data_files(str(tmp_path), "bytes", 257, 0.5)
    with pytest.raises(ValueError, match="keeps no token"):
        check_data_files(str(tmp_path), "bytes", 257, 0.001)
