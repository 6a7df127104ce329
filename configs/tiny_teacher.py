# A tiny byte-level teacher for CPU runs: under half the parameters of tiny_student.py's model (0.3M vs 0.8M),
# trained on six times the tokens (4.6 passes over train.bin). Whether KD helps depends on its loss gap to the
# student more than on the parameter ratio: docs/laptop_reproduction.md measures both directions.
#   python train.py configs/tiny_teacher.py
out_dir = "out/tiny_teacher"
data_dir = "data/embedded_bytes"
tokenizer = "bytes"
model = "tiny-96"
block_size = 256
batch_size = 16
batch_tokens = 4096
train_tokens = 3000 * 4096  # 4.6 passes over train.bin
learning_rate = 3e-3
eval_interval = 500
eval_iters = 20
min_lr_ratio = 0.0  # cosine to zero (the grids keep 0.1); the quickstart's spread is measured at this
seed = 42  # the paper's teacher seed
