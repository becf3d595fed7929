"""Shi & Chu's convolution that skips zero input neurons: it computes the convolution, its sparse
operand holds only the non-zero activations, and the sparsity it is measured at."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.shi2017 import (
    conv_inputs,
    conv_names,
    dense_lowered_conv,
    lowered,
    sparse_input_conv,
    sparsify,
    sparsity,
)
from torch import nn

from atlas.harness import models


@pytest.mark.parametrize(("k", "padding", "stride", "bias"), [(3, 1, 1, False), (3, 0, 2, True), (1, 0, 1, True)])
def test_the_sparse_input_convolution_is_the_convolution(k: int, padding: int, stride: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, k, padding=padding, stride=stride, bias=bias)
    x = torch.relu(torch.randn(3, 5, 9, 8))  # a ReLU's output: about half zeros
    with torch.no_grad():
        ref = conv(x)
        assert torch.allclose(dense_lowered_conv(x, conv), ref, atol=1e-5)
        assert torch.allclose(sparse_input_conv(x, conv), ref, atol=1e-5)


def test_the_sparse_operand_holds_the_non_zero_activations_only() -> None:
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    x = torch.zeros(1, 2, 5, 5)
    x[0, 1, 2, 2] = 4.0  # one non-zero neuron: it appears in the 9 patches that cover it
    cols = lowered(x, conv)
    assert cols.shape == (2 * 9, 25)
    encoded = ak.to_csr(cols.T.contiguous())
    assert encoded.val.numel() == 9 and encoded.val.tolist() == [4.0] * 9
    with torch.no_grad():
        assert torch.allclose(sparse_input_conv(x, conv), conv(x))


def test_sparsify_zeroes_the_smallest_activations() -> None:
    x = torch.tensor([[0.0, 3.0, -1.0, 0.5], [2.0, 0.0, 0.1, -4.0]])
    assert sparsity(x) == pytest.approx(0.25)
    y = sparsify(x, 0.5)  # keep the 4 largest magnitudes: -4, 3, 2, -1
    assert y.tolist() == [[0.0, 3.0, -1.0, 0.0], [2.0, 0.0, 0.0, -4.0]]
    assert sparsity(sparsify(x, 0.75)) == pytest.approx(0.75)
    assert torch.equal(sparsify(x, 0.1), x)  # already sparser than asked: unchanged


def test_the_inputs_of_the_convolutions_after_the_first_are_relu_outputs() -> None:
    torch.manual_seed(0)
    net = models.build("vgg-small", (1, 12, 12), 10, width=0.125)
    names = conv_names(net)[1:]
    seen = conv_inputs(net, names, torch.randn(4, 1, 12, 12))
    assert set(seen) == set(names)
    for n in names:
        assert bool((seen[n] >= 0).all())  # after a ReLU (and max pooling): no negative value
        assert 0.0 < sparsity(seen[n]) < 1.0
