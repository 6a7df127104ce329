"""Every shipped config plans cleanly: `python train.py <config> --dry_run=True` for each file under
configs/ (the paper's grid, the GPT-2 family, the tiny and headline configs), and for each distinct kind
of run the grids in configs/grids/ expand to, on the number of GPUs its Slurm settings ask for, so the
batch divides evenly over them. Dry runs build the models on the meta device: no data, no memory.

The dry runs execute train.py itself with the argv a user would type, many per Python process (runpy),
so importing torch is paid once per process rather than once per config."""

import glob
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import sweep
from configurator import read_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# argv list in (JSON on stdin), one result per argv out: the exit code and what train.py printed
DRIVER = r"""
import contextlib, io, json, os, runpy, sys
results = []
for argv, world_size in json.load(sys.stdin):
    os.environ["WORLD_SIZE"] = str(world_size)   # the plan's process count
    sys.argv = ["train.py", *argv]
    out = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path("train.py", run_name="__main__")
    except SystemExit as e:
        code = e.code
    results.append({"argv": argv, "code": code, "out": out.getvalue()})
sys.stdout.write(json.dumps(results))
"""


def dry_runs(jobs, processes=2):
    """[(argv, world_size)] -> results, over a few driver processes in parallel."""
    chunks = [jobs[i::processes] for i in range(processes) if jobs[i::processes]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)

    def run(chunk):
        proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(chunk), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    with ThreadPoolExecutor(len(chunks)) as pool:
        return [r for rs in pool.map(run, chunks) for r in rs]


def check(results):
    bad = [f"{' '.join(r['argv'])}: exit {r['code']}\n{r['out'][-1500:]}" for r in results
           if r["code"] not in (0, None) or "plan for" not in r["out"] or "not divisible" in r["out"]]
    assert not bad, "\n\n".join(bad)


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True))
CONFIGS = [os.path.relpath(p, ROOT) for p in CONFIGS if os.sep + "grids" + os.sep not in p]
GRIDS = sorted(glob.glob(os.path.join(ROOT, "configs", "grids", "*.py")))
# values that change what a run computes but not how it is planned; checked directly below
LOSS_KEYS = ("alpha", "temperature", "top_k", "top_k_variant", "label_smoothing")


def config_jobs():
    # the tiny byte-level configs are single-process CPU runs; everything else plans for one 8-GPU node
    return [([c, "--dry_run=True"], 1 if read_config_file(c).get("tokenizer") == "bytes" else 8) for c in CONFIGS]


def grid_jobs():
    """One dry run per distinct kind of run in every grid: runs that differ only in seed, folders, token budget
    or the loss settings plan alike, so one of each is enough."""
    jobs, seen = [], set()
    for path in GRIDS:
        for run in sweep.expand(sweep.load_grid(path)):
            if run["kind"] == "cache":   # teacher_cache.py, not train.py
                continue
            o = {k: v for k, v in run["overrides"].items()
                 if k not in ("out_dir", "teacher_ckpt", "seed", "train_tokens", "max_iters") + LOSS_KEYS}
            world = 1 if o.get("device") == "cpu" else run["slurm"]["nodes"] * run["slurm"]["gpus_per_node"]
            key = json.dumps([run["config"], o, world, run["overrides"].get("alpha", 0) > 0], sort_keys=True)
            if key not in seen:
                seen.add(key)
                argv = sweep.train_args(run)[2:-1]
                jobs.append(([run["config"], *argv, "--dry_run=True"], world))
    return jobs


@pytest.fixture(scope="module")
def planned():
    """All dry runs at once (torch is imported once per driver process), split back into configs and grids."""
    cj, gj = config_jobs(), grid_jobs()
    results = dry_runs(cj + gj)
    by_argv = {json.dumps(r["argv"]): r for r in results}
    return [by_argv[json.dumps(a)] for a, _ in cj], [by_argv[json.dumps(a)] for a, _ in gj]


@pytest.mark.slow
def test_every_config_dry_runs(planned):
    results, _ = planned
    assert any(c.startswith(os.path.join("configs", "paper")) for c in CONFIGS)
    assert any(c.startswith(os.path.join("configs", "gpt2")) for c in CONFIGS)
    check(results)
    assert len(results) == len(CONFIGS)
    # the paper's batch: ~2.1M tokens a step of 8,192-token sequences
    for r in results:
        if "paper" in r["argv"][0]:
            assert "tokens/step 2,097,152 = 8 × " in r["out"] and "context 8192" in r["out"], r["argv"]


@pytest.mark.slow
def test_every_grid_expands_to_runs_that_dry_run(planned):
    _, results = planned
    assert len(GRIDS) >= 8 and len(results) > 20
    check(results)


@pytest.mark.parametrize("path", GRIDS, ids=os.path.basename)
def test_grid_runs_are_consistent(path):
    from distill_loss import check_kd_args
    runs = sweep.expand(sweep.load_grid(path))
    by_name = {r["name"]: r for r in runs}
    assert runs and len(by_name) == len(runs)
    for r in runs:
        o = r["overrides"]
        if r["kind"] == "cache":   # a teacher_cache.py run (sweep.py's caches): after its teacher, its students after it
            assert by_name[r["deps"][0]]["kind"] == "teacher" and o["out"] == r["out_dir"]
            continue
        if r["deps"] and by_name[r["deps"][0]]["kind"] == "cache":
            assert o["teacher_cache"] == by_name[r["deps"][0]]["out_dir"] and o["teacher_ckpt"] == "" and 0 < o["alpha"] <= 1
            continue
        check_kd_args(o.get("alpha", 0.0), o.get("temperature", 1.0))  # what train.py checks first
        assert 0 <= o.get("top_k", 0.0) and 0 <= o.get("label_smoothing", 0.0) < 1
        if r["kind"] == "teacher":
            assert r["seed"] == 42, r["name"]  # the paper's teacher seed
        elif r["deps"]:
            teacher = by_name[r["deps"][0]]
            assert o["teacher_ckpt"] == os.path.join(teacher["out_dir"], "ckpt.pt")
            assert o["teacher_model"] == teacher["model"]
            assert 0 < o["alpha"] <= 1
        else:
            assert o["alpha"] == 0 and o["teacher_ckpt"] == ""



# ---- the paper's models and budgets, as the authors' code has them ---------------------------------------------
# Literal data copied from GitHub TaiMingLu/maxtext-distillation (MaxText yml keys), not read from model.py:
#   llama3.1-05b: MaxText/configs/models/llama3.1-05b.yml @1a40eb4e95a1196af1d8d1e46ba61081d968b3a7
#   llama3.1-1b, llama3.1-3b: MaxText/llama_or_mistral_ckpt.py MODEL_PARAMS_DICT @1ec4b95dcb96147b28410e8f7286c4c4de932019
#     (their yml files are not in the index; these entries give emb, layers, heads, kv heads, head dim, MLP, vocab)
#   llama3.1-8b: upstream AI-Hypercomputer/maxtext MaxText/configs/models/llama3.1-8b.yml (0ed7bd5), which theirs uses
#   All LLaMA: logits_via_embedding False (untied), normalization_layer_epsilon 1e-5, rope_max_timescale 500_000.
#   qwen3-*: MaxText/configs/models/qwen3-{015b,03b,06b,1b}.yml @74b2651ca6a833499083c6f4c4892ef76f554ec3
#     (use_qk_norm True, logits_via_embedding True, epsilon 1e-6, rope_max_timescale 1_000_000)
AUTHORS_LLAMA = {  # name: (base_emb_dim, base_num_decoder_layers, base_num_query_heads, base_num_kv_heads, head_dim, base_mlp_dim, vocab_size)
    "llama3.1-05b": (1024, 12, 32, 8, 128, 8192, 128256),
    "llama3.1-1b": (2048, 16, 32, 8, 128, 8192, 128256),
    "llama3.1-3b": (3072, 28, 32, 8, 128, 8192, 128256),
    "llama3.1-8b": (4096, 32, 32, 8, 128, 14336, 128256),
}
AUTHORS_QWEN3 = {
    "qwen3-015b": (512, 20, 8, 4, 64, 1536, 151936),
    "qwen3-03b": (768, 24, 12, 4, 64, 2304, 151936),
    "qwen3-06b": (1024, 28, 16, 8, 128, 3072, 151936),
    "qwen3-1b": (1536, 28, 12, 4, 128, 4608, 151936),
}
# the paper's names for them (params in billions, rounded as the paper does)
PAPER_SIZE = {"llama3.1-05b": 0.7, "llama3.1-1b": 1.7, "llama3.1-3b": 3.8, "llama3.1-8b": 8.0,
              "qwen3-015b": 0.14, "qwen3-03b": 0.28, "qwen3-06b": 0.6, "qwen3-1b": 1.0}


def authors_param_count(d, layers, heads, kv_heads, head_dim, mlp, vocab, tied, qk_norm):
    """Parameters of a MaxText llama2/qwen3 decoder block stack, from its yml: q and o are d × heads·head_dim,
    k and v d × kv_heads·head_dim, a SwiGLU MLP of three d × mlp matrices, two RMSNorm scales per layer (plus
    head_dim-wide q and k norms for Qwen3), a final norm, and one or two vocab × d embedding matrices."""
    attention = 2 * d * heads * head_dim + 2 * d * kv_heads * head_dim
    per_layer = attention + 3 * d * mlp + 2 * d + (2 * head_dim if qk_norm else 0)
    return layers * per_layer + d + vocab * d * (1 if tied else 2)


@pytest.mark.parametrize("name", list(AUTHORS_LLAMA) + list(AUTHORS_QWEN3))
def test_presets_have_the_authors_shapes_and_parameter_counts(name):
    import torch
    from model import GPT, PRESETS, config_from_preset
    qwen = name in AUTHORS_QWEN3
    d, layers, heads, kv_heads, head_dim, mlp, vocab = (AUTHORS_QWEN3 if qwen else AUTHORS_LLAMA)[name]
    expected = authors_param_count(d, layers, heads, kv_heads, head_dim, mlp, vocab, tied=qwen, qk_norm=qwen)
    with torch.device("meta"):
        model = GPT(config_from_preset(name, vocab, 8192))
    assert model.num_params() == expected, name
    assert abs(expected / 1e9 - PAPER_SIZE[name]) / PAPER_SIZE[name] < 0.03, (name, expected)
    p = PRESETS[name]
    assert (p["n_embd"], p["n_layer"], p["n_head"], p["n_kv_head"], p["head_dim"], p["mlp_hidden"]) == \
        (d, layers, heads, kv_heads, head_dim, mlp)
    c = model.config
    assert (c.tie_embeddings, c.qk_norm, c.rope_theta, c.norm_eps) == \
        ((True, True, 1e6, 1e-6) if qwen else (False, False, 500_000.0, 1e-5))


# The authors' step counts (2,097,152 tokens a step): students 25,000 ("50B", train/ablate4, train/exp2) and 150,000
# ("300B", train/ablate1/generate_scripts.py @5673e36); teachers' budgets from train/exp2_expand/generate_scripts.py
# @045d194 TOKENS_TO_STEP (the checkpoint step a student loads, + 1); Qwen3 runs 25,000 at LR 5e-4
# (train/ablate2/*.sh @2ae8e97).
AUTHORS_TEACHER_STEPS = {5: 2_500, 10: 5_000, 30: 15_000, 50: 25_000, 80: 40_000, 100: 50_000, 300: 150_000}
PAPER_STEPS = {"student_1.7b.py": 25_000, "student_1.7b_300b.py": 150_000, "student_qwen3_0.28b.py": 25_000,
               **{f"teacher_{s}.py": 25_000 for s in ("0.7b", "1.7b", "3.8b", "8b")},
               **{f"teacher_qwen3_{s}.py": 25_000 for s in ("0.14b", "0.28b", "0.6b", "1.0b")}}


@pytest.mark.slow
def test_paper_configs_plan_the_authors_steps(planned):
    results, _ = planned
    paper = {os.path.basename(r["argv"][0]): r["out"] for r in results if "paper" in r["argv"][0]}
    assert set(paper) == set(PAPER_STEPS)
    for name, steps in PAPER_STEPS.items():
        assert f"steps {steps:,} ({steps * 2_097_152 / 1e9:.2f}B tokens)" in paper[name], name
        lr = read_config_file(os.path.join(ROOT, "configs", "paper", name))["learning_rate"]
        assert lr == (5e-4 if "qwen3" in name else 3e-4), name


def grid_runs(name):
    return sweep.expand(sweep.load_grid(os.path.join(ROOT, "configs", "grids", f"{name}.py")))


def steps_of(run):
    return run["overrides"].get("max_iters") or read_config_file(os.path.join(ROOT, run["config"]))["max_iters"]


def test_grids_use_the_authors_teachers_budgets_and_alphas():
    sizes = {"llama3.1-05b", "llama3.1-1b", "llama3.1-3b", "llama3.1-8b"}
    full_alphas = {0.2, 0.4, 0.5, 0.6, 0.8, 1.0}

    def teachers(runs):
        return {(r["model"], steps_of(r)) for r in runs if r["kind"] == "teacher"}

    def alphas(runs):
        return {r["alpha"] for r in runs if r["kind"] == "student" and r["teacher"]}

    runs = grid_runs("paper_tokens_alpha")
    assert teachers(runs) == {(m, s) for m in sizes for s in AUTHORS_TEACHER_STEPS.values()}
    # train/exp2 @3a1e932: α 0.5 and 1.0 for every budget; train/exp2_expand @ddd6ce7: 0.2/0.4/0.6/0.8 for 10-300B only
    teacher_steps = {r["name"]: (r["model"], steps_of(r)) for r in runs if r["kind"] == "teacher"}
    pairs = {(teacher_steps["teacher_" + r["teacher"]], r["alpha"]) for r in runs if r["kind"] == "student" and r["teacher"]}
    assert pairs == {((m, s), a) for m in sizes for b, s in AUTHORS_TEACHER_STEPS.items()
                     for a in ({0.5, 1.0} if b == 5 else full_alphas)}
    runs = grid_runs("paper_longer_student")
    assert teachers(runs) == {(m, 150_000) for m in sizes} and alphas(runs) == full_alphas
    assert {steps_of(r) for r in runs if r["kind"] == "student"} == {150_000}
    for grid in ("paper_size_alpha", "paper_temperature", "paper_topk"):
        runs = grid_runs(grid)
        assert teachers(runs) == {(m, 25_000) for m in sizes}, grid
        assert {steps_of(r) for r in runs if r["kind"] == "student"} == {25_000}, grid
    assert alphas(grid_runs("paper_size_alpha")) == full_alphas
    runs = grid_runs("paper_qwen3")
    assert teachers(runs) == {(m, 25_000) for m in AUTHORS_QWEN3} and alphas(runs) == full_alphas
    assert {r["model"] for r in runs if r["kind"] == "student"} == {"qwen3-03b"}
    # teachers two grids share have the same run name, so they are trained once
    longer = {r["name"]: steps_of(r) for r in grid_runs("paper_longer_student") if r["kind"] == "teacher"}
    tokens = {r["name"]: steps_of(r) for r in grid_runs("paper_tokens_alpha") if r["kind"] == "teacher"}
    assert all(tokens[n] == s for n, s in longer.items())


def test_paper_configs_train_as_the_authors():
    """packing=true in every train/ script, optax.adamw without a mask (MaxText/optimizers.py @304662a), and for
    Qwen3 the ymls' 151,936 rows in the softmax (qwen3-*.yml @74b2651) while the data stay Llama-3 ids."""
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "paper", "*.py"))):
        c = read_config_file(path)
        assert c["packing"] is True and c["weight_decay_params"] == "all", path
        assert c["tokenizer"] == "llama3", path
        if "qwen3" in path:
            assert c["vocab_rows"] == 151936 and c["loss_all_rows"] is True, path
        else:
            assert "vocab_rows" not in c and "loss_all_rows" not in c, path


def test_grids_say_which_topk_variant():
    """The top-k grid runs the authors' counts, round(128256·p), with the variant named on every run."""
    runs = [r for r in grid_runs("paper_topk") if r["kind"] == "student" and r["variant"]]
    assert {r["overrides"]["top_k"] for r in runs} == {round(128256 * p) for p in (0.01, 0.05, 0.2, 0.5)}
    assert {r["overrides"]["top_k_variant"] for r in runs} == {"teacher"}
    for path in GRIDS:
        for r in sweep.expand(sweep.load_grid(path)):
            if r["overrides"].get("top_k"):
                assert r["overrides"].get("top_k_variant") in ("teacher", "both", "bucket"), (path, r["name"])


def test_every_config_and_grid_run_passes_the_settings_check():
    """What train.py checks first (settings.py), in-process: every shipped config and every run the grids
    expand to, as a dry run would see it (a dry run plans GPUs from a machine without one)."""
    from configurator import apply_overrides
    from settings import check_settings
    from test_settings import train_defaults
    argvs = [[c] for c in CONFIGS]
    argvs += [sweep.train_args(run)[1:-1] for path in GRIDS for run in sweep.expand(sweep.load_grid(path))
              if run["config"] and run["kind"] != "cache"]   # (teacher_cache.py runs and HF teachers: no train.py)
    assert len(argvs) > 300
    for argv in argvs:
        check_settings(apply_overrides(train_defaults(), [*argv, "--dry_run=True"]))
