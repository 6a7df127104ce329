# A teacher of the paper's architecture ablation: Qwen3-style 1.0B (QK-norm, tied embeddings,
# θ 1e6) on 50B FineWeb-Edu tokens (seed 42; the ablation's token count is our assumption), Llama-3
# tokenizer, for the Qwen3-style 0.28B student (configs/grids/paper_qwen3.py).
#   torchrun --standalone --nproc_per_node=8 train.py configs/paper/teacher_qwen3_1.0b.py
#   python train.py configs/paper/teacher_qwen3_1.0b.py --dry_run=True        # the plan, on any machine
out_dir = "out/paper/teacher_qwen3_1.0b"
data_dir = "data/fineweb_edu_llama3"     # python data/prepare_fineweb.py --tokenizer llama3 (see README)
tokenizer = "llama3"
block_size = 8192                        # the paper's context
batch_tokens = 2_097_152                 # the paper's ~2.1M tokens a step = 256 sequences of 8192
learning_rate = 3e-4                     # peak; 5% warmup, cosine to 0.1× (train.py's defaults, the paper's)
eval_interval = 1000
eval_iters = 20
model = "qwen3-1.0b"
batch_size = 2                           # per GPU: 8 GPUs × 2 × 8192 × 16 accumulation = 2,097,152
train_tokens = 50_000_000_000
seed = 42                                # the paper's teacher seed
