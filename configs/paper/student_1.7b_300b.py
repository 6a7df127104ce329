# The paper's longer student: llama3.1-1b ("1.7B") on 300B tokens instead of 50B (seed 43), distilled from a teacher
# that itself saw 300B tokens. The authors' runs: TaiMingLu/maxtext-distillation train/ablate1/generate_scripts.py @5673e36 (NUM_STEPS
# 150000; teachers loaded at checkpoint_149999 of their 300B runs; all four teacher sizes, α 0.2–1.0).
# configs/grids/paper_longer_student.py runs that grid. Does a weak teacher still help a student that sees 6× more?
#   torchrun --standalone --nproc_per_node=8 train.py configs/paper/student_1.7b_300b.py
#   python train.py configs/paper/student_1.7b_300b.py --dry_run=True          # the plan, on any machine
#   no-KD baseline: --alpha=0.0 --teacher_ckpt= --teacher_model= --out_dir=out/paper/s1.7b_300b_noKD_s43
out_dir = "out/paper/student_1.7b_300b"
data_dir = "data/fineweb_edu_llama3"
tokenizer = "llama3"
block_size = 8192                        # their SEQ_LEN
batch_tokens = 2_097_152                 # their per_device_batch_size 4 × 8192 on 64 chips (DESIGN.md)
model = "llama3.1-1b"
max_iters = 150_000                      # their NUM_STEPS for "300B" (314.6B tokens)
batch_size = 1                           # per GPU: 8 GPUs × 1 × 8192 × 32 accumulation = 2,097,152
learning_rate = 3e-4                     # their LR
eval_interval = 1000
eval_iters = 20
seed = 43                                # their student seed
packing = True                           # the authors' packing=true: rows of whole documents, attention within each
                                         # (data/packing.py; MaxText/input_pipeline/_grain_data_processing.py @304662a)
weight_decay_params = "all"              # their MaxText/optimizers.py @304662a: optax.adamw with no mask decays every
                                         # parameter, norms and embeddings too

teacher_ckpt = "out/paper/teacher_0.7b_300b/ckpt.pt"   # the grid's 0.7B teacher trained 150,000 steps
teacher_model = "llama3.1-05b"
alpha = 0.2
temperature = 1.0
