# A tiny byte-level teacher for CPU runs (quickstart.py): a third of the parameters of tiny_student.py's
# model (0.12M vs 0.33M), trained on train.bin for four times the student's steps, so it ends with a lower
# loss than the student reaches. Whether KD helps depends on that loss gap more than on the parameter
# ratio (docs/laptop_reproduction.md measures both directions).
#   python train.py configs/tiny_teacher.py
out_dir = "out/tiny_teacher"
data_dir = "data/embedded_bytes"
tokenizer = "bytes"
model = "tiny-64"
block_size = 256
batch_size = 16
batch_tokens = 4096
train_tokens = 400 * 4096   # 1.6M bytes, 0.6 passes over train.bin
learning_rate = 3e-3
eval_interval = 500
eval_iters = 20
seed = 42  # the paper's teacher seed
