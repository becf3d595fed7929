"""Unit tests of balanced quantization's pieces (zhou2017b): the recursive median partition gives bins of
equal counts that are the percentile bins of a histogram equalisation, the unbalanced extremal-value
quantizer does not, the quantized levels are a uniform grid with the least-squares scale, the straight-through
step reaches the full-precision weights, and the packed k-bit encoding decodes to the quantized weights
exactly."""

from __future__ import annotations

import torch
from atlas_reproductions.zhou2017b import (
    balanced_codes,
    code_entropy,
    encode,
    extremal_codes,
    level_step,
    quantize,
)
from torch import nn


def test_recursive_median_partition_small_example() -> None:
    w = torch.tensor([5.0, -1.0, 0.5, 100.0, -3.0, 0.0, 2.0, 7.0])
    # sorted: -3 -1 0 0.5 | 2 5 7 100 -> medians 0.5, then -1 and 5
    assert balanced_codes(w, 1).tolist() == [1, 0, 0, 1, 0, 0, 1, 1]
    assert balanced_codes(w, 2).tolist() == [2, 0, 1, 3, 0, 1, 2, 3]
    assert balanced_codes(w, 3).tolist() == [5, 1, 3, 7, 0, 2, 4, 6]  # 8 values, 8 bins: their ranks


def test_balanced_bins_are_equal_count_percentile_bins() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=g) ** 3  # heavy-tailed, as trained weights are
    for bits in (2, 3, 4):
        c = balanced_codes(w, bits)
        counts = torch.bincount(c.reshape(-1), minlength=2**bits)
        assert counts.tolist() == [w.numel() // 2**bits] * 2**bits
        # bin c = floor(2^k F(w)), F the empirical CDF (rank / n): histogram equalisation
        rank = w.reshape(-1).argsort().argsort()
        assert torch.equal(c.reshape(-1), rank * 2**bits // w.numel())
        assert abs(code_entropy(c, bits) - bits) < 1e-9
        # the extremal-value grid crowds the weights into the middle levels: far fewer bits used
        assert code_entropy(extremal_codes(w, bits), bits) < 0.6 * bits
    # an odd count: each split sends ceil(m / 2) down; ties go by position
    assert balanced_codes(torch.tensor([3.0, 1.0, 2.0]), 1).tolist() == [1, 0, 0]
    assert balanced_codes(torch.tensor([0.0, 0.0, 0.0, 0.0]), 2).tolist() == [0, 1, 2, 3]


def test_extremal_codes_span_the_largest_magnitude() -> None:
    w = torch.tensor([-2.0, -1.0, -0.2, 0.5, 2.0])
    assert extremal_codes(w, 2).tolist() == [0, 1, 1, 2, 3]  # levels at -2, -2/3, 2/3, 2
    assert extremal_codes(torch.tensor([-0.1, 0.05, 1.0]), 1).tolist() == [0, 1, 1]


def test_levels_are_a_uniform_grid_with_least_squares_scale() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(32, 16, generator=g)
    for bits in (2, 3):
        q = quantize(w, bits)
        levels = torch.unique(q)
        assert len(levels) == 2**bits
        assert torch.allclose(levels.diff(), levels.diff()[0].expand(2**bits - 1), atol=1e-6)
        assert torch.allclose(levels, -levels.flip(0), atol=1e-6)  # symmetric around zero
        # alpha minimises ||w - alpha g||: a slightly larger or smaller scale is worse
        err = (w - q).pow(2).sum()
        assert err < (w - 1.02 * q).pow(2).sum() and err < (w - 0.98 * q).pow(2).sum()
        c = balanced_codes(w, bits)
        assert torch.equal(q, (c.float() - (2**bits - 1) / 2) * level_step(w, c, bits))


def test_encoding_decodes_to_the_quantized_weights_exactly() -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(10, 37, generator=g)
    for bits in (2, 3, 4):
        enc = encode(w, bits)
        assert enc.bits == bits and enc.scheme == "affine"
        assert torch.equal(enc.dequantize(), quantize(w, bits))
        assert torch.equal(enc.codes().to(torch.int64), balanced_codes(w, bits))
        assert enc.packed.numel() == 10 * -(-37 // (32 // bits))  # 32 // k codes to an int32 word


def test_straight_through_finetune_moves_full_precision_weights() -> None:
    """The step taken at q(w) is applied to w: after training, the layer's weights are quantized again
    from the updated full-precision weights (so the model changed), and are on a 2-bit grid."""
    from atlas_reproductions.zhou2017b import quantized_network

    class FakeRun:
        def reseed(self, *a, **k) -> None:
            torch.manual_seed(0)

        def dataset(self):
            class D:
                train = None
            return D()

        def train(self, model, data, cfg, desc, before_step, after_step) -> None:
            opt = torch.optim.SGD(model.parameters(), lr=0.5)
            x = torch.randn(16, 8)
            for _ in range(3):
                before_step(model)
                loss = model(x).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                after_step(model)

    torch.manual_seed(3)
    dense = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    before = dense[0].weight.detach().clone()
    post = quantized_network(FakeRun(), dense, 2, balanced_codes, None)  # type: ignore[arg-type]
    tuned = quantized_network(FakeRun(), dense, 2, balanced_codes, object())  # type: ignore[arg-type]
    assert len(torch.unique(tuned[0].weight)) == 4
    assert not torch.equal(post[0].weight, tuned[0].weight)
    assert torch.equal(dense[0].weight, before)  # the dense network is left alone
