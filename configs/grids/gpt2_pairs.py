# The cheaper GPT-2-tokenizer family (50,304-entry vocabulary, FineWeb-Edu): teachers of ~20M / 60M / 160M /
# 410M / 1B and students of ~160M and ~1B, in all three directions:
#   weak-to-strong  20M, 60M, 160M, 410M → 1B     (the headline: configs/student_1b_teacher_160m.py)
#                   20M, 60M → 160M
#   same-level      1B → 1B, 160M → 160M (teacher seed 42, student seed 43, same tokens)
#   strong-to-weak  410M, 1B → 160M
# at α ∈ {0.2, 0.5, 1.0}, with each student's no-KD baseline.
#   python sweep.py configs/grids/gpt2_pairs.py --dry
#   python sweep.py configs/grids/gpt2_pairs.py --slurm slurm/gpt2 && bash slurm/gpt2/submit.sh
#   python sweep.py configs/grids/gpt2_pairs.py --report
name = "gpt2"
teachers = {
    "20m": dict(config="configs/gpt2/teacher_20m.py"),
    "60m": dict(config="configs/gpt2/teacher_60m.py"),
    "160m": dict(config="configs/teacher_160m.py"),
    "410m": dict(config="configs/gpt2/teacher_410m.py"),
    "1b": dict(config="configs/gpt2/teacher_1b.py", slurm=dict(nodes=2)),
}
students = {
    "s160m": dict(config="configs/gpt2/student_160m.py"),
    "s1b": dict(config="configs/student_1b_teacher_160m.py", slurm=dict(nodes=2)),
}
pairs = [(t, "s1b") for t in ("20m", "60m", "160m", "410m", "1b")] + \
        [(t, "s160m") for t in ("20m", "60m", "160m", "410m", "1b")]
alphas = [0.2, 0.5, 1.0]
seeds = [43]
evals = {"loss": "--tasks loss", "mc": "--tasks mc"}
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="24:00:00")
