"""Fixed-point numbers ``<IL, FL>``: rounding to the grid, saturation, and packed integer codes.

Serves the fixed-point papers: Gupta, Agrawal, Gopalakrishnan & Narayanan 2015 ("Deep Learning with
Limited Numerical Precision": training in ``<IL, FL>`` with round-to-nearest or stochastic rounding)
and Lin, Talathi & Annapureddy 2016 ("Fixed Point Quantization of Deep Convolutional Networks": a
word length and a fractional length per layer). One quantizer for all of them; the choice of the word
length, the fractional length and the rounding mode is each paper's.

Format (Gupta et al. 2015, Sec. 3): a word of ``WL = IL + FL`` bits, two's complement, ``IL`` integer
bits (the sign bit included) and ``FL`` fractional bits; the step is ``eps = 2^-FL`` and the
representable range is ``[-2^(IL-1), 2^(IL-1) - 2^-FL]``, i.e. the integers ``q`` in
``[-2^(WL-1), 2^(WL-1) - 1]`` times ``eps``. ``FL`` may exceed ``WL`` (``IL < 0``: a range below 1/2)
or be negative (a step above 1), as Lin et al.'s per-layer formats need.

Rounding (Gupta et al. 2015, Eq. 1-2), with ``floor(x)`` the largest multiple of ``eps`` not above ``x``:

* ``"nearest"``: ``floor(x)`` if ``x <= floor(x) + eps/2``, else ``floor(x) + eps`` (a tie goes down,
  as the paper writes it);
* ``"stochastic"``: ``floor(x) + eps`` with probability ``(x - floor(x)) / eps``, ``floor(x)``
  otherwise; unbiased: ``E[round(x)] = x`` inside the range.

Saturation: values beyond the range go to its nearest end, ``-2^(IL-1)`` or ``2^(IL-1) - 2^-FL``
(rounded values that land outside it as well).

Storage: codes ``q + 2^(WL-1)`` (offset binary, ``0 <= code < 2^WL``) of a ``[N, K]`` tensor packed
along K with :func:`~._common.pack_codes` (``WL`` in 1..16; ``cpw = 32 // WL`` codes per int32 word).
``IL``/``FL`` are metadata (Python ints), so ``storage_bytes()`` = ``4*N*ceil(K/cpw)``. Decoding is
exact: ``(code - 2^(WL-1)) * 2^-FL`` is an fp32 value with at most 16 significant bits times a power
of two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ._common import PackedTensor, pack_codes, unpack_codes, unpack_codes_int32

__all__ = [
    "FixedPointWeight",
    "encode_fixed_point",
    "fixed_point_codes",
    "fixed_point_range",
    "round_fixed_point",
]

Rounding = Literal["nearest", "stochastic"]


def _check_format(word_length: int, frac_length: int) -> None:
    if not 1 <= word_length <= 16:
        raise ValueError(f"word_length must be in 1..16 (the packed codes' widths), got {word_length}")
    if not -64 <= frac_length <= 64:
        raise ValueError(f"frac_length must be in -64..64, got {frac_length}")


def fixed_point_range(word_length: int, frac_length: int) -> tuple[float, float]:
    """The smallest and the largest value of ``<IL, FL>`` with ``IL = word_length - frac_length``:
    ``(-2^(IL-1), 2^(IL-1) - 2^-FL)``."""
    _check_format(word_length, frac_length)
    half = 1 << (word_length - 1)
    return -half * 2.0 ** -frac_length, (half - 1) * 2.0 ** -frac_length


def _rounded_steps(x: torch.Tensor, word_length: int, frac_length: int, rounding: Rounding,
                   generator: torch.Generator | None) -> torch.Tensor:
    """``q`` as floats (fp32 for fp32/fp16/bf16 input, fp64 otherwise): ``x / eps`` rounded and saturated.
    Scaling by ``2^FL`` is exact; values are clamped just beyond the range before rounding, where
    every ``x / eps - 1/2`` is exact in fp32 (``|x / eps| <= 2^15 + 1``)."""
    _check_format(word_length, frac_length)
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    half = float(1 << (word_length - 1))
    xs = torch.nan_to_num(x.detach().to(dt), nan=0.0) * (2.0 ** frac_length)  # x / eps, exact
    xs = xs.clamp(-half - 1, half + 1)
    if rounding == "nearest":
        q = torch.ceil(xs - 0.5)  # floor(x) unless x is above floor(x) + eps/2: a tie goes down (Eq. 1)
    elif rounding == "stochastic":
        low = torch.floor(xs)
        u = torch.rand(xs.shape, generator=generator, dtype=dt, device=xs.device)
        q = low + (u < (xs - low)).to(dt)  # up with probability (x - floor(x)) / eps (Eq. 2)
    else:
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    return q.clamp_(-half, half - 1)  # saturation


def fixed_point_codes(x: torch.Tensor, word_length: int, frac_length: int, rounding: Rounding = "nearest",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The integers ``q`` (int64, ``-2^(WL-1) <= q < 2^(WL-1)``) of ``x`` rounded to ``<IL, FL>``
    (``rounding``: ``"nearest"`` or ``"stochastic"``, drawing from ``generator``) and saturated;
    the value is ``q * 2^-FL``."""
    return _rounded_steps(x, word_length, frac_length, rounding, generator).to(torch.int64)


def round_fixed_point(x: torch.Tensor, word_length: int, frac_length: int, rounding: Rounding = "nearest",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` rounded to ``<IL, FL>`` and saturated (Gupta et al. 2015's ``Convert(x, <IL, FL>)``), in
    ``x``'s dtype: the values :func:`encode_fixed_point` stores and decodes back exactly."""
    q = _rounded_steps(x, word_length, frac_length, rounding, generator)
    return q.mul_(2.0 ** -frac_length).to(x.dtype)


@dataclass
class FixedPointWeight(PackedTensor):
    """A ``[N, K]`` tensor in ``<IL, FL>``: offset-binary ``word_length``-bit codes packed along K."""

    packed: torch.Tensor  # int32 [N, ceil(K / (32 // word_length))]
    word_length: int
    frac_length: int
    shape: tuple[int, int]

    @property
    def int_length(self) -> int:
        """``IL = WL - FL`` (the sign bit included)."""
        return self.word_length - self.frac_length

    def codes(self) -> torch.Tensor:
        """The packed unsigned codes ``q + 2^(WL-1)``, int64 ``[N, K]``."""
        return unpack_codes(self.packed, self.word_length, self.shape[1])

    def integers(self) -> torch.Tensor:
        """The two's-complement integers ``q``, int64 ``[N, K]``."""
        return self.codes() - (1 << (self.word_length - 1))

    def dequantize(self) -> torch.Tensor:
        """Dense fp32 ``[N, K]``: ``q * 2^-FL``, exact."""
        c = unpack_codes_int32(self.packed, self.word_length, self.shape[1]) - (1 << (self.word_length - 1))
        return c.to(torch.float32) * (2.0 ** -self.frac_length)


def encode_fixed_point(w: torch.Tensor, word_length: int, frac_length: int, rounding: Rounding = "nearest",
                       generator: torch.Generator | None = None) -> FixedPointWeight:
    """``w`` ``[N, K]`` rounded to ``<IL, FL>`` (``IL = word_length - frac_length``), saturated and
    packed: ``encode_fixed_point(w, ...).dequantize()`` equals ``round_fixed_point(w, ...)`` (the same
    draws for stochastic rounding). A value already on the grid is stored exactly."""
    if w.dim() != 2:
        raise ValueError("weight must be [N, K] (reshape a bias to [1, n], a convolution to [out, in*k*k])")
    q = fixed_point_codes(w, word_length, frac_length, rounding, generator)
    codes = q + (1 << (word_length - 1))
    return FixedPointWeight(pack_codes(codes, word_length), word_length, frac_length,
                            (int(w.shape[0]), int(w.shape[1])))
