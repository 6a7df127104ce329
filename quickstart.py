"""
The whole idea in one command, on a laptop CPU (about 10–15 minutes on 2 cores):

    python quickstart.py

1. prepares the embedded corpus (Wikipedia in-domain; Python docs and news as OOD), byte-level;
2. trains a tiny teacher (configs/tiny_teacher.py) — smaller and weaker than the student;
3. trains the larger tiny student with KD from it (configs/tiny_student.py, α=0.3), and
4. the same student without a teacher (the baseline), same seed and data, side by side with 3;
5. prints their in-domain and out-of-distribution validation losses side by side.

Runs that already finished (out/<run>/final.json exists) are not redone; pass --force to redo.
Extra arguments go to every train.py call, e.g. `python quickstart.py --max_iters=50`.
"""

import csv
import json
import os
import subprocess
import sys
import time

from configurator import read_config_file

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = [  # (name, config, extra args)
    ("teacher", "configs/tiny_teacher.py", []),
    ("student + KD", "configs/tiny_student.py", []),
    ("student, no KD", "configs/tiny_student.py", ["--alpha=0.0", "--teacher_ckpt=", "--out_dir=out/tiny_baseline"]),
]


def out_dir_of(config, extra):
    for arg in extra:
        if arg.startswith("--out_dir="):
            return arg.split("=", 1)[1]
    return read_config_file(os.path.join(HERE, config))["out_dir"]


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=HERE, check=True)


def run_side_by_side(cmds, logs):
    """Two CPU-bound runs at once, one thread each: on 2 cores that beats running them one after the other."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for cmd, log in zip(cmds, logs):
        os.makedirs(os.path.dirname(log), exist_ok=True)
        print("$ " + " ".join(cmd) + f"   > {os.path.relpath(log, HERE)}", flush=True)
        procs.append(subprocess.Popen(cmd, cwd=HERE, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT))
    while any(p.poll() is None for p in procs):
        time.sleep(30)
        for log in logs:  # progress: the newest step line of each run
            lines = [line for line in open(log).read().splitlines() if line.startswith(("step", "final"))]
            if lines:
                print(f"  {os.path.relpath(os.path.dirname(log), HERE)}: {lines[-1]}", flush=True)
    for cmd, p, log in zip(cmds, procs, logs):
        if p.returncode != 0:
            sys.exit(f"quickstart: {' '.join(cmd)} failed; see {log}")


def main():
    force = "--force" in sys.argv
    passthrough = [a for a in sys.argv[1:] if a != "--force"]
    t0 = time.time()
    run([sys.executable, "data/prepare_embedded.py", "--tokenizer", "bytes"])
    finals = {name: os.path.join(HERE, out_dir_of(config, extra), "final.json") for name, config, extra in RUNS}
    # (a run redone starts over: --overwrite=True replaces whatever an earlier, maybe interrupted, one left)
    todo = [(name, [sys.executable, "train.py", config, *extra, "--overwrite=True", *passthrough])
            for name, config, extra in RUNS
            if force or passthrough or not os.path.exists(finals[name])]
    for name in finals:
        if name not in dict(todo):
            print(f"{name}: already trained ({finals[name]})")
    if todo and todo[0][0] == "teacher":  # the students need it
        run(todo.pop(0)[1])
    if todo:
        run_side_by_side([cmd for _, cmd in todo],
                         [os.path.join(os.path.dirname(finals[name]), "train.log") for name, _ in todo])
    results = {}
    for name, final in finals.items():
        with open(final) as f:
            results[name] = json.load(f)["eval"]

    splits = list(results["teacher"])
    print(f"\nvalidation loss, nats per byte (lower is better) — {(time.time() - t0) / 60:.1f} min in all")
    print(f"{'model':16s}" + "".join(f"{s:>14s}" for s in splits))
    for name, ev in results.items():
        print(f"{name:16s}" + "".join(f"{ev[s]:14.4f}" for s in splits))
    gain = {s: results["student, no KD"][s] - results["student + KD"][s] for s in splits}
    print(f"{'KD gain':16s}" + "".join(f"{gain[s]:+14.4f}" for s in splits))
    print("(val = in-domain Wikipedia; ood_* = other domains. A positive gain means KD from the smaller teacher helped.)")
    spread = laptop_seed_spread()
    if spread:
        mean, worst, n = spread
        print(f"Is +{gain['val']:.3f} real? Two seeds of the same run differ in their in-domain KD gain by {mean:.3f} on "
              f"average (up to {worst:.3f}; {n} runs of the laptop grid, docs/laptop/results.csv): a gain well above "
              f"that is KD, one within it may be run-to-run variation.")


def laptop_seed_spread():
    """(mean, max, count) of |gain(seed 43) − gain(seed 44)| in-domain over the laptop grid's runs with both seeds."""
    path = os.path.join(HERE, "docs", "laptop", "results.csv")
    if not os.path.exists(path):
        return None
    by_run = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["kind"] == "student" and row["gain_val"]:
                by_run.setdefault((row["teacher"], row["alpha"], row["variant"]), []).append(float(row["gain_val"]))
    diffs = [abs(g[0] - g[1]) for g in by_run.values() if len(g) == 2]
    return (sum(diffs) / len(diffs), max(diffs), len(diffs)) if diffs else None


if __name__ == "__main__":
    main()
