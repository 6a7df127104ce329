# The paper's temperature ablation on two of the main grid's pairs, a weak teacher (0.7B) and a strong one
# (8B) of the 1.7B student: T ∈ {0 (the teacher's argmax as hard labels), 0.5, 2, 4} at α ∈ {0.2, 1.0}.
# T = 1 is the main grid's run of the same name (shared: name = "paper").
#   python sweep.py configs/grids/paper_temperature.py --slurm slurm/temperature && bash slurm/temperature/submit.sh
name = "paper"
report_dir = "out/paper/report_temperature"
teachers = {
    "0.7b": dict(config="configs/paper/teacher_0.7b.py"),
    "8b": dict(config="configs/paper/teacher_8b.py", slurm=dict(nodes=4)),
}
students = {"s1.7b": dict(config="configs/paper/student_1.7b.py")}
alphas = [0.2, 1.0]
seeds = [43]
variants = {"": {}, "T0": dict(temperature=0.0), "T0.5": dict(temperature=0.5), "T2": dict(temperature=2.0),
            "T4": dict(temperature=4.0)}
evals = {"loss": "--tasks loss", "mc": "--tasks mc"}
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
