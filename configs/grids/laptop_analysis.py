# The subset of the laptop grid (configs/grids/laptop.py) retrained for the token-level analysis
# (analyze.py; results and figures in docs/analysis/, what they show in docs/laptop_reproduction.md):
# the weaker same-size teacher t128q and the bigger t192, each at α = 0.1 and 0.3, their same-seed no-KD
# baselines and a label-smoothing ε = 0.1 control (no teacher), all on seeds 43 and 44. 14 runs, 30 min
# with two at a time on a shared 2-core machine; the analysis then takes ~12 min (every window of 3 splits).
#   python sweep.py configs/grids/laptop_analysis.py --jobs 2
#   python analyze.py --grid configs/grids/laptop_analysis.py --out docs/analysis
# Same settings as the laptop grid, so its numbers can be set beside docs/laptop/results.csv; only the loss
# evaluation (the benchmarks are at chance at this scale and the analysis does not use them).
_tokens = 250 * 4096
common = dict(data_dir="data/embedded_bytes", tokenizer="bytes", block_size=256, batch_size=16, batch_tokens=4096,
              learning_rate=3e-3, eval_interval=100, eval_iters=2, device="cpu", loss_impl="reference",
              min_lr_ratio=0.1)
students = {"s128": dict(config="configs/tiny_student.py", model="tiny-128", train_tokens=_tokens)}

teachers = {
    "t128q": dict(config="configs/tiny_teacher.py", model="tiny-128", train_tokens=3 * _tokens // 4),
    "t192": dict(config="configs/tiny_teacher.py", model="tiny-192", train_tokens=_tokens),
}
alphas = [0.1, 0.3]
seeds = [43, 44]
baselines = {"": {}, "ls0.1": dict(label_smoothing=0.1)}
evals = {"loss": "--tasks loss --batch_size 16 --max_batches 24"}
report_dir = "docs/analysis/sweep"
