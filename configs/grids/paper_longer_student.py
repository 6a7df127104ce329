# The paper's longer-student grid: the 1.7B student on 300B tokens instead of 50B, distilled from the
# 50B-token teachers of paper_size_alpha.py. Does a weak teacher still help a student that sees 6× more data?
#   python sweep.py configs/grids/paper_longer_student.py --slurm slurm/longer && bash slurm/longer/submit.sh
name = "paper"
report_dir = "out/paper/report_longer_student"
teachers = {
    "0.7b": dict(config="configs/paper/teacher_0.7b.py"),
    "1.7b": dict(config="configs/paper/teacher_1.7b.py"),
    "8b": dict(config="configs/paper/teacher_8b.py", slurm=dict(nodes=4)),
}
students = {"s1.7b_300b": dict(config="configs/paper/student_1.7b_300b.py", slurm=dict(nodes=4))}
alphas = [0.2, 0.4, 0.6, 1.0]
seeds = [43]
evals = {"loss": "--tasks loss", "mc": "--tasks mc"}
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
