# A ~410M GPT-2-tokenizer teacher (~20 tokens/param): weaker than the 1B student, stronger than the 160M.
# 8 GPUs × 32 × 1024 × 4 accumulation = 1,048,576 tokens/step.
#   torchrun --standalone --nproc_per_node=8 train.py configs/gpt2/teacher_410m.py
#   python train.py configs/gpt2/teacher_410m.py --dry_run=True          # the plan, on any machine
out_dir = "out/gpt2/teacher_410m"
data_dir = "data/fineweb_edu_gpt2"       # python data/prepare_fineweb.py --tokenizer gpt2
tokenizer = "gpt2"
model = "gpt2-410m"
block_size = 1024
batch_size = 32
batch_tokens = 1_048_576
train_tokens = 8_000_000_000
learning_rate = 3e-4
eval_interval = 1000
eval_iters = 50
seed = 42
