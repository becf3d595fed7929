"""Mao et al.'s pruning granularities: group saliencies, the masks at one density, and the kernel-level
encoding whose index saving the paper claims (decoded exactly, smaller than CSR)."""

from __future__ import annotations

import torch
from atlas_reproductions.mao2017 import (
    encode_fine,
    encode_kernels,
    group_mask,
    group_saliency,
    prune_granularity,
)


def _weight() -> torch.Tensor:
    return torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).view(2, 3, 3, 3) - 20


def test_group_saliencies_sum_the_magnitudes_of_each_group() -> None:
    w = _weight()
    assert group_saliency(w, "kernel").shape == (2, 3)
    assert float(group_saliency(w, "kernel")[0, 0]) == sum(abs(v) for v in range(-20, -11))  # 144
    assert float(group_saliency(w, "vector")[1, 2, 0]) == sum(abs(v) for v in (25, 26, 27))
    assert float(group_saliency(w, "filter")[0]) == float(w[0].abs().sum())


def test_kernel_mask_keeps_whole_kernels_of_largest_saliency() -> None:
    w = _weight()
    mask = group_mask(w, 1 / 3, "kernel")  # 2 of the 6 kernels
    kept = mask.flatten(2).all(2)
    assert (mask.flatten(2).any(2) == kept).all()  # whole kernels only
    # kernel sums: (0, 0) 144, (0, 1) 63, (0, 2) 24, (1, 0) 99, (1, 1) 180, (1, 2) 261
    assert kept.nonzero().tolist() == [[1, 1], [1, 2]]
    torch.manual_seed(0)
    fine = group_mask(torch.randn(4, 4, 3, 3), 0.3, "fine")
    assert int(fine.sum()) == 43 and not (fine.flatten(2).all(2) == fine.flatten(2).any(2)).all()


def test_kernel_encoding_decodes_exactly_and_saves_the_indices() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 6, 3, 3)
    w = w * group_mask(w, 0.25, "kernel")
    enc = encode_kernels(w)
    assert torch.equal(enc.to_dense(), w)
    fine = encode_fine(w)
    assert torch.equal(fine.to_dense().view_as(w), w)
    nk = 12  # a quarter of 48 kernels
    assert enc.storage_bytes() == 4 * 9 + 4 * nk + 4 * 9 * nk
    assert fine.storage_bytes() == 4 * 9 + 4 * 9 * nk + 4 * 9 * nk
    assert fine.storage_bytes() > enc.storage_bytes()


def test_prune_granularity_leaves_dense_layers_and_keeps_whole_rows() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 6, 3))
    first = net[0].weight.detach().clone()
    masks = prune_granularity(net, [1.0, 0.5], "vector")
    assert list(masks) == ["1.weight"] and torch.equal(net[0].weight, first)
    rows = masks["1.weight"].bool()
    assert (rows.all(3) == rows.any(3)).all() and int(rows.all(3).sum()) == 36  # half of 6 x 4 x 3 rows
    assert torch.equal(net[1].weight == 0, ~rows)
