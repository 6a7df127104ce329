# Document-aware training (packing) at laptop scale: does training within documents, as the authors' runs did,
# change the student's loss or the KD gain? Results: docs/laptop_reproduction.md ("Packing").
#   python data/prepare_embedded.py --paragraphs              # one document per Wikipedia paragraph (~440 bytes)
#   python sweep.py configs/grids/laptop_packing.py --jobs 3
#
# The Wikipedia articles average ~26K bytes, so only ~1% of 256-byte windows hold a boundary and packing
# would change almost nothing. With a paragraph per document and 1,024-byte rows, 94% of plain windows hold one
# (python -m data.packing data/embedded_bytes_paragraphs), ~2.3 documents a row. Each arm (packed, plain
# windows) trains its own teacher the same way as its students: tiny-128 on 1.5× the student's bytes, seed 42.
# Evaluation is the same for both arms: plain windows of the val and OOD files, not document-masked, as the
# authors' perplexity windows.
_steps = 160
_tokens = _steps * 4096

common = dict(data_dir="data/embedded_bytes_paragraphs", tokenizer="bytes", block_size=1024, batch_size=4,
              batch_tokens=4096, learning_rate=3e-3, eval_interval=10_000, eval_iters=12, device="cpu",
              min_lr_ratio=0.1)
teachers = {
    "t128p": dict(config="configs/tiny_teacher.py", model="tiny-128", train_tokens=3 * _tokens // 2, packing=True),
    "t128u": dict(config="configs/tiny_teacher.py", model="tiny-128", train_tokens=3 * _tokens // 2, packing=False),
}
students = {
    "s128p": dict(config="configs/tiny_student.py", model="tiny-128", train_tokens=_tokens, packing=True),
    "s128u": dict(config="configs/tiny_student.py", model="tiny-128", train_tokens=_tokens, packing=False),
}
pairs = [("t128p", "s128p"), ("t128u", "s128u")]
alphas = [0.3]
seeds = [43, 44]
evals = {}
report_dir = "docs/laptop_packing"
