"""Sparse CNN (Liu et al. 2015): the two-stage decomposition (basis transform P, basis kernels S,
sparse kernel matrix Q), the pruning of Q and the sparse-product inference path."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.liu2015 import (
    SparseConv2d,
    decompose,
    decomposed,
    kernel_sparsity,
    l1_of_kernels,
    nonzero_weights,
    prune_kernels,
    sparse_layers,
)
from torch import nn


def _conv(bias: bool = False, stride: int = 1) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(4, 6, 3, padding=1, stride=stride, bias=bias)


def test_the_decomposition_is_exact_and_its_bases_orthonormal() -> None:
    conv = _conv()
    p, s, q = decompose(conv.weight.detach())
    assert p.shape == (4, 4) and s.shape == (4, 9, 9) and q.shape == (6, 4, 9)
    torch.testing.assert_close(p @ p.T, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(s[2] @ s[2].T, torch.eye(9), atol=1e-5, rtol=0)
    # w[:, i] = sum_k P[k, i] sum_h Q[:, k, h] S[k, h]
    rebuilt = torch.einsum("ki,nkh,khs->nis", p, q, s).view_as(conv.weight)
    torch.testing.assert_close(rebuilt, conv.weight.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("bias", "stride"), [(False, 1), (True, 2)])
def test_the_decomposed_layer_computes_the_convolution(bias: bool, stride: int) -> None:
    conv = _conv(bias, stride)
    x = torch.randn(2, 4, 9, 9)
    layer = SparseConv2d(conv)
    assert layer.S.groups == 4 and layer.Q.weight.shape == (6, 36, 1, 1)
    torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=1e-4)


def test_the_first_stage_concentrates_the_kernel_in_few_transformed_maps() -> None:
    # a kernel whose input maps are all multiples of one map: after P only one transformed map is used
    torch.manual_seed(1)
    base = torch.randn(6, 1, 3, 3)
    w = base * torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 4, 1, 1)
    _, _, q = decompose(w)
    per_map = q.pow(2).sum((0, 2))
    assert int((per_map > 1e-8 * per_map.sum()).sum()) == 1


def test_pruning_zeros_the_smallest_coefficients_and_the_sparse_product_matches() -> None:
    model = decomposed(nn.Sequential(_conv(bias=True)))
    layer = sparse_layers(model)[0]
    before = layer.Q.weight.detach().abs().flatten().clone()
    prune_kernels(model, 0.75)
    after = layer.Q.weight.detach().flatten()
    assert int((after == 0).sum()) == 162  # round(0.75 * 216)
    assert float(before[after == 0].max()) <= float(before[after != 0].min())
    assert kernel_sparsity(model) == pytest.approx(0.75)
    # P (4 x 4) and S (4 maps x 9 bases x 3 x 3) stay dense: 16 + 324 + 54 non-zero
    assert nonzero_weights(model) == 16 + 324 + 54
    assert float(l1_of_kernels(model).detach()) == pytest.approx(float(after.abs().sum()), rel=1e-6)
    with torch.no_grad():
        layer.Q.weight.add_(1.0)  # training moves the pruned weights; the mask puts them back
    layer.apply_mask()
    assert int((layer.Q.weight == 0).sum()) == 162
    x = torch.randn(3, 4, 8, 8)
    torch.testing.assert_close(layer.sparse_forward(x), layer(x).detach(), atol=1e-5, rtol=1e-4)


def test_the_decomposed_network_computes_the_same_logits() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.Flatten(),
                        nn.Linear(8 * 5 * 5, 3)).eval()
    sparse = decomposed(net).eval()
    assert len(sparse_layers(sparse)) == 2
    x = torch.randn(2, 1, 5, 5)
    torch.testing.assert_close(sparse(x), net(x), atol=1e-5, rtol=1e-4)
