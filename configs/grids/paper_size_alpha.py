# The paper's main grid: teacher size × α. LLaMA-3-style teachers of 0.7B / 1.7B / 3.8B / 8B, each on 50B
# FineWeb-Edu tokens, distil a 1.7B student on 50B tokens with α ∈ {0.2, 0.4, 0.5, 0.6, 0.8, 1.0}, plus the
# no-KD baseline. Paper: every teacher helps at a suitable α, the best α grows with teacher strength (0.2 for
# 0.7B, 0.4 same size, 0.6 for 3.8B/8B), α = 1 hurts with the weaker teachers.
#   python sweep.py configs/grids/paper_size_alpha.py --dry                 # 4 teachers + 25 students
#   python sweep.py configs/grids/paper_size_alpha.py --slurm slurm/size_alpha && bash slurm/size_alpha/submit.sh
#   python sweep.py configs/grids/paper_size_alpha.py --report
# All paper grids share name "paper", so a teacher or student that two grids both name (e.g. the 0.7B
# teacher, the baseline) lives in one out/paper/<run> folder and is trained once.
name = "paper"
report_dir = "out/paper/report_size_alpha"
teachers = {
    "0.7b": dict(config="configs/paper/teacher_0.7b.py"),
    "1.7b": dict(config="configs/paper/teacher_1.7b.py"),
    "3.8b": dict(config="configs/paper/teacher_3.8b.py", slurm=dict(nodes=2)),
    "8b": dict(config="configs/paper/teacher_8b.py", slurm=dict(nodes=4)),
}
students = {"s1.7b": dict(config="configs/paper/student_1.7b.py")}
alphas = [0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
seeds = [43]
evals = {"loss": "--tasks loss", "mc": "--tasks mc"}   # in-domain + OOD splits present; the 8 benchmarks
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
