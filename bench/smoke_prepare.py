"""
The inputs of bench/gpu_check.sh's training smoke run, made on a CPU before a GPU is lent (so none of its
minutes go to them): byte-level token files from Python's own docs (train, val, one OOD split) and a tiny
teacher checkpoint trained on them for a few steps. About 10 s.

    python bench/smoke_prepare.py bench/smoke_inputs      # then carry bench/smoke_inputs to the GPU machine
"""

import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from data.tokenfile import write_tokens  # noqa: E402

TEACHER = ["--model=tiny-64", "--block_size=64", "--batch_size=8", "--batch_tokens=512", "--max_iters=8",
           "--eval_interval=1000", "--eval_iters=2", "--device=cpu", "--seed=42", "--learning_rate=3e-3"]


def prepare(out):
    data = os.path.join(out, "data")
    os.makedirs(data, exist_ok=True)
    import pydoc_data.topics as topics   # in every CPython: the same bytes everywhere
    text = "\n".join(topics.topics.values()).encode("utf-8")
    toks = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
    write_tokens(os.path.join(data, "train.bin"), toks[:200_000], 257, "bytes")
    write_tokens(os.path.join(data, "val.bin"), toks[200_000:230_000], 257, "bytes")
    news = np.frombuffer(("The markets rose today as investors weighed the news. " * 400).encode(), dtype=np.uint8)
    write_tokens(os.path.join(data, "ood_news.bin"), news.astype(np.int64), 257, "bytes")
    teacher = os.path.join(out, "teacher")
    subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *TEACHER, f"--data_dir={data}",
                    f"--out_dir={teacher}"], check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL)
    return data, os.path.join(teacher, "ckpt.pt")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    data, teacher = prepare(sys.argv[1])
    print(f"wrote {data} and {teacher}")
