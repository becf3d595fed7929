"""Compression Atlas kernels (import name ``atlas_kernels``).

Five families of compressed-weight matrix products, each with its encoding functions, a PyTorch
reference, a Triton kernel and one entry point that runs Triton on CUDA tensors and the reference
elsewhere (``backend="auto" | "triton" | "reference"``):

* :mod:`.binary`   - XNOR + popcount binary GEMM (BinaryConnect, BNN, XNOR-Net)
* :mod:`.lowbit`   - packed 2/4/k-bit and power-of-two weights (TWN, TTQ, DoReFa, INQ)
* :mod:`.codebook` - weight sharing / VQ / PQ / HashedNets codebook lookup GEMM
* :mod:`.sparse`   - CSR, block-sparse and EIE compressed-column SpMV / SpMM (pruning, EIE)
* :mod:`.int8`     - int8 x int8 -> int32 GEMM with per-channel scales (Vanhoucke 2011, Lin 2016)

The package holds encodings and compute only: the algorithms that choose the compressed values
(magnitude pruning, k-means weight sharing, TWN's threshold, BinaryConnect's sign) are the papers' own,
in ``reproductions/``, which encode their results with the functions here. Every packed weight has
``storage_bytes()`` (what it really occupies: the bytes of its tensors). Importing this package never
imports Triton; the ``@triton.jit`` kernels are defined on first use of the Triton path, so
``TRITON_INTERPRET=1`` may be set any time before that. See kernels/README.md.
"""

from ._backend import interpreting, resolve_backend, triton_available, triton_unavailable_reason
from ._common import PackedTensor, pack_codes, unpack_codes
from .binary import (
    BinaryActivation,
    BinaryWeight,
    binarize_activation,
    binarize_weight,
    binary_matmul,
    binary_matmul_reference,
    pack_signs,
    unpack_signs,
    xnor_popcount_cpu,
)
from .codebook import (
    CodebookWeight,
    codebook_matmul,
    codebook_matmul_reference,
    encode_codebook,
    hashednets_weight,
)
from .fixed_point import (
    FixedPointWeight,
    encode_fixed_point,
    fixed_point_codes,
    fixed_point_range,
    round_fixed_point,
)
from .int8 import (
    Int8Weight,
    int8_matmul,
    int8_matmul_reference,
    quantize_int8_activation,
    quantize_int8_weight,
)
from .lowbit import (
    LowBitWeight,
    encode_binary,
    encode_ternary,
    lowbit_matmul,
    lowbit_matmul_reference,
    quantize_pow2,
    quantize_uniform,
)
from .sparse import (
    BlockSparseWeight,
    CSRWeight,
    EIEWeight,
    sparse_matmul,
    sparse_matmul_reference,
    to_bsr,
    to_csr,
    to_eie,
)

__all__ = [
    "BinaryActivation",
    "BinaryWeight",
    "BlockSparseWeight",
    "CSRWeight",
    "CodebookWeight",
    "EIEWeight",
    "FixedPointWeight",
    "Int8Weight",
    "LowBitWeight",
    "PackedTensor",
    "binarize_activation",
    "binarize_weight",
    "binary_matmul",
    "binary_matmul_reference",
    "codebook_matmul",
    "codebook_matmul_reference",
    "encode_binary",
    "encode_codebook",
    "encode_fixed_point",
    "encode_ternary",
    "fixed_point_codes",
    "fixed_point_range",
    "hashednets_weight",
    "int8_matmul",
    "int8_matmul_reference",
    "interpreting",
    "lowbit_matmul",
    "lowbit_matmul_reference",
    "pack_codes",
    "pack_signs",
    "quantize_int8_activation",
    "quantize_int8_weight",
    "quantize_pow2",
    "quantize_uniform",
    "resolve_backend",
    "round_fixed_point",
    "sparse_matmul",
    "sparse_matmul_reference",
    "to_bsr",
    "to_csr",
    "to_eie",
    "triton_available",
    "triton_unavailable_reason",
    "unpack_codes",
    "unpack_signs",
    "xnor_popcount_cpu",
]
