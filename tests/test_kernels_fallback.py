"""atlas_kernels must import and fall back to the PyTorch reference when Triton cannot be imported."""

from __future__ import annotations

import subprocess
import sys


def test_package_imports_without_triton() -> None:
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, atlas_kernels as ak\n"
        "assert not ak.triton_available()\n"
        "w = ak.binarize_weight(torch.randn(4, 40))\n"
        "y = ak.binary_matmul(torch.randn(2, 40), w)\n"
        "assert y.shape == (2, 4)\n"
        "try:\n    ak.binary_matmul(torch.randn(2, 40), w, backend='triton')\nexcept RuntimeError:\n    pass\n"
        "else:\n    raise SystemExit('forced triton should fail')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
