# The paper's teacher-tokens grid: each teacher size trained for the authors' 2,500 / 5,000 / 15,000 / 25,000 /
# 40,000 / 50,000 / 150,000 steps (their "5 / 10 / 30 / 50 / 80 / 100 / 300B"; TaiMingLu/maxtext-distillation
# train/exp2_expand/generate_scripts.py @045d194, TOKENS_TO_STEP = checkpoint step + 1), each distilled into the
# 1.7B student (25,000 steps) at α ∈ {0.5, 1.0} (train/exp2/generate_scripts.py @3a1e932), and, for the 10-300B
# teachers only (not 5B), also at α ∈ {0.2, 0.4, 0.6, 0.8} (train/exp2_expand/generate_scripts.py @045d194 /
# @ddd6ce7 and its 96 scripts exp2_llama1b-A{05B,1B,3B,8B}T{10,30,50,80,100,300}BS42-a{02,04,06,08}-s43.sh): the grid
# is not rectangular, as their runs were not. Is a longer-trained
# teacher always better? (Paper: no.) All four sizes, as their scripts do. The 25,000-step teachers are
# paper_size_alpha.py's and the 150,000-step ones paper_longer_student.py's (same run names, trained once).
#   python sweep.py configs/grids/paper_tokens_alpha.py --slurm slurm/tokens_alpha && bash slurm/tokens_alpha/submit.sh
name = "paper"                           # every paper grid shares out/paper/<run>: a run two grids name is trained once
report_dir = "out/paper/report_tokens_alpha"
_sizes = {"0.7b": "configs/paper/teacher_0.7b.py", "1.7b": "configs/paper/teacher_1.7b.py",
          "3.8b": "configs/paper/teacher_3.8b.py", "8b": "configs/paper/teacher_8b.py"}
_nodes = {"0.7b": 1, "1.7b": 1, "3.8b": 2, "8b": 4}     # Slurm nodes a teacher's training gets (8 GPUs each)
_steps = {5: 2_500, 10: 5_000, 30: 15_000, 50: 25_000, 80: 40_000, 100: 50_000, 300: 150_000}   # "B tokens": steps
teachers = {(s if b == 50 else f"{s}_{b}b"):
            dict(config=c, max_iters=_steps[b], slurm=dict(nodes=_nodes[s] * (4 if b >= 100 else 1)))
            for s, c in _sizes.items() for b in _steps}
students = {"s1.7b": dict(config="configs/paper/student_1.7b.py")}
alphas = {t: [0.5, 1.0] if t.endswith("_5b") else [0.2, 0.4, 0.5, 0.6, 0.8, 1.0] for t in teachers}
seeds = [43]
evals = {"paper": "--tasks paper --ppl_window 4096 --ppl_max_windows 256"}   # the 12 ppl sets (made by
# data/prepare_evalsets.py beside the training data) as 256 windows of 4,096 tokens, the 8 tasks, paper_avg
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
