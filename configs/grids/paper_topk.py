# The paper's top-k ablation: the teacher's distribution truncated to its top 1 / 5 / 20 / 50% of the
# vocabulary (renormalised) at α ∈ {0.2, 1.0}, on the weak (0.7B) and strong (8B) pairs. Full distribution =
# the main grid's run of the same name (shared: name = "paper").
#   python sweep.py configs/grids/paper_topk.py --slurm slurm/topk && bash slurm/topk/submit.sh
name = "paper"
report_dir = "out/paper/report_topk"
teachers = {
    "0.7b": dict(config="configs/paper/teacher_0.7b.py"),
    "8b": dict(config="configs/paper/teacher_8b.py", slurm=dict(nodes=4)),
}
students = {"s1.7b": dict(config="configs/paper/student_1.7b.py")}
alphas = [0.2, 1.0]
seeds = [43]
variants = {"": {}, **{f"top{p}pct": dict(top_k=p / 100) for p in (1, 5, 20, 50)}}
evals = {"loss": "--tasks loss", "mc": "--tasks mc"}
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
