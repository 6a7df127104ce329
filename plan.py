"""
Arithmetic about a run before (and while) it runs: the dry-run plan that
`train.py --dry_run=True` prints, and the accelerator peak that MFU divides by.
Memory figures are estimates with bf16 autocast (memory_bytes): under DDP every
process holds the whole student with fp32 weights, grads and AdamW moments (16
bytes/param) plus autocast's bf16 copies of its matmul weights (2), the whole
teacher in bf16 (2 bytes/param), activations as measured for one block
(tests/test_plan.py) and the fused loss's chunk buffers; FSDP divides the
student's states by the number of processes (fsdp_teacher: the teacher's too).

    python plan.py      # the README's table: the paper's pairs under DDP on 8 GPUs
"""

import os
import sys

import torch

from model import ALIASES, GPT, PRESETS, QWEN3_ROWS, config_from_preset, count_params_formula

# Dense bf16 peak FLOP/s from the vendors' datasheets (no sparsity), by a substring of the device name. The
# first match wins, so the PCIe and NVL parts (lower clocks and power) come before their family's SXM figure.
# The one table: MFU in train.py and bench_step.py, % of peak in bench_loss.py.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200 NVL", 835e12), ("GH200", 989e12),
             ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12), ("4090", 165e12)]


def peak_for_name(name):
    """The bf16 peak FLOP/s of a device of this name, 0.0 if the table has none."""
    return next((v for k, v in PEAK_BF16 if k in name), 0.0)


def peak_flops(device):
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return 0.0
    return peak_for_name(torch.cuda.get_device_name(device))


AUTOCAST_COPY_BYTES = 2   # per fp32 matmul weight: autocast's bf16 copy, kept from the forward to the backward


def block_activation_bytes_per_token(cfg):
    """Bytes one transformer block keeps for backward per token under bf16 autocast, as measured (saved-tensor
    hooks on a block, eager; tests/test_plan.py holds this to the measurement): the block's fp32 input and the
    norms' fp32 outputs (4 tensors of d), the bf16 casts of the normed input each projection makes for itself
    (q, k, v, gate, up: 5 of d), q before and after RoPE (2 × 2 bytes), k and v (2 × 2), the attention output
    and its log-sum-exp, the MLP's gate, up, SiLU and product (4 × 2 bytes of mlp), the norms' fp32 scales;
    with QK-norm, each q/k head's fp32 input and bf16 output too."""
    d, q, kv = cfg.n_embd, cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    per_token = 26 * d + 4 * q + 4 * kv + 8 * cfg.mlp_hidden + 4 * cfg.n_head + 8
    if cfg.qk_norm:
        per_token += 6 * (q + kv) + 4 * (cfg.n_head + cfg.n_kv_head)
    return per_token


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
    """Activations kept for backward (bf16 autocast) over the whole student: every block's (measured, above),
    plus the embedding's output and the final norm's (~3 fp32 tensors of d per token). With checkpointing, each
    block keeps only its fp32 input, and one block at a time is recomputed."""
    outside = 12 * cfg.n_embd * tokens
    per_block = block_activation_bytes_per_token(cfg) * tokens
    if checkpointing:
        return 4 * cfg.n_embd * tokens * cfg.n_layer + per_block + outside
    return per_block * cfg.n_layer + outside


def memory_bytes(student, teacher, tokens, n_vocab, *, parallel="ddp", world_size=1, fsdp_teacher=False,
                 checkpointing=False, loss_impl="fused"):
    """Per-GPU memory of a bf16-autocast training step, by component (bytes), for models on any device (meta
    too). Not counted: the CUDA context (~0.5 GB), allocator fragmentation, NCCL buffers."""
    from fused_kd import GEMM_ROWS_CUDA
    sc = student.config
    n = student.num_params()
    emb = student.embed_tokens.weight.numel()
    head = 0 if sc.tie_embeddings else student.lm_head.weight.numel()
    matmul_weights = n - emb - head   # the blocks' weights: the ones autocast casts to bf16
    m = {}
    if parallel == "fsdp":
        # fp32 weights, grads and AdamW moments sharded; the root (embedding, lm_head) is gathered whole in fp32
        # and kept through the step; two blocks' bf16 weights at a time (one in use, one prefetched)
        block = matmul_weights // max(1, sc.n_layer)
        m["student states"] = 16 * n / world_size + 4 * (emb + head) + 2 * 2 * block
    else:
        # fp32 weights 4 + grads 4 (views into DDP's buckets: held once) + AdamW moments 8; and autocast's bf16
        # copy of every block weight, made in the forward and kept for the backward: 2 bytes each
        m["student states"] = 16 * n + AUTOCAST_COPY_BYTES * matmul_weights
    m["student activations"] = activation_bytes(sc, tokens, checkpointing)
    if teacher is not None:
        t_shards = world_size if (parallel == "fsdp" and fsdp_teacher) else 1
        # bf16 weights; its output hidden states (fp32, then the bf16 cast the loss takes)
        m["teacher"] = 2 * teacher.num_params() / t_shards + 6 * tokens * teacher.config.n_embd
    V = n_vocab
    if loss_impl == "reference":   # full fp32 logits of both models, and ~3 tensors of them for autograd
        m["loss"] = tokens * V * 4 * (2 if teacher is not None else 1) * 3
    else:   # fused_kd: S, Tb (fp32) and G (bf16) of [C, V]; the fp32 dW and a bf16 copy of the lm_head
        C = min(tokens, GEMM_ROWS_CUDA)
        m["loss"] = C * V * (10 if teacher is not None else 6) + 6 * V * sc.n_embd
    m["total"] = sum(m.values())
    return m


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
    if teacher is not None:
        t_params = teacher.num_params()
        print(f"  teacher  {c['teacher_model'] or '(ckpt)':12s} {t_params:>15,} params (formula {count_params_formula(teacher.config):,}), "
              f"α={c['alpha']}, T={c['temperature']}")
        flops += tokens_per_step * teacher.flops_per_token(c["block_size"], backward=False, attention_share=share)
    mem = memory_bytes(student, teacher, per_micro, n_vocab, parallel=c["parallel"], world_size=world_size,
                       fsdp_teacher=c["fsdp_teacher"], checkpointing=c["activation_checkpointing"],
                       loss_impl=c["loss_impl"])
    print(f"  vocabulary {n_vocab:,} ({c['tokenizer']}), {student.config.vocab_size:,} embedding rows, softmax over "
          f"{'all rows' if c['loss_all_rows'] else 'the tokenizer ids'}, context {c['block_size']}")
    print(f"  {packing_note}")
    print(f"  weight decay {c['weight_decay']} on {'every parameter' if c['weight_decay_params'] == 'all' else 'matrices'}")
    print(f"  tokens/step {tokens_per_step:,} = {world_size} × {c['batch_size']} × {c['block_size']} × "
          f"{accum if accum else '?'} accumulation" + ("" if accum else "  <-- not divisible: train.py will refuse"))
    print(f"  steps {steps:,} ({steps * tokens_per_step / 1e9:.2f}B tokens), warmup {int(c['warmup_frac'] * steps):,}")
    print(f"  FLOPs/step {flops:.3e} ({flops * steps:.3e} in all)")
    print(f"  memory/GPU ≈ {mem['total'] / gb:.1f} GiB ({c['parallel']}: "
          + ", ".join(f"{k} {v / gb:.1f}" for k, v in mem.items() if k != "total") + ")")
    return {"student_params": s_params, "teacher_params": teacher.num_params() if teacher is not None else 0,
            "tokens_per_step": tokens_per_step, "steps": steps, "flops_per_step": flops, "memory_bytes": mem["total"],
            "memory_breakdown": mem}


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


def readme_table(world_size=8):
    """The README's DDP memory table: a 1.7B student (llama3.1-1b) with each of the paper's teachers, Llama-3
    vocabulary, 8,192-token micro-batches, bf16, DDP on 80 GB GPUs."""
    from data.tokenizer import N_VOCAB, padded_vocab_size
    n_vocab = N_VOCAB["llama3"]
    V, ctx = padded_vocab_size(n_vocab), 8192
    teachers = ["llama3.1-05b", "llama3.1-1b", "llama3.1-3b", "llama3.1-8b"]
    with torch.device("meta"):
        student = GPT(config_from_preset("llama3.1-1b", V, ctx))
        cols = [memory_bytes(student, GPT(config_from_preset(t, V, ctx)), ctx, n_vocab, parallel="ddp",
                             world_size=world_size) for t in teachers]
    gb = 1024 ** 3
    rows = ["| per GPU (GiB) | " + " | ".join(f"{t} teacher" for t in teachers) + " |",
            "|---|" + "---|" * len(teachers)]
    for k in cols[0]:
        name = f"**{k}**" if k == "total" else k
        rows.append(f"| {name} | " + " | ".join((f"**{c[k] / gb:.1f}**" if k == "total" else f"{c[k] / gb:.1f}")
                                               for c in cols) + " |")
    return "\n".join(rows), cols


if __name__ == "__main__":   # python plan.py: the README's DDP memory table; python plan.py presets: every preset's size
    if sys.argv[1:] == ["presets"]:
        print(f"{'preset':12s} {'vocab':>7s} {'params':>10s} {'non-emb':>10s}")
        for name in PRESETS:
            cfg = config_from_preset(name, preset_vocab(name), 1024)
            with torch.device("meta"):
                model = GPT(cfg)
            print(f"{name:12s} {cfg.vocab_size:7d} {model.num_params() / 1e6:9.1f}M {model.num_params(True) / 1e6:9.1f}M")
    else:
        print(readme_table()[0])
