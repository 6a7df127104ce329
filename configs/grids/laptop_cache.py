# Teacher once, students many, at laptop scale: students trained from top-k (k = 4, 16) and sampled (K = 4, 16)
# teacher caches against the online-KD student and the no-KD baseline, two seeds, the same seeds in every arm.
# Byte-level, on the first 700,000 bytes of the embedded corpus (each cache holds every window of it, so any
# seed can read it; the whole corpus would cost each cache ~4× the CPU):
#   python data/prepare_embedded.py --tokenizer bytes
#   python -c "import shutil, os; from data.tokenfile import load_tokens, write_tokens; s, d = 'data/embedded_bytes', 'data/embedded_bytes_700k'; os.makedirs(d, exist_ok=True); write_tokens(d + '/train.bin', load_tokens(s + '/train.bin')[:700_000], 257, 'bytes'); [shutil.copy(f'{s}/{f}', d) for f in ('val.bin', 'ood_news.bin', 'ood_pydocs.bin', 'meta.json')]"
#   python sweep.py configs/grids/laptop_cache.py --dry     # the plan: 1 teacher, 4 caches it writes once, 12 students
#   nice -n 10 python sweep.py configs/grids/laptop_cache.py --jobs 2
#   python sweep.py configs/grids/laptop_cache.py --report
# Shorter than configs/grids/laptop.py (students 100 steps, not 250) so it fits a shared 2-core machine; the
# teacher, tiny-96 on twice the student's bytes, is that grid's best kind of teacher (t96x2).
_steps = 100
_tokens = _steps * 4096

common = dict(data_dir="data/embedded_bytes_700k", tokenizer="bytes", block_size=256, batch_size=16,
              batch_tokens=4096, learning_rate=3e-3, eval_interval=1000, eval_iters=2, device="cpu",
              min_lr_ratio=0.1)
teachers = {"t96x2": dict(config="configs/tiny_teacher.py", model="tiny-96", train_tokens=2 * _tokens)}
students = {"s128": dict(config="configs/tiny_student.py", model="tiny-128", train_tokens=_tokens)}
alphas = [0.3]
seeds = [43, 44]
# top-k caches train with top_k = k and the authors' "teacher" variant (teacher renormalised over its k, the
# student's softmax over the whole vocabulary); sampled caches estimate the full forward KL (top_k = 0)
caches = {
    "top4": dict(method="top-k", k=4, train=dict(top_k=4.0, top_k_variant="teacher")),
    "top16": dict(method="top-k", k=16, train=dict(top_k=16.0, top_k_variant="teacher")),
    "smp4": dict(method="sampled", k=4),
    "smp16": dict(method="sampled", k=16),
}
evals = {"loss": "--tasks loss --batch_size 16 --max_batches 24"}
report_dir = "bench/results/laptop_cache"
