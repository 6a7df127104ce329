# A ~160M GPT-2-tokenizer student on 3B tokens (~20 tokens/param), distilled from the 1B teacher
# (configs/gpt2/teacher_1b.py, trained first): the classic strong-to-weak direction, for contrast with the
# headline weak-to-strong configs/student_1b_teacher_160m.py. configs/grids/gpt2_pairs.py varies the teacher.
#   torchrun --standalone --nproc_per_node=8 train.py configs/gpt2/student_160m.py
#   python train.py configs/gpt2/student_160m.py --dry_run=True
out_dir = "out/gpt2/student_160m"
data_dir = "data/fineweb_edu_gpt2"
tokenizer = "gpt2"
model = "gpt2-160m"
block_size = 1024
batch_size = 32                 # per GPU; 8 GPUs × 32 × 1024 × 2 accumulation = 524,288 tokens/step
batch_tokens = 524_288
train_tokens = 3_000_000_000
learning_rate = 6e-4
eval_interval = 1000
eval_iters = 50
seed = 43

teacher_ckpt = "out/gpt2/teacher_1b/ckpt.pt"
teacher_model = "gpt2-1b"
alpha = 0.5
temperature = 1.0
