"""
A teacher someone already has, end to end: a Hugging Face Llama folder (made here with transformers, with a
tokenizer.json trained here with `tokenizers`) given as --teacher_ckpt, data prepared with that tokenizer,
a KD run through train.py that trains, resumes and evaluates; the tokenizer travels with the checkpoint, so
eval.py needs nothing else once the teacher's folder is gone.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from checkpoint import load_checkpoint
from data.hf_tokenizer import load_hf_tokenizer
from data.prepare_embedded import tokenize_docs
from data.tokenfile import write_tokens
from test_hf_import import save_hf, tokenizer_folder, train_tokenizer
from test_train import ROOT, curve, train

pytestmark = pytest.mark.slow


def test_kd_from_a_hugging_face_folder_trains_resumes_and_evaluates(tmp_path):
    teacher = tmp_path / "teacher"
    tok = load_hf_tokenizer(tokenizer_folder(teacher, train_tokenizer(vocab_size=300), bos_template=True))
    save_hf(teacher, "llama", num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0)
    import pydoc_data.topics as topics
    docs = list(topics.topics.values())
    data = tmp_path / "data"
    os.makedirs(data)
    write_tokens(data / "train.bin", tokenize_docs(tok, docs[:-10]), tok.n_vocab, tok.name)
    write_tokens(data / "val.bin", tokenize_docs(tok, docs[-10:]), tok.n_vocab, tok.name)

    out = tmp_path / "student"
    common = ["--model=tiny-64", "--block_size=32", "--batch_size=4", "--batch_tokens=128", "--eval_iters=2",
              "--device=cpu", "--tokenizer=hf", f"--data_dir={data}", f"--teacher_ckpt={teacher}", "--alpha=0.5",
              f"--out_dir={out}", "--eval_interval=3"]
    # stopped (SIGTERM after step 2: it finishes step 3 and checkpoints), then resumed with the same settings
    proc = train(*common, "--max_iters=5", expect_ok=False, env_extra={"NANOKD_TEST_SIGNAL": "SIGTERM@2"})
    assert proc.returncode == 143 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    log = curve(out)
    assert sorted(log) == [1, 2, 3] and all(log[s]["kd"] > 0 for s in log)   # a real teacher signal
    ck = load_checkpoint(str(out / "ckpt.pt"))
    assert ck["tokenizer"] == tok.name and ck["n_vocab"] == tok.n_vocab and ck["tokenizer_state"]

    proc = train(*common, "--max_iters=5", "--resume=True")
    assert f"at step 3 " in proc.stdout, proc.stdout[-2000:]
    assert sorted(curve(out)) == [1, 2, 3, 4, 5]

    shutil.rmtree(teacher)   # eval.py must need nothing but the student's checkpoint
    proc = subprocess.run([sys.executable, "eval.py", f"--ckpt={out / 'ckpt.pt'}", "--tasks=val", "--device=cpu",
                           f"--data_dir={data}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.load(open(out / "eval.json"))
    assert result["tasks"]["val"]["loss"] > 0 and torch.isfinite(torch.tensor(result["tasks"]["val"]["loss"]))
