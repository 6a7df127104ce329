# The teacher of the headline weak-to-strong example: a ~150M GPT-2-tokenizer model on
# FineWeb-Edu, trained first, on its own:
#   python data/prepare_fineweb.py --tokenizer gpt2 --max_tokens 25_000_000_000
#   torchrun --standalone --nproc_per_node=8 train.py configs/teacher_160m.py
out_dir = "out/teacher_160m"
data_dir = "data/fineweb_edu_gpt2"
tokenizer = "gpt2"
model = "gpt2-160m"
block_size = 1024
batch_size = 32                 # per GPU; 8 GPUs × 32 × 1024 × 2 accumulation = 524,288 tokens/step
batch_tokens = 524_288
train_tokens = 3_000_000_000    # ~20 tokens/param, Chinchilla-style
learning_rate = 6e-4
eval_interval = 1000
eval_iters = 50
seed = 42
