"""Group-wise brain damage: the im2col groups, their removal by norm, and the thinned convolution
(the kept columns of the kernel matrix times the kept rows of the patch matrix)."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.lebedev2016 import (
    ThinnedConv2d,
    apply_group_mask,
    group_lasso,
    group_norms,
    smallest_groups,
)
from torch import nn
from torch.nn import functional as F

from atlas.harness import measure


def _conv() -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(3, 5, 3, padding=1)


def test_groups_are_the_kernel_matrix_columns() -> None:
    conv = _conv()
    norms = group_norms(conv)
    assert norms.shape == (27,)
    # group (s, i, j) = W[:, s, i, j]: the column s*9 + i*3 + j of the im2col kernel matrix
    torch.testing.assert_close(norms[1 * 9 + 2 * 3 + 0], conv.weight[:, 1, 2, 0].norm())
    assert float(group_lasso(conv).detach()) == pytest.approx(float(norms.detach().sum()), rel=1e-5)


def test_the_thinned_product_computes_the_masked_convolution() -> None:
    conv = _conv()
    x = torch.randn(4, 3, 7, 7)
    every = torch.ones(27, dtype=torch.bool)
    torch.testing.assert_close(ThinnedConv2d(conv, every)(x), conv(x), rtol=1e-5, atol=1e-5)
    keep = torch.rand(27, generator=torch.Generator().manual_seed(1)) > 0.6
    thin = ThinnedConv2d(conv, keep)
    apply_group_mask(conv, keep)
    assert int((conv.weight.abs().sum(0) > 0).sum()) == int(keep.sum())
    torch.testing.assert_close(thin(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-5, atol=1e-5)
    assert thin.weight.shape == (5, int(keep.sum()))
    # FLOPs fall with the groups kept (the matrix product's share)
    ratio = measure.flops(ThinnedConv2d(_conv(), every), (3, 7, 7)) / measure.flops(thin, (3, 7, 7))
    assert ratio == pytest.approx(27 / int(keep.sum()), rel=1e-6)


def test_smallest_groups_go_first_and_removed_groups_stay_removed() -> None:
    conv = _conv()
    with torch.no_grad():
        conv.weight[:, 0, 0, 0] = 1e-3  # group 0: tiny
        conv.weight[:, 2, 2, 2] = 5.0  # group 26: large
    already = torch.ones(27, dtype=torch.bool)
    already[26] = False  # removed earlier, although it is large now
    keep = smallest_groups(conv, 2, already)
    assert not keep[26] and not keep[0] and int(keep.sum()) == 25
    norms = group_norms(conv).detach()
    keep4 = smallest_groups(conv, 4, keep)
    removed = (~keep4 & keep).nonzero().flatten()
    others = norms[keep4]
    assert float(norms[removed].max()) <= float(others.min())
