"""
Arithmetic about a run before (and while) it runs: the dry-run plan that
`train.py --dry_run=True` prints, and the accelerator peak that MFU divides by.
Memory figures are estimates with bf16 autocast: under DDP every process holds
the whole student with fp32 weights, grads and AdamW moments (16 bytes/param)
and the whole teacher in bf16 (2 bytes/param); FSDP divides those by the number
of processes (fsdp_teacher for the teacher), and activation checkpointing keeps
only each block's input plus one block's activations.
"""

import os

import torch

from model import ALIASES, GPT, PRESETS, QWEN3_ROWS, config_from_preset, count_params_formula

# dense bf16 peak FLOP/s, from the vendors' datasheets (no sparsity)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "4090": 165e12}


def peak_flops(device):
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return 0.0
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), 0.0)


def preset_vocab(name):
    """The vocabulary each preset family is meant for: bytes for tiny-*, GPT-2's for gpt2-*, Llama-3's for the
    paper's LLaMA models, and the 151,936 embedding rows of the authors' Qwen3 ymls for qwen3-*."""
    from data.tokenizer import N_VOCAB, padded_vocab_size
    name = ALIASES.get(name, name)
    if name.startswith("qwen3"):
        return QWEN3_ROWS
    family = "bytes" if name.startswith("tiny") else "gpt2" if name.startswith("gpt2") else "llama3"
    return padded_vocab_size(N_VOCAB[family])


def activation_bytes(cfg, tokens, checkpointing=False):
    """Rough bytes of activations kept for backward in bf16: per layer and token, the inputs of the
    projections and norms (~12·d) and the SwiGLU's four mlp-wide tensors. With checkpointing, each
    block's input is kept and one block at a time is recomputed."""
    per_layer = 2 * tokens * (12 * cfg.n_embd + 4 * cfg.mlp_hidden)
    if checkpointing:
        return 2 * tokens * cfg.n_embd * cfg.n_layer + per_layer
    return per_layer * cfg.n_layer


def print_plan(student, teacher, config, world_size, n_vocab):
    gb = 1024 ** 3
    c = config
    tokens_per_step = c["batch_tokens"]
    per_micro = c["batch_size"] * c["block_size"]
    accum = tokens_per_step // (per_micro * world_size) if tokens_per_step % (per_micro * world_size) == 0 else None
    steps = c["max_iters"] if c["max_iters"] > 0 else c["train_tokens"] // tokens_per_step
    s_params = student.num_params()
    print(f"plan for {world_size} processes (set WORLD_SIZE to plan for another count)")
    print(f"  student  {c['model']:12s} {s_params:>15,} params (formula {count_params_formula(student.config):,}), "
          f"{student.num_params(non_embedding=True):,} non-embedding")
    share, packing_note = attention_under_packing(c)
    flops = tokens_per_step * student.flops_per_token(c["block_size"], attention_share=share)
    shards = world_size if c["parallel"] == "fsdp" else 1
    t_shards = shards if c["fsdp_teacher"] else 1
    activations = activation_bytes(student.config, per_micro, c["activation_checkpointing"])
    memory = 16 * s_params / shards + activations
    if teacher is not None:
        t_params = teacher.num_params()
        print(f"  teacher  {c['teacher_model'] or '(ckpt)':12s} {t_params:>15,} params (formula {count_params_formula(teacher.config):,}), "
              f"α={c['alpha']}, T={c['temperature']}")
        flops += tokens_per_step * teacher.flops_per_token(c["block_size"], backward=False, attention_share=share)
        memory += 2 * t_params / t_shards + 2 * per_micro * teacher.config.n_embd
    # the loss: one chunk of fp32 logits for each model in the fused path, full logits in the reference
    loss_rows = per_micro if c["loss_impl"] == "reference" else min(per_micro, 4096)
    memory += loss_rows * n_vocab * 4 * (2 if teacher is not None else 1) * (3 if c["loss_impl"] == "reference" else 1)
    print(f"  vocabulary {n_vocab:,} ({c['tokenizer']}), {student.config.vocab_size:,} embedding rows, softmax over "
          f"{'all rows' if c['loss_all_rows'] else 'the tokenizer ids'}, context {c['block_size']}")
    print(f"  {packing_note}")
    print(f"  weight decay {c['weight_decay']} on {'every parameter' if c['weight_decay_params'] == 'all' else 'matrices'}")
    print(f"  tokens/step {tokens_per_step:,} = {world_size} × {c['batch_size']} × {c['block_size']} × "
          f"{accum if accum else '?'} accumulation" + ("" if accum else "  <-- not divisible: train.py will refuse"))
    print(f"  steps {steps:,} ({steps * tokens_per_step / 1e9:.2f}B tokens), warmup {int(c['warmup_frac'] * steps):,}")
    print(f"  FLOPs/step {flops:.3e} ({flops * steps:.3e} in all)")
    print(f"  memory/GPU ≈ {memory / gb:.1f} GiB ({c['parallel']}: student states {16 * s_params / shards / gb:.1f}, "
          f"activations {activations / gb:.1f}"
          + (f", teacher {2 * teacher.num_params() / t_shards / gb:.1f}" if teacher is not None else "") + ")")
    return {"student_params": s_params, "teacher_params": teacher.num_params() if teacher is not None else 0,
            "tokens_per_step": tokens_per_step, "steps": steps, "flops_per_step": flops, "memory_bytes": memory}


def attention_under_packing(config):
    """(share of plain-window attention FLOPs, a line for the plan). Packed rows attend within documents only;
    the share comes from the data's document lengths (data_dir/doc_lengths.json, written by the prepare scripts)."""
    if not config["packing"]:
        return 1.0, "packing off: plain windows, attention across document boundaries"
    import json
    from data.packing import boundary_share, packed_attention_share
    path = os.path.join(config["data_dir"], "doc_lengths.json")
    if not os.path.exists(path):
        return 1.0, (f"packing on: rows of whole documents; no {path} (python -m data.packing DIR writes it), so "
                     "attention FLOPs are counted as for full rows (an upper bound)")
    with open(path) as f:
        hist = json.load(f)
    T = config["block_size"]
    share = packed_attention_share(hist, T)
    return share, (f"packing on: rows of whole documents; attention FLOPs {share:.3f} of full rows' (from {path}: "
                   f"{sum(hist['documents']):,} documents; {boundary_share(hist, T):.1%} of plain {T}-token windows "
                   "would cross a document boundary)")


def dry_run(config):
    """train.py --dry_run=True: both models built on the meta device from the config (and the teacher
    checkpoint's config when it exists), no data, no processes; then the plan."""
    from checkpoint import CheckpointError, load_teacher
    from data.tokenizer import N_VOCAB, padded_vocab_size
    c = config
    if c["tokenizer"] in N_VOCAB:
        n_vocab = N_VOCAB[c["tokenizer"]]
    else:   # a Hugging Face tokenizer: its size from its file
        from data.tokenizer import get_tokenizer
        n_vocab = get_tokenizer(c["tokenizer"], c["tokenizer_path"] or c["teacher_ckpt"]).n_vocab
    with torch.device("meta"):
        rows = c["vocab_rows"] or padded_vocab_size(n_vocab)
        student = GPT(config_from_preset(c["model"], rows, c["block_size"], **c["model_args"]))
        teacher = None
        if c["teacher_ckpt"] and os.path.exists(c["teacher_ckpt"]):
            try:
                teacher = load_teacher(c["teacher_ckpt"], tokenizer=c["tokenizer"], n_vocab=n_vocab,
                                       block_size=c["block_size"], preset=c["teacher_model"], meta=True)
            except CheckpointError as e:
                raise SystemExit(f"train.py: error: {e}")
        elif c["teacher_model"]:
            teacher = GPT(config_from_preset(c["teacher_model"], rows, c["block_size"]))
    return print_plan(student, teacher, c, world_size=int(os.environ.get("WORLD_SIZE", 8)), n_vocab=n_vocab)


if __name__ == "__main__":   # python plan.py: every preset's size at the vocabulary it is meant for
    print(f"{'preset':12s} {'vocab':>7s} {'params':>10s} {'non-emb':>10s}")
    for name in PRESETS:
        cfg = config_from_preset(name, preset_vocab(name), 1024)
        with torch.device("meta"):
            model = GPT(cfg)
        print(f"{name:12s} {cfg.vocab_size:7d} {model.num_params() / 1e6:9.1f}M {model.num_params(True) / 1e6:9.1f}M")
