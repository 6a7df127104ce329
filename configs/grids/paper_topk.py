# The paper's top-k ablation: the teacher's distribution truncated to its top 1 / 5 / 20 / 50% of the vocabulary at
# α ∈ {0.2, 1.0}, all four teachers (TaiMingLu/maxtext-distillation train/ablate4/generate_scripts.py @38a6bbf). Their counts are
# round(128256 · p) = 1283 / 6413 / 25651 / 64128, written here as counts so no rounding rule is involved. Their
# scripts set only kd_top_k, so their default kd_truncation_strategy ran: renormalise the teacher over its top-k and
# score it against the student's full softmax (MaxText/EFFICIENT_TOPK_KD.md @96cf3a4; HARD_LABELS_VS_TOPK.md @9723952
# shows top-1 equal to hard labels, which holds only with the student not renormalised) = nanokd's "teacher" variant.
# Full distribution = the main grid's run of the same name (shared: name = "paper").
#   python sweep.py configs/grids/paper_topk.py --slurm slurm/topk && bash slurm/topk/submit.sh
name = "paper"                           # every paper grid shares out/paper/<run>: a run two grids name is trained once
report_dir = "out/paper/report_topk"
_sizes = {"0.7b": "configs/paper/teacher_0.7b.py", "1.7b": "configs/paper/teacher_1.7b.py",
          "3.8b": "configs/paper/teacher_3.8b.py", "8b": "configs/paper/teacher_8b.py"}
_nodes = {"0.7b": 1, "1.7b": 1, "3.8b": 2, "8b": 4}     # Slurm nodes a teacher's training gets (8 GPUs each)
teachers = {s: dict(config=c, slurm=dict(nodes=_nodes[s])) for s, c in _sizes.items()}
students = {"s1.7b": dict(config="configs/paper/student_1.7b.py")}
alphas = [0.2, 1.0]
seeds = [43]
_counts = {1: 1283, 5: 6413, 20: 25651, 50: 64128}   # percent of the vocabulary: round(128256 · p)
variants = {"": {}, **{f"top{p}pct": dict(top_k=k, top_k_variant="teacher") for p, k in _counts.items()}}
evals = {"paper": "--tasks paper --ppl_window 4096 --ppl_max_windows 256"}   # the 12 ppl sets (made by
# data/prepare_evalsets.py beside the training data) as 256 windows of 4,096 tokens, the 8 tasks, paper_avg
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
