# A ~1B GPT-2-tokenizer teacher: the 1B student's own size and tokens (same-level pair), and a strong
# teacher for the 160M student (strong-to-weak). 8 GPUs × 16 × 1024 × 16 accumulation = 2,097,152 tokens/step.
#   torchrun --standalone --nproc_per_node=8 train.py configs/gpt2/teacher_1b.py
#   python train.py configs/gpt2/teacher_1b.py --dry_run=True          # the plan, on any machine
out_dir = "out/gpt2/teacher_1b"
data_dir = "data/fineweb_edu_gpt2"       # python data/prepare_fineweb.py --tokenizer gpt2
tokenizer = "gpt2"
model = "gpt2-1b"
block_size = 1024
batch_size = 16
batch_tokens = 2_097_152
train_tokens = 20_000_000_000
learning_rate = 3e-4
eval_interval = 1000
eval_iters = 50
seed = 42
