# The paper's longer student: the 1.7B of student_1.7b.py on 300B tokens instead of 50B (seed 43),
# distilled from a teacher trained first (default: the weak 0.7B at α=0.2); configs/grids/paper_longer_student.py
# varies teacher and α. Does a weak teacher still help when the student sees 6× more data?
#   torchrun --standalone --nproc_per_node=8 train.py configs/paper/student_1.7b_300b.py
#   python train.py configs/paper/student_1.7b_300b.py --dry_run=True          # the plan, on any machine
#   no-KD baseline: --alpha=0.0 --teacher_ckpt= --teacher_model= --out_dir=out/paper/s1.7b_300b_noKD_s43
out_dir = "out/paper/student_1.7b_300b"
data_dir = "data/fineweb_edu_llama3"
tokenizer = "llama3"
model = "llama-1.7b"
block_size = 8192
batch_size = 1                           # per GPU: 8 GPUs × 1 × 8192 × 32 accumulation = 2,097,152
batch_tokens = 2_097_152
train_tokens = 300_000_000_000
learning_rate = 3e-4
eval_interval = 1000
eval_iters = 20
seed = 43                                # the paper's student seed

teacher_ckpt = "out/paper/teacher_0.7b/ckpt.pt"
teacher_model = "llama-0.7b"
alpha = 0.2                              # the paper's best α for the 0.7B teacher (0.4 same size, 0.6 for 3.8B/8B)
temperature = 1.0
