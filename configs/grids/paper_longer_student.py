# The paper's longer-student grid: the 1.7B student for 150,000 steps (314.6B tokens) instead of 25,000, distilled
# from teachers that were themselves trained 150,000 steps, all four sizes, over the full α grid (TaiMingLu/maxtext-distillation
# train/ablate1/generate_scripts.py @5673e36: NUM_STEPS 150000, teachers at checkpoint_149999 of their 300B runs,
# scripts train/ablate1/ablate1_llama1b-A{05B,1B,3B,8B}T300BS42-a{02,04,05,06,08,1}-s43.sh).
# Does a weak teacher still help a student that sees 6× more data?
#   python sweep.py configs/grids/paper_longer_student.py --slurm slurm/longer && bash slurm/longer/submit.sh
name = "paper"                           # every paper grid shares out/paper/<run>: a run two grids name is trained once
report_dir = "out/paper/report_longer_student"
_sizes = {"0.7b": "configs/paper/teacher_0.7b.py", "1.7b": "configs/paper/teacher_1.7b.py",
          "3.8b": "configs/paper/teacher_3.8b.py", "8b": "configs/paper/teacher_8b.py"}
_nodes = {"0.7b": 1, "1.7b": 1, "3.8b": 2, "8b": 4}     # Slurm nodes a teacher's training gets (8 GPUs each)
teachers = {f"{s}_300b": dict(config=c, max_iters=150_000, slurm=dict(nodes=4 * _nodes[s]))
            for s, c in _sizes.items()}
students = {"s1.7b_300b": dict(config="configs/paper/student_1.7b_300b.py", slurm=dict(nodes=4))}
alphas = [0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
seeds = [43]
evals = {"paper": "--tasks paper --ppl_window 4096 --ppl_max_windows 256"}   # the 12 ppl sets (made by
# data/prepare_evalsets.py beside the training data) as 256 windows of 4,096 tokens, the 8 tasks, paper_avg
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
