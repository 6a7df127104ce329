# The paper's architecture ablation student: Qwen3-style 0.28B (QK-norm, tied embeddings, θ 1e6) on
# 50B FineWeb-Edu tokens (seed 43; the token count is our assumption), Llama-3 tokenizer, distilled from a
# Qwen3-style teacher (0.14B / 0.28B / 0.6B / 1.0B: configs/grids/paper_qwen3.py).
#   torchrun --standalone --nproc_per_node=8 train.py configs/paper/student_qwen3_0.28b.py
#   python train.py configs/paper/student_qwen3_0.28b.py --dry_run=True
out_dir = "out/paper/student_qwen3_0.28b"
data_dir = "data/fineweb_edu_llama3"
tokenizer = "llama3"
model = "qwen3-0.28b"
block_size = 8192
batch_size = 4                           # per GPU: 8 GPUs × 4 × 8192 × 8 accumulation = 2,097,152
batch_tokens = 2_097_152
train_tokens = 50_000_000_000
learning_rate = 3e-4
eval_interval = 1000
eval_iters = 20
seed = 43

teacher_ckpt = "out/paper/teacher_qwen3_0.14b/ckpt.pt"
teacher_model = "qwen3-0.14b"
alpha = 0.2
temperature = 1.0
