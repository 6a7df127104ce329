# The paper's architecture-ablation student: Qwen3-style 0.28B (qwen3-03b: QK-norm, tied, θ 1e6) on 50B FineWeb-Edu
# tokens (seed 43), distilled from a Qwen3-style teacher (0.14B / 0.28B / 0.6B / 1.0B: configs/grids/paper_qwen3.py).
# The authors' runs: TaiMingLu/maxtext-distillation train/ablate2/generate_scripts.py @2ae8e97 (student qwen3-03b, NUM_STEPS 25000,
# LR 5e-4, α 0.2–1.0, T 1). Their Qwen3 runs read the same pre-tokenized Llama-3 FineWeb-Edu records as the LLaMA runs
# (DATA_FILES .../datasets/fineweb-edu/*.array_record, tokenize_train_data=False), with the ymls' 151,936 embedding rows.
#   torchrun --standalone --nproc_per_node=8 train.py configs/paper/student_qwen3_0.28b.py
#   python train.py configs/paper/student_qwen3_0.28b.py --dry_run=True
out_dir = "out/paper/student_qwen3_0.28b"
data_dir = "data/fineweb_edu_llama3"
tokenizer = "llama3"
block_size = 8192                        # their SEQ_LEN
batch_tokens = 2_097_152                 # their per_device_batch_size 4 × 8192 on 64 chips (DESIGN.md)
model = "qwen3-03b"
max_iters = 25_000                       # their NUM_STEPS (52.4B tokens)
batch_size = 4                           # per GPU: 8 GPUs × 4 × 8192 × 8 accumulation = 2,097,152
learning_rate = 5e-4                     # their LR for the Qwen3 runs
eval_interval = 1000
eval_iters = 20
seed = 43                                # their student seed
packing = True                           # the authors' packing=true: rows of whole documents, attention within each
                                         # (data/packing.py; MaxText/input_pipeline/_grain_data_processing.py @304662a)
weight_decay_params = "all"              # their MaxText/optimizers.py @304662a: optax.adamw with no mask decays every
                                         # parameter, norms and embeddings too
vocab_rows = 151936                      # their qwen3-*.yml vocab_size (@74b2651); the data are Llama-3 ids (128,256)
loss_all_rows = True                     # the 23,680 unused rows enter the softmax, as in their logits

teacher_ckpt = "out/paper/teacher_qwen3_0.14b/ckpt.pt"
teacher_model = "qwen3-015b"
alpha = 0.2
temperature = 1.0
