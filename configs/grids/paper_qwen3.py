# The paper's architecture ablation: the same question with Qwen3-style models (QK-norm, tied, θ 1e6). Teachers
# qwen3-015b / 03b / 06b / 1b (the paper's 0.14B / 0.28B / 0.6B / 1.0B), 25,000 steps each, distil the qwen3-03b
# student (25,000 steps, LR 5e-4) over the main α grid (TaiMingLu/maxtext-distillation train/ablate2/generate_scripts.py @2ae8e97 and
# train/ablate2-eval/generate_eval_scripts.py @105ffeb).
#   python sweep.py configs/grids/paper_qwen3.py --slurm slurm/qwen3 && bash slurm/qwen3/submit.sh
name = "paper"                           # every paper grid shares out/paper/<run>: a run two grids name is trained once
report_dir = "out/paper/report_qwen3"
teachers = {f"qwen3_{s}": dict(config=f"configs/paper/teacher_qwen3_{s}.py") for s in ("0.14b", "0.28b", "0.6b", "1.0b")}
students = {"sq0.28b": dict(config="configs/paper/student_qwen3_0.28b.py")}
alphas = [0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
seeds = [43]
evals = {"paper": "--tasks paper --ppl_window 4096 --ppl_max_windows 256"}   # the 12 ppl sets (made by
# data/prepare_evalsets.py beside the training data) as 256 windows of 4,096 tokens, the 8 tasks, paper_avg
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="24:00:00")
