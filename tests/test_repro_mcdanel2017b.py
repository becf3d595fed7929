"""eBNN (mcdanel2017b): the reordered inference with bit temporaries computes the BNN's outputs, its
packed temporaries, the memory accounting and the stored weights."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.courbariaux2015 import BinaryConv2d, BinaryLinear
from atlas_reproductions.courbariaux2016 import SignActivation, binarize_network
from atlas_reproductions.mcdanel2017b import PROFILES, ebnn_forward, network, storage, temporaries
from torch import nn


def _bnn(filters: list[int], size: int = 12, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    bnn = binarize_network(network((1, size, size), 4, filters))
    with torch.no_grad():  # BN statistics as after training (negative scales included), so eval is not trivial
        for m in bnn.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.uniform_(-2, 2)
                m.running_var.uniform_(0.5, 3)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-1, 1)
    return bnn.eval()


def test_the_bnn_is_conv_pool_bn_sign_blocks_with_the_twins_weights() -> None:
    torch.manual_seed(0)
    fp32 = network((1, 12, 12), 4, [6, 8])
    bnn = binarize_network(fp32)
    assert [type(m) for m in bnn][:4] == [BinaryConv2d, nn.MaxPool2d, nn.BatchNorm2d, SignActivation]
    assert isinstance(bnn[-2], BinaryLinear) and bnn[-2].bias is None
    for a, b in zip(fp32.parameters(), bnn.parameters(), strict=True):
        assert torch.equal(a, b)


def test_reordered_inference_gives_the_layer_by_layer_outputs() -> None:
    bnn = _bnn([6, 8])
    x = torch.randn(20, 1, 12, 12)
    out, packed = ebnn_forward(bnn, x)
    assert torch.allclose(out, bnn(x), atol=1e-4)
    assert torch.equal(out.argmax(1), bnn(x).argmax(1))  # the padded taps are 0 in the network, not +1
    # the temporaries are the blocks' outputs as bits: 6 x 6 x 6 = 216 -> 7 words, 8 x 3 x 3 = 72 -> 3 words
    assert [tuple(p.shape) for p in packed] == [(20, 7), (20, 3)]
    first = torch.sign(bnn[2](bnn[1](bnn[0](x))))
    assert torch.equal(ak.unpack_signs(packed[0], 216), first.flatten(1))


def test_temporaries_count_fp32_maps_against_packed_bits() -> None:
    bnn = _bnn([16], size=28)
    t = temporaries(bnn, torch.randn(2, 1, 28, 28))
    # layer by layer: the 28 x 28 image and the 16 x 28 x 28 convolution map in fp32
    assert t["float_temp_bytes"] == 4 * (784 + 16 * 784)
    # eBNN: the block's 16 x 14 x 14 = 3136 output bits (98 words) and one float
    assert t["ebnn_temp_bytes"] == 4 * 98 + 4
    assert t["temp_memory_reduction"] == pytest.approx(4 * 3136 / (4 * 98 + 4))


def test_storage_packs_the_signs_and_keeps_bn_and_biases_in_fp32() -> None:
    bnn = _bnn([16], size=28)
    parts = {p.name: p.bits for p in storage(bnn)}
    assert parts["0.weight"] == 16 * 32  # 9 signs a filter: one word
    assert parts["5.weight"] == 4 * 98 * 32  # 3136 inputs: 98 words a row
    assert parts["0.bias"] == 16 * 32 and parts["2.weight"] == 16 * 32


def test_profiles() -> None:
    assert PROFILES["quick"]["seeds"] >= 3 and PROFILES["paper"]["dataset"] == "mnist"


def test_stored_signs_decode_to_the_binary_weights() -> None:
    from atlas_reproductions.courbariaux2015 import binarize_deterministic

    bnn = _bnn([16], size=28)
    layers = [m for m in bnn.modules() if isinstance(m, BinaryConv2d | BinaryLinear)]
    assert layers
    for m in layers:
        signs = binarize_deterministic(m.weight.detach()).flatten(1)
        packed = ak.binarize_weight(signs, scale=False)  # what storage() counts
        assert torch.equal(packed.dequantize(), signs)
