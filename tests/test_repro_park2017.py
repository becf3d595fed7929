"""Park et al.'s direct sparse convolution (the CSR matrix of input offsets, the virtual matrix's
columns) against the dense convolution, and the pieces of Guided Sparsity Learning."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.park2017 import (
    apply_threshold,
    conv_names,
    direct_sparse_conv,
    encode_direct,
    guided_convs,
    l1_penalty,
    lowered_sparse_conv,
    sparsity_masks,
)
from torch import nn

from atlas.harness import models


def _sparse_conv(cin: int, cout: int, k: int, padding: int, density: float, bias: bool, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, padding=padding, bias=bias)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) < density)
    return conv


@pytest.mark.parametrize(("k", "padding", "bias", "hw"), [(3, 1, False, (9, 7)), (3, 0, True, (6, 8)),
                                                           (5, 2, True, (7, 7)), (1, 0, False, (4, 5))])
def test_direct_sparse_convolution_is_the_dense_convolution(k: int, padding: int, bias: bool,
                                                             hw: tuple[int, int]) -> None:
    conv = _sparse_conv(5, 7, k, padding, 0.3, bias)
    x = torch.randn(3, 5, *hw)
    layer = encode_direct(conv, hw)
    with torch.no_grad():
        ref = conv(x)
        got = direct_sparse_conv(x, layer)
        lowered = lowered_sparse_conv(x, layer, ak.to_csr(conv.weight.reshape(7, -1)))
    assert got.shape == ref.shape == lowered.shape
    assert torch.allclose(got, ref, atol=1e-5) and torch.allclose(lowered, ref, atol=1e-5)
    # the CSR matrix holds the non-zero weights and nothing else
    assert layer.csr.val.numel() == int(torch.count_nonzero(conv.weight))


def test_a_weight_is_stored_at_its_offset_in_the_padded_input() -> None:
    conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1, 2, 1, 0] = 2.5  # n=1, c=2, r=1, s=0
    layer = encode_direct(conv, (5, 4))  # padded 7 x 6
    assert layer.csr.shape == (2, 3 * 7 * 6)
    assert layer.csr.rowptr.tolist() == [0, 0, 1]
    assert layer.csr.col.tolist() == [(2 * 7 + 1) * 6 + 0]
    assert layer.csr.val.tolist() == [2.5]
    # a one-hot input at padded position (c=2, y'=3, x'=2) reaches output (y, x) = (2, 2) of channel 1
    x = torch.zeros(1, 3, 5, 4)
    x[0, 2, 2, 1] = 1.0  # unpadded (2, 1) is padded (3, 2): output y = 3 - 1 = 2, x = 2 - 0 = 2
    y = direct_sparse_conv(x, layer)
    assert y[0, 1, 2, 2].item() == 2.5 and int(torch.count_nonzero(y)) == 1


def test_a_changed_offset_computes_another_convolution() -> None:
    conv = _sparse_conv(4, 6, 3, 1, 0.4, False)
    x = torch.randn(2, 4, 6, 6)
    layer = encode_direct(conv, (6, 6))
    wrong = ak.CSRWeight(layer.csr.rowptr, layer.csr.col + 1, layer.csr.val, layer.csr.shape)
    with torch.no_grad():
        ref = conv(x)
    assert not torch.allclose(direct_sparse_conv(x, type(layer)(wrong, (6, 6), (3, 3), 1, None)), ref, atol=1e-3)


def test_stride_two_is_refused() -> None:
    with pytest.raises(ValueError, match="stride 1"):
        encode_direct(nn.Conv2d(2, 2, 3, stride=2), (8, 8))


def test_guided_layers_leave_the_first_convolution_dense() -> None:
    net = models.build("staged-conv", (1, 12, 12), 10, chans=[6, 12], per_stage=2)
    names = conv_names(net)
    assert len(names) == 4
    assert guided_convs(net, [0]) == names[1:]
    assert guided_convs(net, [0, 3]) == names[1:3]


def test_one_magnitude_threshold_over_the_guided_layers() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 2, bias=False), nn.Conv2d(1, 1, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]]))
        net[1].weight.copy_(torch.tensor([[[[-4.0, 0.1], [0.2, 5.0]]]]))
    masks = sparsity_masks(net, ["0", "1"], 0.5)  # keep the 4 largest of 8: 5, -4, 3, -2
    assert masks["0"].flatten().tolist() == [False, True, True, False]
    assert masks["1"].flatten().tolist() == [True, False, False, True]
    # one threshold: a layer of small weights gives up more of them than a per-layer cut would
    with torch.no_grad():
        net[0].weight.mul_(0.01)
    masks = sparsity_masks(net, ["0", "1"], 0.5)  # 5, -4, 0.2, 0.1: all of the second layer
    assert not masks["0"].any() and masks["1"].all()


def test_threshold_and_l1_penalty() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 2, bias=False), nn.Conv2d(1, 1, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[[[1e-5, -1e-4, 2e-4, -0.3]]]]).view(1, 1, 2, 2))
        net[1].weight.copy_(torch.tensor([[[[1e-5, 1e-5, 1e-5, 1e-5]]]]).view(1, 1, 2, 2))
    assert l1_penalty(net, ["0"], 2.0).item() == pytest.approx(2.0 * (1e-5 + 1e-4 + 2e-4 + 0.3))
    apply_threshold(net, ["0"], 1e-4)
    assert net[0].weight.flatten().tolist() == pytest.approx([0.0, 0.0, 2e-4, -0.3])
    assert int(torch.count_nonzero(net[1].weight)) == 4  # a layer GSL leaves dense keeps its small weights
