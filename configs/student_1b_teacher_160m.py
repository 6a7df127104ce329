# The headline weak-to-strong example: a ~1B student distilled from a ~150M teacher
# (configs/teacher_160m.py, trained first). The paper finds a weak teacher still helps with a
# small α (0.2 for its weakest pair) while α=1 hurts.
#   torchrun --standalone --nproc_per_node=8 train.py configs/student_1b_teacher_160m.py
#   python train.py configs/student_1b_teacher_160m.py --dry_run=True     # the plan, on any machine
out_dir = "out/student_1b_teacher_160m"
data_dir = "data/fineweb_edu_gpt2"
tokenizer = "gpt2"
model = "gpt2-1b"
block_size = 1024
batch_size = 16                 # per GPU; 8 GPUs × 16 × 1024 × 16 accumulation = 2,097,152 tokens/step (the paper's ~2.1M)
batch_tokens = 2_097_152
train_tokens = 20_000_000_000
learning_rate = 3e-4            # the paper's peak
eval_interval = 500
eval_iters = 50
seed = 43

teacher_ckpt = "out/teacher_160m/ckpt.pt"
teacher_model = "gpt2-160m"
alpha = 0.2
temperature = 1.0
