"""
Run a grid of distillation experiments: teachers first, then their students, then
evaluation; then gather every run's numbers into one table and draw the paper's
kinds of figure (sweep_report.py, sweep_plots.py).

    python sweep.py configs/grids/laptop.py                  # run what is not done yet, here
    python sweep.py configs/grids/laptop.py --jobs 2         # two runs at a time (CPU: cores/jobs threads each)
    python sweep.py configs/grids/laptop.py --dry            # list runs, status and commands; run nothing
    python sweep.py configs/grids/laptop.py --only t96,noKD  # runs whose name contains one of these (+ their teachers)
    python sweep.py configs/grids/paper_size_alpha.py --slurm slurm/size_alpha   # sbatch scripts + submit.sh
    python sweep.py configs/grids/laptop.py --report [--report_dir docs/laptop]  # table + figures from what is done
    python sweep.py GRID --torchrun 8                        # local runs under torchrun on one 8-GPU box

A run is done when its out_dir holds final.json (train.py writes it last) and one
eval_<key>.json per entry of the grid's `evals` (eval.py's output, renamed into place
only after eval.py succeeds). Anything else is redone: training with --resume=True,
so an interrupted run continues from its last checkpoint. So a sweep that was
stopped (Ctrl-C / kill: children get SIGTERM and checkpoint) resumes by running the
same command again, and a finished one costs nothing to rerun.

A grid is a Python file that sets some of these names (only `students` is required):

    name      = "laptop"             # runs go to <out_root>/<name>/<run>; default: the file's name
    out_root  = "out"
    common    = dict(device="cpu")   # train.py overrides for every run
    teachers  = {"t96": dict(config="configs/tiny_teacher.py", train_tokens=1_000_000),
                 "smol": dict(hf="models/SmolLM2-135M")}   # a Hugging Face folder: evaluated, not trained
    students  = {"s128": dict(config="configs/tiny_student.py")}
    pairs     = [("t96", "s128")]    # default: every teacher with every student
    alphas    = [0.1, 0.3, 1.0]      # or per teacher: {"t96": [0.1, 0.3], ...}
    seeds     = [43, 44]             # student seeds (teachers keep their config's seed)
    variants  = {"": {}}             # named override sets crossed with every KD run, e.g. {"T2": dict(temperature=2.0)}
    caches    = {"top16": dict(method="top-k", k=16, train=dict(top_k=16))}   # teacher_cache.py settings (+ the
                                     # train.py options its students add): each teacher runs once into
                                     # cache_<t>_<c>, and every KD run of that teacher is repeated from it,
                                     # named <s>_<t>_a<α>_<c>[_<variant>]_s<seed>, no teacher model loaded
    baselines = {"": {}}             # no-teacher runs per student and seed: "" = plain LM training,
                                     # e.g. {"ls0.1": dict(label_smoothing=0.1)} for the smoothing control; {} = none
    evals     = {"loss": "--tasks loss"}   # eval.py arguments; each writes <run>/eval_<key>.json
    def include(run): ...            # optional filter over student runs: run has student, teacher ("" for
                                     # baselines), alpha, seed, variant; return False to leave it out
    slurm     = dict(nodes=1, gpus_per_node=8, time="24:00:00", partition="", account="", setup=[...])
    report_dir = "out/<name>/report"

Each teacher/student entry is a config file plus train.py overrides; an optional
"slurm" dict in it overrides the grid's slurm settings for that run (e.g. more nodes
for a big teacher). Run names: teacher_<t>, <s>_<t>_a<α>[_<variant>]_s<seed>,
<s>_noKD[_<baseline>]_s<seed>.
"""

import argparse
import ast
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time

from configurator import read_config_file
from sweep_report import collect, eval_path, read_json, write_report  # noqa: F401 (the report, its own file)

REPO = os.path.dirname(os.path.abspath(__file__))
GRID_KEYS = {"name", "out_root", "common", "teachers", "students", "pairs", "alphas", "seeds", "variants", "caches",
             "baselines", "evals", "include", "slurm", "report_dir"}
# the grid's common settings a teacher cache takes too (they decide which windows and targets it holds)
CACHE_COMMON = ("data_dir", "tokenizer", "tokenizer_path", "block_size", "packing", "temperature", "device")
SLURM_DEFAULTS = dict(nodes=1, gpus_per_node=8, cpus_per_task=64, time="24:00:00", partition="", account="",
                      setup=[], extra=[], port=29500, signal_before_end_s=300)


class GridError(ValueError):
    pass


# Names become folders, job names and words in shell scripts: letters, digits and . _ + - only, not leading
# with a dot or dash (so no "..", no option, no quote, no $( ), no /).
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
SLURM_WORD = re.compile(r"[A-Za-z0-9_.:,+-]*")   # time, partition, account: e.g. 1-00:00:00, gpu,a100


def check_names(grid, path):
    """Every name a grid gives (its own, teachers, students, variants, baselines, evals) is a safe name; ""
    stays allowed where it means "none" (the plain variant or baseline)."""
    named = [("name", grid["name"])]
    for key in ("teachers", "students", "variants", "baselines", "evals", "caches"):
        named += [(key, n) for n in grid.get(key, {}) if not (n == "" and key in ("variants", "baselines"))]
    for key, n in named:
        if not isinstance(n, str) or not SAFE_NAME.fullmatch(n):
            raise GridError(f"{path}: {key} name {n!r} is not allowed: names may hold letters, digits and . _ + - "
                            f"(not first: . or -); they become folders, job names and words in shell scripts")


def check_slurm(name, slurm):
    for key in ("nodes", "gpus_per_node", "cpus_per_task", "port", "signal_before_end_s"):
        if not isinstance(slurm[key], int) or isinstance(slurm[key], bool) or slurm[key] < 1:
            raise GridError(f"{name}: slurm {key}={slurm[key]!r}; allowed: an integer >= 1")
    for key in ("time", "partition", "account"):
        if not isinstance(slurm[key], str) or not SLURM_WORD.fullmatch(slurm[key]):
            raise GridError(f"{name}: slurm {key}={slurm[key]!r}; allowed: letters, digits and . _ : , + -")
    for key in ("setup", "extra"):   # setup: shell lines the grid's author writes on purpose; one line each
        if not all(isinstance(line, str) and "\n" not in line and "\r" not in line for line in slurm[key]):
            raise GridError(f"{name}: slurm {key}={slurm[key]!r}; allowed: a list of one-line strings")


# ---- the grid ------------------------------------------------------------------------------------

def load_grid(path):
    grid = read_config_file(path)
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise GridError(f"{path}: unknown grid setting(s) {', '.join(sorted(unknown))}; "
                        f"valid: {', '.join(sorted(GRID_KEYS))}")
    if not grid.get("students"):
        raise GridError(f"{path}: a grid needs `students`")
    grid.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    check_names(grid, path)
    return grid


def cli_arg(key, value):
    """--key=value as train.py's configurator reads it back: literals as Python literals, plain strings bare
    (a string that would read as something else, e.g. "True", is quoted so it stays a string)."""
    if isinstance(value, str):
        try:
            ast.literal_eval(value)
            text = repr(value)
        except (ValueError, SyntaxError):
            text = value
    else:
        text = repr(value)
    return f"--{key}={text}"


def expand(grid, out_root=None):
    """The grid as a list of runs, teachers first. A run is a dict: name, kind, config, overrides (for train.py,
    out_dir included), out_dir, deps (teacher run names), slurm, and what the report needs (student, teacher,
    alpha, seed, variant, model)."""
    root = os.path.join(out_root or grid.get("out_root", "out"), grid["name"])
    config_cache = {}

    def from_config(path, key, default=None):
        if path not in config_cache:
            if not os.path.exists(os.path.join(REPO, path)) and not os.path.exists(path):
                raise GridError(f"config file {path} does not exist")
            config_cache[path] = read_config_file(path if os.path.exists(path) else os.path.join(REPO, path))
        return config_cache[path].get(key, default)

    def make(name, kind, entry, extra, **meta):
        entry = dict(entry)
        if "config" not in entry:
            raise GridError(f"{name}: every teacher/student entry needs a `config` file")
        config = entry.pop("config")
        if "out_dir" in entry:
            raise GridError(f"{name}: runs live in <out_root>/<name>/<run>; set the grid's name/out_root, not out_dir")
        slurm = {**SLURM_DEFAULTS, **grid.get("slurm", {}), **entry.pop("slurm", {})}
        check_slurm(name, slurm)
        out_dir = os.path.join(root, name)
        overrides = {**grid.get("common", {}), **entry, **extra, "out_dir": out_dir}
        model = overrides.get("model") or from_config(config, "model", "tiny-128")
        meta.setdefault("seed", overrides.get("seed", from_config(config, "seed", 43)))
        return dict(name=name, kind=kind, config=config, overrides=overrides, out_dir=out_dir, slurm=slurm,
                    model=model, deps=[], **meta)

    def hf_teacher(t, entry):
        """A Hugging Face folder someone already has: never trained, only evaluated like any run (its JSON gives
        the report's teacher row). Its splits are the students' data_dir."""
        name, folder = f"teacher_{t}", entry["hf"]
        if set(entry) - {"hf", "data_dir"}:
            raise GridError(f"teacher {t}: a Hugging Face teacher (hf=FOLDER) is not trained here, so it takes only "
                            f"hf and data_dir, not {', '.join(sorted(set(entry) - {'hf', 'data_dir'}))}")
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise GridError(f"teacher {t}: hf={folder!r} is not a local Hugging Face folder (no config.json); "
                            f"download it first, e.g. hf download ORG/NAME --local-dir {folder}")
        data_dir = entry.get("data_dir") or grid.get("common", {}).get("data_dir")
        if not data_dir:
            raise GridError(f"teacher {t}: hf= needs data_dir (in the entry or in common) to be evaluated on")
        return dict(name=name, kind="teacher", hf=folder, data_dir=data_dir, config="", overrides={},
                    out_dir=os.path.join(root, name), slurm={**SLURM_DEFAULTS, **grid.get("slurm", {})},
                    model=f"hf:{folder}", deps=[], student="", teacher=t, alpha=None, variant="", seed=None)

    teachers = {}
    for t, entry in grid.get("teachers", {}).items():
        teachers[t] = hf_teacher(t, entry) if "hf" in entry else make(
            f"teacher_{t}", "teacher", entry, {}, student="", teacher=t, alpha=None, variant="")
    runs = list(teachers.values())
    # caches: each teacher's targets written once (teacher_cache.py), after it is trained, before its students
    caches = {}   # (teacher, cache name) -> (the cache run, the train.py options its students add)
    for t, teacher in teachers.items():
        for c, c_entry in grid.get("caches", {}).items():
            c_entry = dict(c_entry)
            train_opts = c_entry.pop("train", {})
            out_dir = os.path.join(root, f"cache_{t}_{c}")
            common = {k: v for k, v in grid.get("common", {}).items() if k in CACHE_COMMON}
            run = dict(name=f"cache_{t}_{c}", kind="cache", config="", out_dir=out_dir, deps=[teacher["name"]],
                       overrides={**common, **c_entry, "out": out_dir,
                                  "teacher_ckpt": teacher.get("hf") or os.path.join(teacher["out_dir"], "ckpt.pt"),
                                  "teacher_model": "" if "hf" in teacher else teacher["model"]},
                       slurm={**SLURM_DEFAULTS, **grid.get("slurm", {})}, model=teacher["model"], student="",
                       teacher=t, alpha=None, variant=c, seed=None, readers=0)
            caches[(t, c)] = (run, train_opts)
            runs.append(run)

    students = grid["students"]
    pairs = grid.get("pairs") or [(t, s) for s in students for t in teachers]
    for t, s in pairs:
        if t not in teachers or s not in students:
            raise GridError(f"pair ({t!r}, {s!r}) names an unknown teacher or student")
    alphas = grid.get("alphas", [])
    variants = grid.get("variants", {"": {}})
    baselines = grid.get("baselines", {"": {}})
    include = grid.get("include", lambda run: True)
    seen = set()
    for s, s_entry in students.items():
        for seed in grid.get("seeds", [43]):
            for b, b_over in baselines.items():
                meta = dict(student=s, teacher="", alpha=0.0, seed=seed, variant=b)
                if include(dict(meta)):
                    name = f"{s}_noKD{'_' + b if b else ''}_s{seed}"
                    runs.append(make(name, "student", s_entry, {**b_over, "alpha": 0.0, "teacher_ckpt": "",
                                                                "teacher_model": "", "seed": seed}, **meta))
            for t, s2 in pairs:
                if s2 != s:
                    continue
                teacher = teachers[t]
                for alpha in (alphas.get(t, []) if isinstance(alphas, dict) else alphas):
                    for v, v_over in variants.items():
                        meta = dict(student=s, teacher=t, alpha=float(alpha), seed=seed, variant=v)
                        if not include(dict(meta)):
                            continue
                        name = f"{s}_{t}_a{alpha:g}{'_' + v if v else ''}_s{seed}"
                        r = make(name, "student", s_entry,
                                 {**v_over, "alpha": float(alpha), "seed": seed,
                                  "teacher_ckpt": teacher.get("hf") or os.path.join(teacher["out_dir"], "ckpt.pt"),
                                  "teacher_model": "" if "hf" in teacher else teacher["model"]}, **meta)
                        r["deps"] = [teacher["name"]]
                        runs.append(r)
                    for c, v, v_over in ((c, v, v_over) for c in grid.get("caches", {}) for v, v_over in variants.items()):
                        cache, train_opts = caches[(t, c)]
                        variant = c + (f"_{v}" if v else "")
                        meta = dict(student=s, teacher=t, alpha=float(alpha), seed=seed, variant=variant)
                        if not include(dict(meta)):
                            continue
                        r = make(f"{s}_{t}_a{alpha:g}_{variant}_s{seed}", "student", s_entry,
                                 {**v_over, **train_opts, "alpha": float(alpha), "seed": seed, "teacher_ckpt": "",
                                  "teacher_model": "", "teacher_cache": cache["out_dir"]}, **meta)
                        r["deps"] = [cache["name"]]
                        cache["readers"] += 1
                        runs.append(r)
    for r in runs:
        if r["name"] in seen:
            raise GridError(f"two runs are both named {r['name']}; give variants/baselines distinct names")
        seen.add(r["name"])
    return runs


def select(runs, only):
    """Runs whose name contains one of `only` (comma-separated), plus the teachers they need."""
    if not only:
        return runs
    keys = [k for k in only.split(",") if k]
    wanted = {r["name"] for r in runs if any(k in r["name"] for k in keys)}
    wanted |= {d for r in runs if r["name"] in wanted for d in r["deps"]}
    return [r for r in runs if r["name"] in wanted]


# ---- done-ness and commands -----------------------------------------------------------------------

def done_file(run):
    """What a finished run leaves last: train.py's final.json, teacher_cache.py's summary.json."""
    return os.path.join(run["out_dir"], "summary.json" if run["kind"] == "cache" else "final.json")


def train_done(run):
    """Trained: final.json (teacher_cache.py: summary.json) is there (a Hugging Face teacher is trained already)."""
    return "hf" in run or read_json(done_file(run)) is not None


def run_evals(run, evals):
    return {} if run["kind"] == "cache" else evals


def run_done(run, evals):
    return train_done(run) and all(read_json(eval_path(run, k)) is not None for k in run_evals(run, evals))


def train_args(run):
    if run["kind"] == "cache":   # (resumes by itself: shards already written are kept)
        return ["teacher_cache.py"] + [cli_arg(k, v) for k, v in run["overrides"].items()]
    return ["train.py", run["config"]] + [cli_arg(k, v) for k, v in run["overrides"].items()] + ["--resume=True"]


def eval_args(run, args, out):
    if "hf" in run:   # a folder has no run config to take data_dir from
        return ["eval.py", "--ckpt", run["hf"], "--data_dir", run["data_dir"]] + shlex.split(args) + ["--out", out]
    return ["eval.py", "--ckpt", os.path.join(run["out_dir"], "ckpt.pt")] + shlex.split(args) + ["--out", out]


# ---- local runs -----------------------------------------------------------------------------------

def fmt_min(seconds):
    return f"{seconds / 60:.1f} min"


def run_local(runs, evals, jobs=1, launcher=None, poll=0.5):
    """Run every unfinished run as subprocesses, at most `jobs` at a time, a student only once its teacher is
    trained. Each run's output goes to <out_dir>/sweep.log. Returns the names of runs that failed."""
    launcher = launcher or [sys.executable]
    env = dict(os.environ)
    # one BLAS thread pool per core: oversubscribed CPU runs are several times slower, not a little
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    by_name = {r["name"]: r for r in runs}
    todo = []
    for r in runs:
        steps = []
        if not train_done(r):
            steps.append(("train", launcher + train_args(r), None))
        for key, args in run_evals(r, evals).items():
            if read_json(eval_path(r, key)) is None:
                tmp = eval_path(r, key) + ".tmp"
                steps.append((f"eval {key}", launcher + eval_args(r, args, tmp), (tmp, eval_path(r, key))))
        if steps:
            todo.append((r, steps))
        else:
            print(f"skip {r['name']} (done)", flush=True)
    n, n_done, failed, durations = len(todo), 0, set(), []
    active = {}  # name -> dict(run, steps, proc, log, t0)
    t_start = time.time()
    print(f"sweep: {n} run(s) to do, {len(runs) - n} already done, {jobs} at a time, "
          f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}", flush=True)

    def start_step(job):
        label, cmd, _ = job["steps"][0]
        job["log"].write(f"\n$ {shlex.join(cmd)}\n")
        job["log"].flush()
        # a session of its own: a Ctrl-C at the terminal reaches the runner only, which passes on SIGTERM
        job["proc"] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=job["log"], stderr=subprocess.STDOUT,
                                       start_new_session=True)
        print(f"[{n_done}/{n} done, {len(active)} running] {job['run']['name']}: {label}", flush=True)

    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while (todo or active) and not stopping:
            for r, steps in list(todo):
                if len(active) >= jobs:
                    break
                if any(d in failed for d in r["deps"]):
                    todo.remove((r, steps))
                    failed.add(r["name"])
                    print(f"skip {r['name']}: its teacher failed", flush=True)
                    continue
                if all(train_done(by_name[d]) for d in r["deps"] if d in by_name):
                    todo.remove((r, steps))
                    os.makedirs(r["out_dir"], exist_ok=True)
                    job = dict(run=r, steps=steps, log=open(os.path.join(r["out_dir"], "sweep.log"), "a"),
                               t0=time.time())
                    active[r["name"]] = job
                    start_step(job)
            if not active and todo:  # everything left waits on a teacher that will never be trained
                for r, _ in todo:
                    failed.add(r["name"])
                    print(f"skip {r['name']}: teacher {', '.join(r['deps'])} is not trained and not in this sweep")
                todo.clear()
            time.sleep(poll)
            for name, job in list(active.items()):
                rc = job["proc"].poll()
                if rc is None:
                    continue
                label, _, rename = job["steps"].pop(0)
                if rc == 0 and rename:
                    os.replace(*rename)
                if rc != 0:
                    failed.add(name)
                    print(f"FAILED {name}: {label} exited {rc}; see {job['log'].name}", flush=True)
                elif job["steps"]:
                    start_step(job)
                    continue
                job["log"].close()
                del active[name]
                n_done += 1
                if rc == 0:
                    durations.append(time.time() - job["t0"])
                eta = statistics.mean(durations) * (n - n_done) / jobs if durations else 0  # a rough one
                took, elapsed = fmt_min(time.time() - job["t0"]), fmt_min(time.time() - t_start)
                print(f"[{n_done}/{n}] {'done' if rc == 0 else 'failed'} {name} in {took} | elapsed {elapsed} | "
                      f"ETA ~{fmt_min(eta)}", flush=True)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if active:
            # train.py checkpoints on SIGTERM and exits; a rerun continues from there
            print(f"stopping: SIGTERM to {', '.join(active)}", flush=True)
            for job in active.values():
                job["proc"].terminate()
            for job in active.values():
                try:
                    job["proc"].wait(timeout=120)
                except subprocess.TimeoutExpired:
                    job["proc"].kill()
                job["log"].close()
    if stopping:
        print(f"sweep interrupted after {fmt_min(time.time() - t_start)}; run the same command to resume", flush=True)
        sys.exit(128 + stopping[0])
    print(f"sweep finished in {fmt_min(time.time() - t_start)}: {len(durations)} run(s) done, {len(failed)} failed"
          + (f" ({', '.join(sorted(failed))})" if failed else ""), flush=True)
    return failed


# ---- Slurm ----------------------------------------------------------------------------------------

def sbatch_script(run, evals, grid_name, log_dir):
    s = run["slurm"]
    out = run["out_dir"]
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={grid_name}:{run['name']}",
             f"#SBATCH --nodes={s['nodes']}",
             "#SBATCH --ntasks-per-node=1",            # one torchrun per node; it starts the GPU processes
             f"#SBATCH --gpus-per-node={s['gpus_per_node']}",
             f"#SBATCH --cpus-per-task={s['cpus_per_task']}",
             f"#SBATCH --time={s['time']}",
             f"#SBATCH --output={log_dir}/{run['name']}-%j.out",
             # SIGTERM to the job steps before the time limit: train.py checkpoints and exits; resubmit to resume
             f"#SBATCH --signal=TERM@{s['signal_before_end_s']}"]
    lines += [f"#SBATCH --partition={s['partition']}"] * bool(s["partition"])
    lines += [f"#SBATCH --account={s['account']}"] * bool(s["account"])
    lines += [f"#SBATCH {x}" for x in s["extra"]]
    lines += ["", "set -euo pipefail", f"cd {shlex.quote(REPO)}"] + list(s["setup"])
    lines += ['head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
              f"export OMP_NUM_THREADS={max(1, s['cpus_per_task'] // s['gpus_per_node'])}", ""]
    if "hf" not in run:   # a Hugging Face teacher is only evaluated
        lines += ["# train (a rerun resumes from the run's ckpt.pt)",
                  f"if [ ! -s {shlex.quote(done_file(run))} ]; then",
                  f"  srun torchrun --nnodes=$SLURM_NNODES --nproc_per_node={s['gpus_per_node']} --rdzv-backend=c10d "
                  f"--rdzv-endpoint=$head:{s['port']} --rdzv-id=$SLURM_JOB_ID \\",
                  "    " + shlex.join(train_args(run)),
                  "fi"]
    for key, args in run_evals(run, evals).items():
        final, tmp = eval_path(run, key), eval_path(run, key) + ".tmp"
        lines += [f"# eval {key}, on one node",
                  f"if [ ! -s {shlex.quote(final)} ]; then",
                  f"  srun --nodes=1 --ntasks=1 torchrun --standalone --nproc_per_node={s['gpus_per_node']} \\",
                  "    " + shlex.join(eval_args(run, args, tmp)),
                  f"  mv {shlex.quote(tmp)} {shlex.quote(final)}",
                  "fi"]
    return "\n".join(lines) + "\n"


def write_slurm(runs, evals, grid_name, slurm_dir):
    """One sbatch script per run and submit.sh, which submits teachers first and each student with
    --dependency=afterok on its teacher's job. Runs already complete are skipped at submit time, so rerunning
    submit.sh resumes a grid."""
    slurm_dir = os.path.abspath(slurm_dir)
    if any(c.isspace() for c in slurm_dir):   # it goes into #SBATCH --output=, which sbatch splits at spaces
        raise GridError(f"--slurm={slurm_dir!r}; allowed: a folder path without spaces")
    log_dir = os.path.join(slurm_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    submit = ["#!/bin/bash",
              f"# Submit grid {grid_name!r}: teachers first, each student after its teacher (afterok). Complete runs",
              "# are skipped, so running this again resumes the grid. Written by sweep.py; regenerate, don't edit.",
              "set -euo pipefail", f"cd {shlex.quote(REPO)}",
              'complete() { for f in "$@"; do [ -s "$f" ] || return 1; done; }',
              "declare -A JOB", ""]
    for r in runs:
        path = os.path.join(slurm_dir, f"{r['name']}.sbatch")
        with open(path, "w") as f:
            f.write(sbatch_script(r, evals, grid_name, log_dir))
        os.chmod(path, 0o755)
        outputs = [done_file(r)] * ("hf" not in r) + [eval_path(r, k) for k in run_evals(r, evals)]
        name = shlex.quote(r["name"])   # (a safe name already: check_names; quoted all the same)
        submit += [f"if complete {' '.join(shlex.quote(o) for o in outputs)}; then",
                   f"  echo {shlex.quote('skip ' + r['name'] + ' (complete)')}",
                   "else"]
        dep = ""
        for d in r["deps"]:  # wait for the teacher's job only if this submission started one
            submit.append(f"  dep=${{JOB[{shlex.quote(d)}]:-}}")
            dep = " ${dep:+--dependency=afterok:$dep}"
        submit += [f"  JOB[{name}]=$(sbatch --parsable{dep} {shlex.quote(path)})",
                   f"  echo {shlex.quote(r['name'] + ': job')} \"${{JOB[{name}]}}\"",
                   "fi"]
    path = os.path.join(slurm_dir, "submit.sh")
    with open(path, "w") as f:
        f.write("\n".join(submit) + "\n")
    os.chmod(path, 0o755)
    return path


# ---- main -----------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", help="a grid file (configs/grids/*.py)")
    ap.add_argument("--dry", action="store_true", help="list the runs, whether each is done, and their commands")
    ap.add_argument("--only", default="", help="comma-separated substrings of run names (their teachers come along)")
    ap.add_argument("--jobs", type=int, default=1, help="local runs at a time")
    ap.add_argument("--torchrun", type=int, default=0, help="local runs under torchrun --standalone with N processes")
    ap.add_argument("--slurm", default="", help="write sbatch scripts and submit.sh to this folder instead of running")
    ap.add_argument("--report", action="store_true", help="only gather results into a table and figures")
    ap.add_argument("--report_dir", default="", help="default: the grid's report_dir, else <out_root>/<name>/report")
    ap.add_argument("--out_root", default="", help="override the grid's out_root")
    args = ap.parse_args(argv)
    try:
        grid = load_grid(args.grid)
        runs = select(expand(grid, args.out_root or None), args.only)
    except (GridError, OSError) as e:
        sys.exit(f"sweep.py: {e}")
    evals = grid.get("evals", {})
    report_dir = args.report_dir or grid.get("report_dir") or os.path.join(
        args.out_root or grid.get("out_root", "out"), grid["name"], "report")

    if args.dry:
        for r in runs:
            status = "done" if run_done(r, evals) else "trained" if train_done(r) else "todo"
            print(f"{r['name']} [{status}]" + (f" after {', '.join(r['deps'])}" if r["deps"] else ""))
            if r["kind"] == "cache":
                print(f"  teacher {r['teacher']} runs once here; {r['readers']} student(s) train from this cache "
                      "without loading it")
            if "hf" not in r:
                print("  " + shlex.join(["python"] + train_args(r)))
            for key, e in run_evals(r, evals).items():
                print("  " + shlex.join(["python"] + eval_args(r, e, eval_path(r, key))))
        print(f"{len(runs)} runs ({sum(r['kind'] == 'teacher' for r in runs)} teachers"
              + (f", {sum(r['kind'] == 'cache' for r in runs)} teacher caches" if grid.get("caches") else "") + "), "
              f"{sum(run_done(r, evals) for r in runs)} done")
        return
    if args.slurm:
        try:
            path = write_slurm(runs, evals, grid["name"], args.slurm)
        except GridError as e:
            sys.exit(f"sweep.py: {e}")
        print(f"wrote {len(runs)} sbatch scripts and {path}; submit with: bash {path}")
        return
    if not args.report:
        launcher = ["torchrun", "--standalone", f"--nproc_per_node={args.torchrun}"] if args.torchrun else None
        failed = run_local(runs, evals, jobs=args.jobs, launcher=launcher)
        write_report(collect(runs, evals), report_dir, grid["name"])
        sys.exit(1 if failed else 0)
    write_report(collect(runs, evals), report_dir, grid["name"])


if __name__ == "__main__":
    main()
