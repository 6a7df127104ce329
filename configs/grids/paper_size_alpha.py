# The paper's main grid: teacher size × α. LLaMA-3-style teachers of 0.7B / 1.7B / 3.8B / 8B, each 25,000 steps
# (52.4B tokens), distil the 1.7B student (25,000 steps) with α ∈ {0.2, 0.4, 0.5, 0.6, 0.8, 1.0}, plus the no-KD
# baseline. Paper: every teacher helps at a suitable α, the best α grows with teacher strength (0.2 for 0.7B, 0.4
# same size, 0.6 for 3.8B/8B), α = 1 hurts with the weaker teachers.
#   python sweep.py configs/grids/paper_size_alpha.py --dry                 # 4 teachers + 25 students
#   python sweep.py configs/grids/paper_size_alpha.py --slurm slurm/size_alpha && bash slurm/size_alpha/submit.sh
#   python sweep.py configs/grids/paper_size_alpha.py --report
name = "paper"                           # every paper grid shares out/paper/<run>: a run two grids name is trained once
report_dir = "out/paper/report_size_alpha"
_sizes = {"0.7b": "configs/paper/teacher_0.7b.py", "1.7b": "configs/paper/teacher_1.7b.py",
          "3.8b": "configs/paper/teacher_3.8b.py", "8b": "configs/paper/teacher_8b.py"}
_nodes = {"0.7b": 1, "1.7b": 1, "3.8b": 2, "8b": 4}     # Slurm nodes a teacher's training gets (8 GPUs each)
teachers = {s: dict(config=c, slurm=dict(nodes=_nodes[s])) for s, c in _sizes.items()}
students = {"s1.7b": dict(config="configs/paper/student_1.7b.py")}
alphas = [0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
seeds = [43]
evals = {"paper": "--tasks paper --ppl_window 4096 --ppl_max_windows 256"}   # the 12 ppl sets (made by
# data/prepare_evalsets.py beside the training data) as 256 windows of 4,096 tokens, the 8 tasks, paper_avg
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
