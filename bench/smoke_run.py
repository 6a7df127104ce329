"""
bench/gpu_check.sh's training smoke run: train.py under torchrun with one process, as a real run starts it,
through everything a first GPU run can break: FSDP (student sharded, built on the meta device), then DDP, each
with the fused loss and a teacher, torch.compile, checkpoints, a resume (FSDP's sharded checkpoint), eval.py on
the result and a clean exit. Each run's final.json gives torch.cuda.max_memory_allocated beside plan.py's
estimate. Inputs from bench/smoke_prepare.py (made on a CPU beforehand). Writes one JSON.

    python bench/smoke_run.py --inputs bench/smoke_inputs --out /tmp/smoke.json                # GPU
    python bench/smoke_run.py --inputs /tmp/si --out /tmp/smoke.json --device=cpu --compile=False   # DRY=1
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", required=True, help="bench/smoke_prepare.py's folder")
    ap.add_argument("--out", required=True, help="the JSON to write")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--compile", default="True", choices=("True", "False"))
    ap.add_argument("--model", default="gpt2-20m", help="the student preset")
    ap.add_argument("--work", default=None, help="run folders (default: beside --out)")
    args = ap.parse_args()
    work = args.work or os.path.splitext(args.out)[0] + "_runs"
    data, teacher = os.path.join(args.inputs, "data"), os.path.join(args.inputs, "teacher", "ckpt.pt")
    common = [f"--model={args.model}", "--block_size=64", "--batch_size=8", "--batch_tokens=512", "--eval_interval=10",
              "--eval_iters=2", "--log_interval=5", f"--device={args.device}", f"--compile={args.compile}",
              f"--data_dir={data}", f"--teacher_ckpt={teacher}", "--teacher_model=tiny-64", "--alpha=0.5",
              "--loss_impl=fused", "--learning_rate=1e-3"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4")}
    steps, result = [], {"device": args.device, "compile": args.compile == "True", "model": args.model, "runs": {}}

    def run(name, cmd, stops=False, extra_env=None):
        """stops: the run is to stop itself on a SIGTERM (torchrun then reports the child's 143 as its own
        failure), so success is train.py saying it stopped and checkpointed."""
        t0 = time.time()
        p = subprocess.run(cmd, cwd=ROOT, env={**env, **(extra_env or {})}, capture_output=True, text=True)
        ok = (p.returncode == 0 if not stops else
              p.returncode != 0 and "stopped by signal at step" in p.stdout + p.stderr)
        rec = {"name": name, "rc": p.returncode, "ok": ok, "seconds": round(time.time() - t0, 1),
               "tail": (p.stdout + p.stderr)[-1500:]}
        steps.append(rec)
        print(f"== smoke {name}: rc {p.returncode}, {rec['seconds']}s", flush=True)
        if not rec["ok"]:
            print(rec["tail"], flush=True)
        return rec["ok"]

    for parallel in ("fsdp", "ddp"):
        out = os.path.join(work, parallel)
        if parallel == "fsdp":   # stopped after step 20 as a scheduler would (SIGTERM: checkpoint, exit 143), resumed to 30
            ok = run("fsdp train", [*torchrun, "train.py", *common, "--parallel=fsdp", "--max_iters=30",
                                    f"--out_dir={out}"], stops=True, extra_env={"NANOKD_TEST_SIGNAL": "SIGTERM@20"})
            ok = ok and run("fsdp resume", [*torchrun, "train.py", *common, "--parallel=fsdp", "--max_iters=30",
                                            "--resume=True", f"--out_dir={out}"])
        else:
            ok = run(f"{parallel} train", [*torchrun, "train.py", *common, f"--parallel={parallel}", "--max_iters=20",
                                           f"--out_dir={out}"])
        if ok:
            run(f"{parallel} eval", [sys.executable, "eval.py", "--ckpt", os.path.join(out, "ckpt.pt"),
                                     f"--device={args.device}", "--tasks", "loss", "--max_batches=2",
                                     "--out", os.path.join(out, "eval.json")])
        try:
            final = json.load(open(os.path.join(out, "final.json")))
        except (OSError, ValueError):
            final = None
        result["runs"][parallel] = final and {k: final.get(k) for k in ("step", "train_loss", "eval", "peak_memory_bytes",
                                                                       "plan_memory_bytes", "minutes")}
    result["steps"] = steps
    result["ok"] = all(s["ok"] for s in steps) and len(steps) == 5
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    json.dump(result, open(args.out, "w"), indent=1)
    for parallel, r in result["runs"].items():
        if r and r.get("peak_memory_bytes"):
            print(f"   {parallel}: peak {r['peak_memory_bytes'] / 2**30:.2f} GiB allocated, "
                  f"plan.py {r['plan_memory_bytes'] / 2**30:.2f} GiB")
    print(f"wrote {args.out}")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
