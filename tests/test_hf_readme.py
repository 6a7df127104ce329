"""
README's "Distill from a model you already have", run as written: the commands are read from the README's
code block, pointed at a tiny Llama folder made here (transformers' save_pretrained, a tokenizer.json trained
with `tokenizers`), shrunk with a few trailing overrides (tiny models, 3 steps, one eval batch), and run in
order: prepare the data with the teacher's tokenizer, score the teacher, train the no-teacher baseline and the
KD student, evaluate both, export. `hf download` is replaced by the folder made here; the sample.py line runs
when sample.py exists.
"""

import json
import os
import shlex
import subprocess
import sys

import pytest
import torch

from checkpoint import load_checkpoint, model_from_checkpoint
from data.hf_tokenizer import load_hf_tokenizer
from test_hf_import import save_hf, tokenizer_folder, train_tokenizer
from test_train import ROOT, curve

pytestmark = pytest.mark.slow
SHRINK = {"train.py": ["--model=tiny-64", "--block_size=32", "--batch_size=4", "--batch_tokens=128", "--max_iters=3",
                       "--eval_iters=1", "--eval_interval=100", "--device=cpu"],
          "eval.py": ["--tasks=loss", "--max_batches=1", "--batch_size=4", "--device=cpu"],
          "sample.py": ["--max_new_tokens=8", "--device=cpu"]}


def readme_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = text.split("## Distill from a model you already have", 1)[1].split("```", 2)[1]
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_sequence_on_a_folder_made_here(tmp_path):
    teacher = tmp_path / "models" / "teacher"
    tok = load_hf_tokenizer(tokenizer_folder(teacher, train_tokenizer(vocab_size=300), bos_template=True))
    save_hf(teacher, "llama", num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0)
    places = {"models/SmolLM2-135M": str(teacher), "data/smol": str(tmp_path / "data"),
              "out/": str(tmp_path / "out") + "/", "hf/": str(tmp_path / "hf") + "/"}

    def place(arg):   # the README's paths, moved here (a value after '=' too)
        key, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        for old, new in places.items():
            if value.startswith(old):
                return key + eq + new + value[len(old):]
        return arg

    commands = readme_commands()
    assert [c[:2] for c in commands] == [["hf", "download"], ["python", "data/prepare_embedded.py"],
                                         ["python", "eval.py"], ["python", "train.py"], ["python", "train.py"],
                                         ["python", "eval.py"], ["python", "eval.py"], ["python", "export.py"],
                                         ["python", "sample.py"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd in commands[1:]:
        script = cmd[1]
        if script == "sample.py" and not os.path.exists(os.path.join(ROOT, "sample.py")):
            continue
        argv = [place(a) for a in cmd[2:]] + SHRINK.get(script, [])
        proc = subprocess.run([sys.executable, script, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"

    out = tmp_path / "out"
    base, kd = load_checkpoint(str(out / "smol_baseline" / "ckpt.pt")), load_checkpoint(str(out / "smol_kd" / "ckpt.pt"))
    for ck in (base, kd):   # each carries the teacher's tokenizer: eval and export needed nothing else
        assert ck["tokenizer"] == tok.name and ck["tokenizer_state"] == tok.state()
    assert all(r["kd"] > 0 for r in curve(out / "smol_kd").values())           # a real teacher signal
    assert all(r["kd"] == 0 for r in curve(out / "smol_baseline").values())    # and none in the baseline
    results = [json.loads(p.read_text()) for p in
               (out / "smol_teacher.json", out / "smol_baseline" / "eval.json", out / "smol_kd" / "eval.json")]
    assert [sorted(r["tasks"]) for r in results] == [["ood_news", "ood_pydocs", "val"]] * 3   # the same splits
    assert {r["tokenizer"] for r in results} == {tok.name} and len({tuple(sorted(r)) for r in results}) == 1

    from transformers import AutoModelForCausalLM, AutoTokenizer
    hf = tmp_path / "hf" / "smol_kd"
    assert AutoTokenizer.from_pretrained(hf).model_max_length == 32   # the student's context, not the teacher's
    theirs = AutoModelForCausalLM.from_pretrained(hf, attn_implementation="eager").eval()
    ours = model_from_checkpoint(kd)
    x = torch.tensor([tok.encode("def forward(self, x):\n    return x")[:32]])
    with torch.no_grad():
        err = (theirs(x).logits - ours.logits(x)[..., :tok.n_vocab]).abs().max().item()
    assert err <= 1e-4   # as tests/test_hf_import.py: fp32, summation order only
