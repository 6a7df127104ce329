# The paper's student: llama3.1-1b ("1.7B") on 50B FineWeb-Edu tokens (seed 43), distilled from a teacher trained
# first. The authors' runs: TaiMingLu/maxtext-distillation train/ablate4/generate_scripts.py @38a6bbf and train/exp2/generate_scripts.py
# @3a1e932 (NUM_STEPS 25000, LR 3e-4, KD_TEMPERATURE 1.0, seed 43). Default pair: the weak 0.7B teacher at its best
# α (0.2); the grids (configs/grids/paper_*.py) vary teacher, α, T and top-k.
#   torchrun --standalone --nproc_per_node=8 train.py configs/paper/student_1.7b.py
#   python train.py configs/paper/student_1.7b.py --dry_run=True          # the plan, on any machine
#   no-KD baseline: --alpha=0.0 --teacher_ckpt= --teacher_model= --out_dir=out/paper/s1.7b_noKD_s43
out_dir = "out/paper/student_1.7b"
data_dir = "data/fineweb_edu_llama3"
tokenizer = "llama3"
block_size = 8192                        # their SEQ_LEN
batch_tokens = 2_097_152                 # their per_device_batch_size 4 × 8192 on 64 chips (DESIGN.md)
model = "llama3.1-1b"
max_iters = 25_000                       # their NUM_STEPS for "50B" (52.4B tokens)
batch_size = 1                           # per GPU: 8 GPUs × 1 × 8192 × 32 accumulation = 2,097,152
learning_rate = 3e-4                     # their LR
eval_interval = 1000
eval_iters = 20
seed = 43                                # their student seed
packing = True                           # the authors' packing=true: rows of whole documents, attention within each
                                         # (data/packing.py; MaxText/input_pipeline/_grain_data_processing.py @304662a)
weight_decay_params = "all"              # their MaxText/optimizers.py @304662a: optax.adamw with no mask decays every
                                         # parameter, norms and embeddings too

teacher_ckpt = "out/paper/teacher_0.7b/ckpt.pt"
teacher_model = "llama3.1-05b"
alpha = 0.2                              # the paper's best α for the 0.7B teacher (0.4 same size, 0.6 for 3.8B/8B)
temperature = 1.0                        # their KD_TEMPERATURE in the main runs
