"""Before any test module imports triton: without a GPU, Triton kernels run in its CPU interpreter, which must
be chosen before triton is first imported (tests/test_fused_kd.py explains; a child process that compiles for
a GPU target, as tests/test_triton_compile.py does, takes the variable out of its own environment)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# IEEE fp32 for the fp32 GPU checks (tolerances of 1e-5): some images set TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 (torch
# then lets cuBLAS use TF32, 10-bit mantissas, whatever a test asks; read once, at the first GEMM) or leave
# NVIDIA_TF32_OVERRIDE to cuBLAS's default. Pinned here, before anything starts CUDA: torch's override removed,
# cuBLAS's set to 0 (never TF32). The bf16 and TF32 paths under test choose their precision explicitly.
os.environ.pop("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", None)
os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
