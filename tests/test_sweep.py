"""sweep.py: a two-point sweep of tiny models end to end (train, eval, table, figure), interrupted and
resumed without redoing what finished; Slurm scripts that parse and chain teachers before students;
grid expansion and the report's arithmetic on known numbers."""

import csv
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

import sweep
import sweep_report
from configurator import apply_overrides
from data.tokenfile import write_tokens

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_GRID = """
name = "two"
out_root = {out_root!r}
common = dict(data_dir={data_dir!r}, model="tiny-64", block_size=32, batch_size=4, batch_tokens=128, max_iters=4,
              eval_interval=2, eval_iters=1, learning_rate=3e-3, device="cpu", loss_impl="reference", log_interval=2)
teachers = {{"t": dict(config="configs/tiny_teacher.py")}}
students = {{"s": dict(config="configs/tiny_student.py")}}
alphas = [0.5]                 # the two points: the no-KD baseline (α = 0) and α = 0.5
seeds = [43]
evals = {{"loss": "--tasks loss --max_batches 2 --batch_size 4"}}
"""


@pytest.fixture
def tiny_grid(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    import pydoc_data.topics as topics
    toks = np.frombuffer("\n".join(topics.topics.values()).encode("utf-8"), dtype=np.uint8).astype(np.int64)
    write_tokens(data / "train.bin", toks[:40_000], 257, "bytes")
    write_tokens(data / "val.bin", toks[40_000:44_000], 257, "bytes")
    write_tokens(data / "ood_other.bin", toks[50_000:54_000], 257, "bytes")
    grid = tmp_path / "grid.py"
    grid.write_text(TINY_GRID.format(out_root=str(tmp_path / "out"), data_dir=str(data)))
    return grid, tmp_path / "out" / "two"


def sweep_cmd(*args):
    return [sys.executable, os.path.join(ROOT, "sweep.py"), *map(str, args)]


@pytest.mark.slow
def test_two_point_sweep_interrupted_and_resumed(tiny_grid):
    grid, root = tiny_grid
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dry = subprocess.run(sweep_cmd(grid, "--dry"), cwd=ROOT, capture_output=True, text=True, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "3 runs (1 teachers), 0 done" in dry.stdout and "s_t_a0.5_s43 [todo] after teacher_t" in dry.stdout

    # start the sweep (two runs at a time: the teacher and the baseline), let the teacher finish (trained and
    # evaluated), then stop it as Ctrl-C / kill would
    teacher_eval = root / "teacher_t" / "eval_loss.json"
    proc = subprocess.Popen(sweep_cmd(grid, "--jobs", 2), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not teacher_eval.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert teacher_eval.exists(), "the teacher never finished"
    proc.send_signal(signal.SIGTERM)
    first, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, first
    assert "interrupted" in first, first
    finished = {p: os.stat(p).st_mtime_ns for p in (root / "teacher_t" / "final.json", teacher_eval,
                                                     root / "teacher_t" / "ckpt.pt")}
    assert not (root / "s_t_a0.5_s43" / "final.json").exists()  # the KD student comes after the teacher

    again = subprocess.run(sweep_cmd(grid, "--jobs", 2), cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skip teacher_t (done)" in again.stdout
    assert {p: os.stat(p).st_mtime_ns for p in finished} == finished  # nothing of the teacher was redone
    for run in ("teacher_t", "s_noKD_s43", "s_t_a0.5_s43"):
        assert json.loads((root / run / "final.json").read_text())["step"] == 4
        assert "val" in json.loads((root / run / "eval_loss.json").read_text())["tasks"]
    kd_config = json.loads((root / "s_t_a0.5_s43" / "config.json").read_text())["config"]
    assert kd_config["alpha"] == 0.5 and kd_config["teacher_ckpt"] == str(root / "teacher_t" / "ckpt.pt")

    report = root / "report"
    with open(report / "results.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"teacher_t", "s_noKD_s43", "s_t_a0.5_s43"}
    base, kd = rows["s_noKD_s43"], rows["s_t_a0.5_s43"]
    assert float(kd["gain_val"]) == pytest.approx(float(base["val"]) - float(kd["val"]), abs=1e-4)
    assert "| s | t | 0.5 |" in (report / "summary.md").read_text()
    assert (report / "alpha_s.png").stat().st_size > 1000 and (report / "gain_id_vs_ood.png").exists()

    done = subprocess.run(sweep_cmd(grid, "--dry"), cwd=ROOT, capture_output=True, text=True, env=env)
    assert "3 runs (1 teachers), 3 done" in done.stdout


@pytest.mark.slow
def test_slurm_scripts_parse_and_chain_teachers_before_students(tmp_path):
    grid = sweep.load_grid(os.path.join(ROOT, "configs/grids/paper_size_alpha.py"))
    runs = sweep.expand(grid, out_root=str(tmp_path / "out"))
    # one teacher already complete: skipped at submit time, and its students need not wait for it
    done = next(r for r in runs if r["name"] == "teacher_0.7b")
    os.makedirs(done["out_dir"])
    for name in ["final.json"] + [f"eval_{k}.json" for k in grid["evals"]]:
        with open(os.path.join(done["out_dir"], name), "w") as f:
            f.write("{}")
    submit = sweep.write_slurm(runs, grid["evals"], grid["name"], tmp_path / "slurm")

    scripts = sorted((tmp_path / "slurm").glob("*.sbatch"))
    assert len(scripts) == len(runs) == 4 + 4 * 6 + 1
    for path in scripts + [tmp_path / "slurm" / "submit.sh"]:
        check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, f"{path}: {check.stderr}"
    text = (tmp_path / "slurm" / "s1.7b_8b_a0.6_s43.sbatch").read_text()
    assert ("srun torchrun --nnodes=$SLURM_NNODES --nproc_per_node=8 --rdzv-backend=c10d "
            "--rdzv-endpoint=$head:29500") in text
    assert "train.py configs/paper/student_1.7b.py" in text
    assert f"--teacher_ckpt={tmp_path}/out/paper/teacher_8b/ckpt.pt --teacher_model=llama3.1-8b" in text
    assert "--alpha=0.6" in text and "--seed=43" in text and "--resume=True" in text
    assert "#SBATCH --nodes=1" in text and "#SBATCH --gpus-per-node=8" in text
    assert "eval.py --ckpt" in text and "--tasks paper --ppl_window 4096 --ppl_max_windows 256" in text
    assert "#SBATCH --nodes=4" in (tmp_path / "slurm" / "teacher_8b.sbatch").read_text()

    # run submit.sh against a fake sbatch that hands out job ids and records its arguments
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/bash\nn=$(( $(wc -l < "$SBATCH_LOG" 2>/dev/null || echo 0) + 100 ))\n'
                                    'echo "$n $*" >> "$SBATCH_LOG"\necho $n\n')
    (bin_dir / "sbatch").chmod(0o755)
    log = tmp_path / "sbatch.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_LOG": str(log)}
    out = subprocess.run(["bash", str(submit)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "skip teacher_0.7b (complete)" in out.stdout
    jobs = {line.split()[-1].split("/")[-1][:-len(".sbatch")]: line.split() for line in log.read_text().splitlines()}
    assert "teacher_0.7b" not in jobs and len(jobs) == len(runs) - 1
    job_id = {name: fields[0] for name, fields in jobs.items()}
    for r in runs[1:]:
        fields = jobs[r["name"]]
        deps = [f for f in fields if f.startswith("--dependency")]
        if r["deps"] and r["deps"][0] != "teacher_0.7b":
            assert deps == [f"--dependency=afterok:{job_id[r['deps'][0]]}"], fields
            assert int(job_id[r["deps"][0]]) < int(fields[0])  # the teacher was submitted first
        else:
            assert deps == [], fields


def test_expand_names_overrides_and_filter(tmp_path):
    grid = tmp_path / "g.py"
    grid.write_text("""
common = dict(device="cpu")
teachers = {"a": dict(config="configs/tiny_teacher.py"), "b": dict(config="configs/tiny_teacher.py", model="tiny-192")}
students = {"s": dict(config="configs/tiny_student.py")}
alphas = {"a": [0.2, 1.0], "b": [0.5]}
seeds = [43, 44]
variants = {"": {}, "T2": dict(temperature=2.0)}
baselines = {"": {}, "ls0.1": dict(label_smoothing=0.1)}
def include(run):
    return not (run["alpha"] == 1.0 and run["seed"] == 44)
""")
    runs = sweep.expand(sweep.load_grid(str(grid)))
    names = [r["name"] for r in runs]
    assert names[:2] == ["teacher_a", "teacher_b"]  # teachers first
    assert "s_a_a0.2_T2_s44" in names and "s_noKD_ls0.1_s43" in names and "s_a_a1_s43" in names
    assert "s_a_a1_s44" not in names and "s_a_a1_T2_s44" not in names
    assert len(runs) == 2 + 2 * 2 + 2 * (2 + 1) * 2 - 2
    r = next(r for r in runs if r["name"] == "s_b_a0.5_T2_s44")
    assert r["overrides"]["teacher_model"] == "tiny-192" and r["overrides"]["temperature"] == 2.0
    assert r["overrides"]["out_dir"] == os.path.join("out", "g", "s_b_a0.5_T2_s44") and r["deps"] == ["teacher_b"]
    assert r["overrides"]["device"] == "cpu"
    base = next(r for r in runs if r["name"] == "s_noKD_ls0.1_s44")
    assert base["overrides"]["alpha"] == 0.0 and base["overrides"]["teacher_ckpt"] == "" and base["deps"] == []
    assert [r["name"] for r in sweep.select(runs, "a_a0.2_s43")] == ["teacher_a", "s_a_a0.2_s43"]

    grid.write_text("students = {'s': dict(config='configs/tiny_student.py')}\nseed = [1]\n")
    with pytest.raises(sweep.GridError, match="unknown grid setting"):
        sweep.load_grid(str(grid))


def test_cli_args_read_back_as_written():
    values = {"out_dir": "out/x", "teacher_ckpt": "", "alpha": 0.3, "max_iters": 5, "compile": True,
              "model_args": {"n_layer": 6}, "tokenizer": "True", "wandb_run_name": "a b"}
    defaults = {"out_dir": "", "teacher_ckpt": "x", "alpha": 0.0, "max_iters": 0, "compile": False,
                "model_args": {}, "tokenizer": "bytes", "wandb_run_name": ""}
    assert apply_overrides(dict(defaults), [sweep.cli_arg(k, v) for k, v in values.items()]) == values


def fake_run(run, val, ood, acc=None, tokens=1000):
    os.makedirs(run["out_dir"], exist_ok=True)
    with open(os.path.join(run["out_dir"], "final.json"), "w") as f:
        json.dump({"step": 10, "tokens_seen": tokens, "eval": {"val": val}, "train_loss": val, "minutes": 1.0}, f)
    tasks = {"val": {"loss": val}, "ood_x": {"loss": ood}}
    if acc is not None:
        tasks["piqa"] = {"acc": acc, "acc_norm": acc}
    with open(os.path.join(run["out_dir"], "eval_loss.json"), "w") as f:
        json.dump({"tasks": tasks}, f)


def test_report_gains_over_seeds_and_figures(tmp_path):
    grid = tmp_path / "g.py"
    grid.write_text(f"""
out_root = {str(tmp_path / 'out')!r}
teachers = {{"small": dict(config="configs/tiny_teacher.py", model="tiny-96"),
            "big": dict(config="configs/tiny_teacher.py", model="tiny-192", train_tokens=4000)}}
students = {{"s": dict(config="configs/tiny_student.py")}}
alphas = [0.3, 1.0]
seeds = [43, 44]
evals = {{"loss": ""}}
""")
    g = sweep.load_grid(str(grid))
    runs = {r["name"]: r for r in sweep.expand(g)}
    fake_run(runs["teacher_small"], 2.5, 2.9)
    fake_run(runs["teacher_big"], 2.0, 2.4, tokens=4000)
    for seed, shift in ((43, 0.0), (44, 0.02)):
        fake_run(runs[f"s_noKD_s{seed}"], 2.20 + shift, 2.60 + shift, acc=0.50)
        fake_run(runs[f"s_small_a0.3_s{seed}"], 2.18 + shift, 2.50 + shift, acc=0.52)
        fake_run(runs[f"s_small_a1_s{seed}"], 2.40 + shift, 2.70 + shift, acc=0.49)
        fake_run(runs[f"s_big_a0.3_s{seed}"], 2.10 + 2 * shift, 2.45 + shift, acc=0.53)
        # s_big_a1 never ran: the report covers what is done
    rows = sweep.collect(list(runs.values()), g["evals"])  # sweep.py's names for sweep_report's functions
    assert len(rows) == 2 + 8
    row = next(r for r in rows if r["name"] == "s_small_a0.3_s44")
    assert row["gain_val"] == pytest.approx(0.02) and row["gain_ood_x"] == pytest.approx(0.10)
    assert row["gain_PPL:val"] == pytest.approx(math.exp(2.22) - math.exp(2.20))  # baseline − run, in perplexity
    assert row["gain_piqa_acc_norm"] == pytest.approx(0.02) and row["teacher_val"] == 2.5
    assert row["gain_score:piqa"] == pytest.approx(0.02)  # no primary metric named: acc_norm
    assert row["teacher_tokens"] == 1000 and row["teacher_params"] < next(
        r for r in rows if r["name"] == "s_big_a0.3_s43")["teacher_params"]
    assert next(r for r in rows if r["name"] == "s_small_a1_s43")["gain_val"] == pytest.approx(-0.20)
    groups = sweep.write_report(rows, str(tmp_path / "report"), "g")
    big = next(x for x in groups if x["teacher"] == "big" and x["alpha"] == 0.3)
    assert big["n"] == 2 and big["gain_val"] == pytest.approx(0.09)
    assert big["gain_val_std"] == pytest.approx(0.01414, abs=1e-4)
    ppl = [math.exp(2.10), math.exp(2.14)]
    gains = [math.exp(2.20) - math.exp(2.10), math.exp(2.22) - math.exp(2.14)]
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "| student | teacher | α | variant | seeds | val PPL (ID) | x PPL | OOD mean PPL | piqa (acc_norm) | mc_avg |" in md
    assert f"| s | big | 0.3 |  | 2 | {sum(ppl) / 2:.3f} ± {statistics.stdev(ppl):.3f} |" in md
    assert f"| s | big | 0.3 |  | 2 | {sum(gains) / 2:+.3f} ± {statistics.stdev(gains):.3f} |" in md
    for fig in ("alpha_s.png", "gain_vs_teacher_size.png", "gain_vs_teacher_tokens.png", "gain_id_vs_ood.png"):
        assert (tmp_path / "report" / fig).stat().st_size > 1000, fig

    # the same report rebuilt from its own results.csv
    again = sweep_report.rows_from_csv(str(tmp_path / "report" / "results.csv"))
    row2 = next(r for r in again if r["name"] == "s_small_a0.3_s44")
    assert row2["gain_PPL:val"] == pytest.approx(row["gain_PPL:val"], rel=1e-3)
    assert row2["teacher_tokens"] == 1000 and row2["alpha"] == 0.3


def test_report_reads_the_paper_eval_format(tmp_path):
    """eval.py's paper output: perplexity sets named ppl_<set> (the in-domain one names fineweb), a primary metric
    per task, and paper_avg with what it left out. The report places each and computes gains on them."""
    def run(name, fineweb, c4, hs, wg, avg):
        out = tmp_path / name
        out.mkdir()
        (out / "final.json").write_text(json.dumps({"tokens_seen": 10, "eval": {}, "train_loss": 3.0, "minutes": 1}))
        tasks = {"ppl_finewebedu": {"loss": fineweb, "ppl": math.exp(fineweb), "tokens": 9},
                 "ppl_c4": {"loss": c4, "ppl": math.exp(c4), "tokens": 9},
                 "hellaswag": {"acc": 0.3, "acc_norm": hs, "primary": "acc_norm"},
                 "winogrande": {"acc": wg, "acc_norm": 0.1, "primary": "acc"}}
        (out / "eval_paper.json").write_text(json.dumps(
            {"tasks": tasks, "paper_avg": {"value": avg, "n": 7, "of": 8, "missing": ["mathqa"]}}))
        return dict(name=name, kind="student", out_dir=str(out), student="s", teacher="" if "noKD" in name else "t",
                    alpha=0.0 if "noKD" in name else 0.5, variant="", seed=43, model="tiny-64")
    runs = [run("s_noKD_s43", 2.0, 3.0, 0.40, 0.50, 0.45), run("s_t_a0.5_s43", 1.9, 2.8, 0.42, 0.55, 0.47)]
    rows = sweep_report.collect(runs, {"paper": ""})
    kd = rows[1]
    assert kd["score:winogrande"] == 0.55 and kd["metric:winogrande"] == "acc" and kd["score:hellaswag"] == 0.42
    assert kd["PPL:ood_mean"] == pytest.approx(math.exp(2.8))  # only c4 is OOD; finewebedu is in-domain
    assert kd["gain_paper_avg"] == pytest.approx(0.02) and kd["gain_PPL:ppl_c4"] == pytest.approx(math.exp(3) - math.exp(2.8))
    sweep_report.write_report(rows, str(tmp_path / "report"), "p")
    md = (tmp_path / "report" / "summary.md").read_text()
    assert ("| ppl_finewebedu PPL (ID) | c4 PPL | OOD mean PPL | hellaswag (acc_norm) | winogrande (acc) | paper_avg |"
            in md)
    assert "| s | t | 0.5 |  | 1 | +0.703 | +3.641 | +3.641 | +0.020 | +0.050 | +0.020 |" in md
    assert "paper_avg leaves out what could not run: mathqa." in md


# ---- names and shell scripts ------------------------------------------------------------------------------

GRID_WITH_NAMES = """
name = {name!r}
teachers = {{{teacher!r}: dict(config="configs/tiny_teacher.py")}}
students = {{{student!r}: dict(config="configs/tiny_student.py")}}
alphas = [0.5]
variants = {{{variant!r}: dict(temperature=2.0)}}
evals = {{{eval_key!r}: "--tasks loss"}}
"""
SAFE = dict(name="g", teacher="t96", student="s1.7b", variant="T2", eval_key="loss")


@pytest.mark.parametrize("where", ["name", "teacher", "student", "variant", "eval_key"])
@pytest.mark.parametrize("bad", ["v$(touch X)", "it's", "a/b", "..", "-x", "a b", "tab\there", "new\nline", ""])
def test_unsafe_names_are_refused_when_the_grid_is_read(tmp_path, where, bad):
    if where == "variant" and bad == "":
        return   # "" is the plain variant
    grid = tmp_path / "grid.py"
    grid.write_text(GRID_WITH_NAMES.format(**{**SAFE, where: bad}))
    with pytest.raises(sweep.GridError) as e:
        sweep.load_grid(str(grid))
    assert f"name {bad!r} is not allowed" in str(e.value) and "\n" not in str(e.value)
    assert not os.path.exists("X")


def test_safe_names_and_slurm_settings_pass_and_bad_slurm_settings_do_not(tmp_path):
    grid = tmp_path / "grid.py"
    grid.write_text(GRID_WITH_NAMES.format(**SAFE) + "slurm = dict(time='1-00:00:00', partition='gpu,a100')\n")
    runs = sweep.expand(sweep.load_grid(str(grid)))
    assert {r["name"] for r in runs} == {"teacher_t96", "s1.7b_noKD_s43", "s1.7b_t96_a0.5_T2_s43"}
    for setting in ("partition='gpu; rm -rf ~'", "time='1:00\\n#SBATCH --x'", "nodes='2'", "port=0",
                    "setup=['module load x\\nrm y']"):
        grid.write_text(GRID_WITH_NAMES.format(**SAFE) + f"slurm = dict({setting})\n")
        with pytest.raises(sweep.GridError, match="slurm"):
            sweep.expand(sweep.load_grid(str(grid)))


@pytest.mark.slow
def test_slurm_scripts_quote_every_path_and_name_they_run(tmp_path):
    """What reaches submit.sh and the sbatch scripts is quoted: paths no name check covers (out_root, with a
    newline even) and, past the check (expand() called directly), names. With fake sbatch/srun/scontrol,
    running the scripts creates no file X and hands train.py exactly its arguments."""
    hostile = str(tmp_path / "o$(touch X)\nit's `touch X`")
    grid = dict(name="g", out_root=hostile, teachers={"t96": dict(config="configs/tiny_teacher.py")},
                students={"it's": dict(config="configs/tiny_student.py")}, alphas=[0.5],
                variants={"v$(touch X)": dict(temperature=2.0)})
    runs = sweep.expand(grid)
    slurm_dir = tmp_path / "slurm"
    submit = sweep.write_slurm(runs, {}, grid["name"], slurm_dir)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {"sbatch": 'echo "$*" >> "$LOG_DIR/sbatch.log"\necho 7\n',
             "scontrol": "echo node1\n",
             "srun": 'printf "%s\\0" "$@" > "$LOG_DIR/srun.args"\n'}
    for cmd, body in fakes.items():
        (bin_dir / cmd).write_text("#!/bin/bash\n" + body)
        (bin_dir / cmd).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG_DIR": str(tmp_path),
           "SLURM_JOB_NODELIST": "node1", "SLURM_NNODES": "1", "SLURM_JOB_ID": "7"}
    out = subprocess.run(["bash", str(submit)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "sbatch.log").read_text().splitlines()) == len(runs) == 3
    assert "it's_t96_a0.5_v$(touch X)_s43: job 7" in out.stdout.splitlines()
    student = next(r for r in runs if r["deps"])
    out = subprocess.run(["bash", str(slurm_dir / f"{student['name']}.sbatch")], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0, out.stderr
    args = (tmp_path / "srun.args").read_text().split("\0")[:-1]
    assert args[args.index("--rdzv-id=7") + 1:] == sweep.train_args(student)
    assert f"--out_dir={hostile}/g/it's_t96_a0.5_v$(touch X)_s43" in args
    assert not [p for p in tmp_path.rglob("X")] and not os.path.exists(os.path.join(ROOT, "X"))
