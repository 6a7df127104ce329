# Weak-to-strong with a closer gap than the headline pair: the ~1B student of
# configs/student_1b_teacher_160m.py distilled from the ~410M teacher (configs/gpt2/teacher_410m.py).
#   torchrun --standalone --nproc_per_node=8 train.py configs/gpt2/student_1b_teacher_410m.py
#   python train.py configs/gpt2/student_1b_teacher_410m.py --dry_run=True
out_dir = "out/gpt2/student_1b_teacher_410m"
data_dir = "data/fineweb_edu_gpt2"
tokenizer = "gpt2"
model = "gpt2-1b"
block_size = 1024
batch_size = 16                 # per GPU; 8 GPUs × 16 × 1024 × 16 accumulation = 2,097,152 tokens/step
batch_tokens = 2_097_152
train_tokens = 20_000_000_000
learning_rate = 3e-4
eval_interval = 500
eval_iters = 50
seed = 43

teacher_ckpt = "out/gpt2/teacher_410m/ckpt.pt"
teacher_model = "gpt2-410m"
alpha = 0.3                     # between the paper's 0.2 (weak) and 0.4 (same size)
temperature = 1.0
