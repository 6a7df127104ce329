# The paper's 8B teacher (strongest): llama3.1-8b on 50B FineWeb-Edu tokens (seed 42), trained first, on its own.
# Steps as the authors set them (TaiMingLu/maxtext-distillation train/exp2_expand/generate_scripts.py @045d194, TOKENS_TO_STEP:
# the teacher checkpoint a student loads is step 24999 of 25,000). Grids change max_iters for the 5–300B budgets.
#   torchrun --standalone --nproc_per_node=8 train.py configs/paper/teacher_8b.py
#   python train.py configs/paper/teacher_8b.py --dry_run=True        # the plan, on any machine
out_dir = "out/paper/teacher_8b"
data_dir = "data/fineweb_edu_llama3"     # python data/prepare_fineweb.py --tokenizer llama3 (see README)
tokenizer = "llama3"                     # the authors' Llama-3.1 tokenizer, 128,256 tokens
model = "llama3.1-8b"                   # the authors' MaxText model name
block_size = 8192                        # their SEQ_LEN
batch_tokens = 2_097_152                 # their per_device_batch_size 4 × 8192 on 64 chips (DESIGN.md)
max_iters = 25_000                       # their NUM_STEPS for "50B" (52.4B tokens); train_tokens would give 23,841
batch_size = 1                           # per GPU: 8 GPUs × 1 × 8192 × 32 accumulation = 2,097,152
learning_rate = 3e-4                     # their LR; 5% warmup, cosine to 0.1× (train.py's defaults, theirs too)
eval_interval = 1000
eval_iters = 20
seed = 42                                # their init_weights_seed / data_shuffle_seed for teachers
packing = True                           # the authors' packing=true: rows of whole documents, attention within each
                                         # (data/packing.py; MaxText/input_pipeline/_grain_data_processing.py @304662a)
weight_decay_params = "all"              # their MaxText/optimizers.py @304662a: optax.adamw with no mask decays every
                                         # parameter, norms and embeddings too
parallel = "fsdp"                        # 8B × 16 bytes of state: sharded over the GPUs
activation_checkpointing = True          # 32 layers × 8192 tokens of activations do not fit otherwise
