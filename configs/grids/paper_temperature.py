# The paper's temperature ablation: all four teachers of the main grid, T ∈ {0 (the teacher's argmax as hard
# labels), 0.5, 2, 4} at α ∈ {0.2, 1.0} (TaiMingLu/maxtext-distillation train/ablate3/ablate3_llama1b-A{05B,1B,3B,8B}T50BS42-a{02,1}-s43
# -t{0,05,2,4}.sh @b5983df / @3f4421a). T = 1 is the main grid's run of the same name (shared: name = "paper").
#   python sweep.py configs/grids/paper_temperature.py --slurm slurm/temperature && bash slurm/temperature/submit.sh
name = "paper"                           # every paper grid shares out/paper/<run>: a run two grids name is trained once
report_dir = "out/paper/report_temperature"
_sizes = {"0.7b": "configs/paper/teacher_0.7b.py", "1.7b": "configs/paper/teacher_1.7b.py",
          "3.8b": "configs/paper/teacher_3.8b.py", "8b": "configs/paper/teacher_8b.py"}
_nodes = {"0.7b": 1, "1.7b": 1, "3.8b": 2, "8b": 4}     # Slurm nodes a teacher's training gets (8 GPUs each)
teachers = {s: dict(config=c, slurm=dict(nodes=_nodes[s])) for s, c in _sizes.items()}
students = {"s1.7b": dict(config="configs/paper/student_1.7b.py")}
alphas = [0.2, 1.0]
seeds = [43]
variants = {"": {}, "T0": dict(temperature=0.0), "T0.5": dict(temperature=0.5), "T2": dict(temperature=2.0),
            "T4": dict(temperature=4.0)}
evals = {"paper": "--tasks paper --ppl_window 4096 --ppl_max_windows 256"}   # the 12 ppl sets (made by
# data/prepare_evalsets.py beside the training data) as 256 windows of 4,096 tokens, the 8 tasks, paper_avg
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
