# The larger tiny student, distilled from configs/tiny_teacher.py's checkpoint (train that first).
#   python train.py configs/tiny_student.py                                    # KD, α=0.5
#   python train.py configs/tiny_student.py --alpha=0.0 --out_dir=out/tiny_baseline   # the baseline: only α differs
# With a Hugging Face teacher (README, "Distill from a model you already have") pass --teacher_model= too:
# teacher_model only checks that the checkpoint holds that preset.
out_dir = "out/tiny_student"
data_dir = "data/embedded_bytes"
tokenizer = "bytes"
model = "tiny-96"
block_size = 256
batch_size = 16
batch_tokens = 4096
train_tokens = 100 * 4096   # a quarter of the teacher's bytes
learning_rate = 3e-3
eval_interval = 250
eval_iters = 20
seed = 43  # the paper's student seed

teacher_ckpt = "out/tiny_teacher/ckpt.pt"
teacher_model = "tiny-64"
alpha = 0.5
temperature = 1.0
