"""
How much does quickstart.py's KD gain move from one seed to the next? Runs the quickstart (teacher, KD student,
baseline) at its own settings for several seed pairs, the teacher reseeded with the students, and writes the
per-seed gains and their spread (max − min per split) to docs/quickstart_spread.json, which quickstart.py prints
beside its gain. Commit that file with any change to configs/tiny_teacher.py or tiny_student.py.

    python quickstart_spread.py              # 3 seed pairs: teacher 42/43/44, students 43/44/45 (~30 min on 2 cores)
    python quickstart_spread.py --seeds=5

Runs go to out/quickstart_spread/seed<k>/ and are reused when finished (delete them to redo).
"""

import json
import os
import platform
import sys
import time

import torch

import quickstart

OUT = os.path.join("out", "quickstart_spread")


def spread_of(gains):
    """{split: max − min} over per-seed gain dicts."""
    return {s: max(g[s] for g in gains) - min(g[s] for g in gains) for s in gains[0]}


def runs_named(run_lists, names):
    """(command, log, final.json) of the named runs of every seed pair."""
    out = []
    for run_list in run_lists:
        for name, config, extra in run_list:
            if name in names:
                d = os.path.join(quickstart.HERE, quickstart.out_dir_of(config, extra))
                out.append(([sys.executable, "train.py", config, *extra, "--overwrite=True"], os.path.join(d, "train.log"),
                            os.path.join(d, "final.json")))
    return out


def main():
    n_seeds = 3
    for arg in sys.argv[1:]:
        if not arg.startswith("--seeds="):
            sys.exit(f"quickstart_spread.py: unknown argument {arg!r}; usage: python quickstart_spread.py [--seeds=N]")
        n_seeds = int(arg.split("=", 1)[1])
    if n_seeds < 3:
        sys.exit(f"quickstart_spread.py: --seeds={n_seeds}; a spread needs at least 3 seed pairs")
    t0 = time.time()
    quickstart.run([sys.executable, "data/prepare_embedded.py", "--tokenizer", "bytes"])
    run_lists = [quickstart.runs(k, root=os.path.join(OUT, f"seed{k}")) for k in range(n_seeds)]
    # every seed's teacher at once, then every student at once, one thread each: on a few cores this takes as
    # long as one after the other, and a machine with more cores finishes sooner
    for names in (("teacher",), ("student + KD", "student, no KD")):
        todo = [(cmd, log) for cmd, log, final in runs_named(run_lists, names) if not os.path.exists(final)]
        if todo:
            quickstart.run_side_by_side(*zip(*todo))
    seeds = []
    t_seed, s_seed = (quickstart.read_config_file(os.path.join(quickstart.HERE, c))["seed"]
                      for c in (quickstart.TEACHER_CONFIG, quickstart.STUDENT_CONFIG))
    for k, run_list in enumerate(run_lists):
        results = quickstart.train_all(run_list)   # all finished: this reads their final.json
        seeds.append({"teacher_seed": t_seed + k, "student_seed": s_seed + k, "eval": results,
                      "gain": quickstart.kd_gain(results)})
        print(f"seed pair {k}: KD gain " + " | ".join(f"{s} {g:+.4f}" for s, g in seeds[-1]["gain"].items()), flush=True)
    gains = [s["gain"] for s in seeds]
    out = {"settings": quickstart.settings(), "seeds": seeds, "spread": spread_of(gains),
           "mean_gain": {s: sum(g[s] for g in gains) / len(gains) for s in gains[0]},
           "min_gain": {s: min(g[s] for g in gains) for s in gains[0]},
           "measured_on": {"machine": platform.machine(), "processor": platform.processor(),
                           "cpus": os.cpu_count(), "torch": torch.__version__,
                           "threads": "1 per run, all seeds' teachers side by side, then all students"},
           "minutes": round((time.time() - t0) / 60, 1)}
    path = os.path.join(quickstart.HERE, quickstart.SPREAD_FILE)
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(f"{'split':12s}{'min gain':>10s}{'mean gain':>11s}{'spread':>9s}{'min/spread':>12s}")
    for s in out["spread"]:
        print(f"{s:12s}{out['min_gain'][s]:+10.4f}{out['mean_gain'][s]:+11.4f}{out['spread'][s]:9.4f}"
              f"{out['min_gain'][s] / out['spread'][s]:11.1f}x")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
