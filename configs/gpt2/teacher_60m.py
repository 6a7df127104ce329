# A ~60M GPT-2-tokenizer teacher (~20 tokens/param), weaker than both students.
# 8 GPUs × 64 × 1024 = 524,288 tokens/step, no accumulation.
#   torchrun --standalone --nproc_per_node=8 train.py configs/gpt2/teacher_60m.py
#   python train.py configs/gpt2/teacher_60m.py --dry_run=True          # the plan, on any machine
out_dir = "out/gpt2/teacher_60m"
data_dir = "data/fineweb_edu_gpt2"       # python data/prepare_fineweb.py --tokenizer gpt2
tokenizer = "gpt2"
model = "gpt2-60m"
block_size = 1024
batch_size = 64
batch_tokens = 524_288
train_tokens = 1_200_000_000
learning_rate = 8e-4
eval_interval = 1000
eval_iters = 50
seed = 42
