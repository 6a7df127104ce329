"""Before any test module imports triton: without a GPU, Triton kernels run in its CPU interpreter, which must
be chosen before triton is first imported (tests/test_fused_kd.py explains; a child process that compiles for
a GPU target, as tests/test_triton_compile.py does, takes the variable out of its own environment)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
