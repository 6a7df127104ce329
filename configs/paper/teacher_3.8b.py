# The paper's 3.8B teacher (stronger): llama-3.8b on 50B FineWeb-Edu tokens (seed 42),
# trained first, on its own.
# Grids (configs/grids/paper_*.py) change train_tokens for the 5–300B token ablation.
#   torchrun --standalone --nproc_per_node=8 train.py configs/paper/teacher_3.8b.py
#   python train.py configs/paper/teacher_3.8b.py --dry_run=True        # the plan, on any machine
out_dir = "out/paper/teacher_3.8b"
data_dir = "data/fineweb_edu_llama3"     # python data/prepare_fineweb.py --tokenizer llama3 (see README)
tokenizer = "llama3"
block_size = 8192                        # the paper's context
batch_tokens = 2_097_152                 # the paper's ~2.1M tokens a step = 256 sequences of 8192
learning_rate = 3e-4                     # peak; 5% warmup, cosine to 0.1× (train.py's defaults, the paper's)
eval_interval = 1000
eval_iters = 20
model = "llama-3.8b"
batch_size = 1                           # per GPU: 8 GPUs × 1 × 8192 × 32 accumulation = 2,097,152
train_tokens = 50_000_000_000
parallel = "fsdp"                        # 16 bytes/param of AdamW state would not fit replicated
seed = 42                                # the paper's teacher seed
