# The paper's teacher-tokens grid: one teacher size trained on 5 / 10 / 30 / 50 / 80 / 100 / 300B tokens,
# each distilled into the 1.7B student (50B tokens) at α ∈ {0.5, 1.0}. Is a longer-trained teacher always
# better? (Paper: no.) The size is one line: the 1.7B is the student's own size, so the token count alone
# moves the teacher from weaker to stronger than its student. The 50B one is paper_size_alpha.py's (same run).
#   python sweep.py configs/grids/paper_tokens_alpha.py --slurm slurm/tokens_alpha && bash slurm/tokens_alpha/submit.sh
name = "paper"
report_dir = "out/paper/report_tokens_alpha"
_size = "1.7b"
teachers = {(_size if b == 50 else f"{_size}_{b}b"):
            dict(config=f"configs/paper/teacher_{_size}.py", train_tokens=b * 1_000_000_000,
                 slurm=dict(nodes=4 if b >= 100 else 1))
            for b in (5, 10, 30, 50, 80, 100, 300)}
students = {"s1.7b": dict(config="configs/paper/student_1.7b.py")}
alphas = [0.5, 1.0]
seeds = [43]
evals = {"loss": "--tasks loss", "mc": "--tasks mc"}
slurm = dict(nodes=1, gpus_per_node=8, cpus_per_task=96, time="48:00:00")
