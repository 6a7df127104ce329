"""
The README's GPU-hour table: every run of the paper's grids costed from its FLOPs (model.flops_per_token: PaLM's
count, attention over the full row square) at 40% MFU of an H100's 989 bf16 TFLOP/s. A student's cost includes its
teacher's forward passes. Runs that several grids name (same out_dir) are counted once in the total.

    python bench/gpu_hours.py

Packed rows attend within documents only; without FineWeb-Edu's document lengths here (data_dir/doc_lengths.json,
which prepare_fineweb.py writes) attention is counted over full rows, an upper bound.
"""

import glob
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configurator import read_config_file  # noqa: E402
from model import GPT, config_from_preset  # noqa: E402
from plan import attention_under_packing, preset_vocab  # noqa: E402
from sweep import expand, load_grid  # noqa: E402

MFU, PEAK = 0.40, 989e12


def model_of(preset, rows, T):
    with torch.device("meta"):
        return GPT(config_from_preset(preset, rows, T))


def run_hours(run):
    c = {"packing": False, "vocab_rows": 0, "teacher_model": "", "max_iters": 0,
         **read_config_file(run["config"]), **run["overrides"]}
    T, tokens = c["block_size"], c["batch_tokens"]
    steps = c["max_iters"] or c["train_tokens"] // tokens
    rows = c["vocab_rows"] or preset_vocab(c["model"])
    share, _ = attention_under_packing(c)
    flops = model_of(c["model"], rows, T).flops_per_token(T, attention_share=share)
    if c.get("alpha", 0) > 0 and c["teacher_model"]:
        flops += model_of(c["teacher_model"], rows, T).flops_per_token(T, backward=False, attention_share=share)
    return steps * tokens * flops / (MFU * PEAK) / 3600


if __name__ == "__main__":
    every = {}
    for path in sorted(glob.glob("configs/grids/paper_*.py")):
        runs = {r["out_dir"]: run_hours(r) for r in expand(load_grid(path))}
        every.update(runs)
        teachers = sum(h for d, h in runs.items() if "/teacher_" in d)
        print(f"{os.path.basename(path):28s} {len(runs):4d} runs {sum(runs.values()):>10,.0f} GPU-hours "
              f"(teachers {teachers:,.0f})")
    print(f"{'every paper grid':28s} {len(every):4d} runs {sum(every.values()):>10,.0f} GPU-hours")
    for cfg in ("teacher_0.7b", "teacher_1.7b", "teacher_3.8b", "teacher_8b", "student_1.7b"):
        run = {"config": f"configs/paper/{cfg}.py", "overrides": {}}
        print(f"{cfg:28s} {run_hours(run):>10,.0f} GPU-hours (its config as it is)")
    for t in ("llama3.1-05b", "llama3.1-1b", "llama3.1-3b", "llama3.1-8b"):
        run = {"config": "configs/paper/student_1.7b.py", "overrides": {"teacher_model": t}}
        print(f"student_1.7b, KD from {t:12s} {run_hours(run):>10,.0f} GPU-hours")
    run = {"config": "configs/paper/student_1.7b.py", "overrides": {"alpha": 0.0}}
    print(f"student_1.7b, no KD {run_hours(run):>18,.0f} GPU-hours")
