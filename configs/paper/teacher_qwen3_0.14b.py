# A teacher of the paper's architecture ablation: Qwen3-style 0.14B (qwen3-015b: QK-norm, tied, θ 1e6) on 50B
# FineWeb-Edu tokens (seed 42), for the Qwen3-style 0.28B student (configs/grids/paper_qwen3.py). The authors' run:
# TaiMingLu/maxtext-distillation train/ablate2/ablate2_qwen015b-finewebedu-vanilla-s42-50b.sh @2ae8e97 (25,000 steps of
# per-device batch 4, LR 5e-4) and train/ablate2-eval/generate_eval_scripts.py @105ffeb (teachers evaluated at step 24999).
# An earlier version of that script (@cd6f678) ran 12,500 steps of twice the batch: the same 52.4B tokens.
# Their Qwen3 runs read the same pre-tokenized Llama-3 FineWeb-Edu records as the LLaMA runs (DATA_FILES
# .../datasets/fineweb-edu/*.array_record, tokenize_train_data=False) with the yml's 151,936 embedding rows: so here.
#   torchrun --standalone --nproc_per_node=8 train.py configs/paper/teacher_qwen3_0.14b.py
#   python train.py configs/paper/teacher_qwen3_0.14b.py --dry_run=True        # the plan, on any machine
out_dir = "out/paper/teacher_qwen3_0.14b"
data_dir = "data/fineweb_edu_llama3"     # python data/prepare_fineweb.py --tokenizer llama3 (see README)
tokenizer = "llama3"
model = "qwen3-015b"                     # the authors' MaxText model name (shapes of qwen3-*.yml @74b2651)
block_size = 8192                        # their SEQ_LEN
batch_tokens = 2_097_152                 # their per-device batch 4 × 8192 on 64 chips (DESIGN.md)
max_iters = 25_000                       # their NUM_STEPS (52.4B tokens)
batch_size = 4                           # per GPU: 8 GPUs × 4 × 8192 × 8 accumulation = 2,097,152
learning_rate = 5e-4                     # their LR for every Qwen3 run (LLaMA runs: 3e-4)
eval_interval = 1000
eval_iters = 20
seed = 42                                # their teacher seed
packing = True                           # the authors' packing=true: rows of whole documents, attention within each
                                         # (data/packing.py; MaxText/input_pipeline/_grain_data_processing.py @304662a)
weight_decay_params = "all"              # their MaxText/optimizers.py @304662a: optax.adamw with no mask decays every
                                         # parameter, norms and embeddings too
vocab_rows = 151936                      # their qwen3-*.yml vocab_size (@74b2651); the data are Llama-3 ids (128,256)
loss_all_rows = True                     # the 23,680 unused rows enter the softmax, as in their logits
