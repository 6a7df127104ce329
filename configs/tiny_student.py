# The larger tiny student, distilled from configs/tiny_teacher.py's checkpoint (train that first).
#   python train.py configs/tiny_student.py                                                  # KD, α=0.5
#   python train.py configs/tiny_student.py --alpha=0.0 --teacher_ckpt= --out_dir=out/tiny_baseline  # no teacher
# teacher_model only checks that the teacher holds that preset: with another teacher (a Hugging Face folder,
# README "Distill from a model you already have") pass --teacher_model= as well.
out_dir = "out/tiny_student"
data_dir = "data/embedded_bytes"
tokenizer = "bytes"
model = "tiny-128"
block_size = 256
batch_size = 16
batch_tokens = 4096
train_tokens = 500 * 4096   # quickstart.py runs KD and baseline side by side, one core each
learning_rate = 3e-3
eval_interval = 250
eval_iters = 20
min_lr_ratio = 0.0
seed = 43  # the paper's student seed

teacher_ckpt = "out/tiny_teacher/ckpt.pt"
teacher_model = "tiny-96"
alpha = 0.5
temperature = 1.0
