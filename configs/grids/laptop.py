# The laptop-scale reproduction: byte-level tiny models on the embedded corpus
# (python data/prepare_embedded.py --tokenizer bytes), 2 CPU cores, ~95 minutes; results and what they
# show: docs/laptop_reproduction.md.
#   python sweep.py configs/grids/laptop.py --jobs 2      # two single-thread runs at a time
#   python sweep.py configs/grids/laptop.py --report      # table and figures -> docs/laptop/
#
# Student: tiny-128 (4 layers, d=128), 250 steps of 4,096 bytes, seeds 43 and 44 (val 2.06). Teachers,
# seed 42, with the val loss they reached:
#   t96x2  tiny-96 on twice the student's bytes      smaller, trained longer  1.90
#   t192   tiny-192 on the student's bytes           bigger                   2.00
#   t128q  tiny-128 on three quarters of its bytes   same size, less trained  2.17
#   t96    tiny-96 on the student's bytes            smaller                  2.28
#   t96h   tiny-96 on half the student's bytes       smaller, under-trained   2.50
# What decides whether a weak teacher helps is its loss gap to the student, not the parameter ratio
# (DESIGN.md). The paper's weakest teacher (0.7B for a 1.7B student, both on 50B tokens) is close to its
# student and its best α is small (0.2). t96 and t96h turned out far weaker than that and hurt at α = 0.1
# and 0.3, so t128q was added, closer to the student. Two seeds wherever the difference to the baseline
# may be small; one for α = 1 with a weak teacher, which moves the student far, and for the weakest
# teacher. Downstream benchmarks are at chance at this scale; they are scored (100 examples each) so the
# pipeline is the paper's, and reported as what they are.
_steps = 250
_tokens = _steps * 4096

common = dict(data_dir="data/embedded_bytes", tokenizer="bytes", block_size=256, batch_size=16, batch_tokens=4096,
              learning_rate=3e-3, eval_interval=100, eval_iters=2, device="cpu", loss_impl="reference",
              min_lr_ratio=0.1)
teachers = {   # this order is the order of training, and of each seed's students
    "t96": dict(config="configs/tiny_teacher.py", model="tiny-96", train_tokens=_tokens),
    "t128q": dict(config="configs/tiny_teacher.py", model="tiny-128", train_tokens=3 * _tokens // 4),
    "t96x2": dict(config="configs/tiny_teacher.py", model="tiny-96", train_tokens=2 * _tokens),
    "t192": dict(config="configs/tiny_teacher.py", model="tiny-192", train_tokens=_tokens),
    "t96h": dict(config="configs/tiny_teacher.py", model="tiny-96", train_tokens=_tokens // 2),
}
students = {"s128": dict(config="configs/tiny_student.py", model="tiny-128", train_tokens=_tokens)}
seeds = [43, 44]
# (teacher, α) -> the seeds it runs with; the no-KD baseline runs with every seed
_runs = {
    ("t96", 0.1): [43, 44], ("t96", 0.3): [43, 44], ("t96", 1.0): [43],
    ("t128q", 0.1): [43, 44], ("t128q", 0.3): [43, 44], ("t128q", 1.0): [43],
    ("t96h", 0.3): [43],
    ("t96x2", 0.3): [43, 44],
    ("t192", 0.3): [43, 44], ("t192", 1.0): [43, 44],
}
alphas = {}
for (_t, _a) in _runs:
    alphas.setdefault(_t, []).append(_a)


def include(run):
    return run["teacher"] == "" or run["seed"] in _runs[(run["teacher"], run["alpha"])]


evals = {
    "loss": "--tasks loss --batch_size 16 --max_batches 24",   # ~98K bytes per split, the same windows for every run
    "mc": "--tasks arc_easy,piqa,sciq,hellaswag --limit 100 --batch_size 16",
}
slurm = dict(gpus_per_node=1, cpus_per_task=2)   # if ever submitted: one process per run
report_dir = "docs/laptop"
