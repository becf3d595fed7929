"""Import this before anything that may define Triton kernels (tests/test_kernels*.py do).

By default the kernel tests run the Triton kernels in the Triton interpreter on CPU tensors: the
interpreter is chosen when a ``@triton.jit`` kernel is defined, so ``TRITON_INTERPRET=1`` must be in
the environment before ``atlas_kernels`` first uses its Triton path (the kernels are defined lazily,
so importing torch or atlas_kernels earlier is fine). On a GPU machine, ``ATLAS_KERNELS_TEST_CUDA=1``
runs the same tests compiled for the GPU instead.
"""

from __future__ import annotations

import os

import torch

if os.environ.get("ATLAS_KERNELS_TEST_CUDA") == "1" and torch.cuda.is_available():
    DEVICE = "cuda"
else:
    os.environ["TRITON_INTERPRET"] = "1"
    DEVICE = "cpu"
