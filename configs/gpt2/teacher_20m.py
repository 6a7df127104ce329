# A ~20M GPT-2-tokenizer teacher (~20 tokens/param): far weaker than the 160M and 1B students, the
# paper's question at its extreme. 8 GPUs × 64 × 1024 = 524,288 tokens/step, no accumulation.
#   torchrun --standalone --nproc_per_node=8 train.py configs/gpt2/teacher_20m.py
#   python train.py configs/gpt2/teacher_20m.py --dry_run=True          # the plan, on any machine
out_dir = "out/gpt2/teacher_20m"
data_dir = "data/fineweb_edu_gpt2"       # python data/prepare_fineweb.py --tokenizer gpt2
tokenizer = "gpt2"
model = "gpt2-20m"
block_size = 1024
batch_size = 64
batch_tokens = 524_288
train_tokens = 400_000_000
learning_rate = 1e-3
eval_interval = 1000
eval_iters = 50
seed = 42
