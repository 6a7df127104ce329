# The paper's robustness checks that this repo can run: seeds 43–47 of the 1.7B student at "10B" (5,000 steps), with
# and without the weak 0.7B teacher (α = 0.2), and label smoothing ε ∈ {0.1, 0.3} as the no-teacher control
# for "is a weak teacher only a smoother target?". (Official Llama-3.x teachers and a DCLM student need an
# importer and a DCLM prepare script that this repo does not have.)
#   python sweep.py configs/grids/paper_robustness.py --slurm slurm/robustness && bash slurm/robustness/submit.sh
name = "paper"
report_dir = "out/paper/report_robustness"
teachers = {"0.7b": dict(config="configs/paper/teacher_0.7b.py")}
students = {"s1.7b_10b": dict(config="configs/paper/student_1.7b.py", max_iters=5_000)}   # "10B" = 5,000 steps, as the authors count
alphas = [0.2]
seeds = [43, 44, 45, 46, 47]
baselines = {"": {}, "ls0.1": dict(label_smoothing=0.1), "ls0.3": dict(label_smoothing=0.3)}


def include(run):
    return run["variant"] == "" or run["seed"] == 43   # the smoothing control once; the seeds cover the rest


evals = {"paper": "--tasks paper --ppl_window 4096 --ppl_max_windows 256"}   # the 12 ppl sets (made by
# data/prepare_evalsets.py beside the training data) as 256 windows of 4,096 tokens, the 8 tasks, paper_avg
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
