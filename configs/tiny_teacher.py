# A tiny byte-level teacher for CPU runs: smaller than tiny_student.py's model and trained on
# fewer tokens, so it is the paper's "weak teacher" at laptop scale. Its loss gap to the
# student (not its parameter ratio) is what decides whether KD helps; see DESIGN.md.
#   python train.py configs/tiny_teacher.py
out_dir = "out/tiny_teacher"
data_dir = "data/embedded_bytes"
tokenizer = "bytes"
model = "tiny-96"
block_size = 256
batch_size = 16
batch_tokens = 4096
train_tokens = 500 * 4096
learning_rate = 3e-3
eval_interval = 100
eval_iters = 20
seed = 42  # the paper's teacher seed
