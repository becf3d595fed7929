"""Moons et al. 2016: each convolution and fully-connected layer with its own fixed-point word lengths
for its input and its weight, the greedy per-layer search, the bit-operation count and the storage."""

from __future__ import annotations

import atlas_kernels as ak
import torch
from atlas_reproductions.moons2016 import (
    PrecisionLayer,
    accuracy_on,
    bitop_reduction,
    encode_weights,
    fixed_point_storage,
    layer_macs,
    precision_layers,
    precisions,
    search_precisions,
    set_precisions,
    to_fixed_point,
)
from torch import nn


def _convnet() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))


def test_layers_round_their_input_and_weight_at_their_own_word_lengths() -> None:
    dense = _convnet()
    x = torch.randn(8, 1, 4, 4)
    fixed = to_fixed_point(dense, 16, x)
    conv, fc = precision_layers(fixed)
    assert isinstance(conv, PrecisionLayer) and isinstance(conv.layer, nn.Conv2d)
    assert torch.allclose(fixed(x), dense(x), atol=1e-3)  # 16 bits: the float network up to rounding
    set_precisions(fixed, [(3, 5), (4, 2)])
    assert precisions(fixed) == [(3, 5), (4, 2)]
    il = conv.input_int_length
    xq = ak.round_fixed_point(x, 5, 5 - il)
    h = torch.relu(nn.functional.conv2d(xq, conv.quantized_weight(), dense[0].bias, padding=1)).flatten(1)
    hq = ak.round_fixed_point(h, 2, 2 - fc.input_int_length)
    assert torch.allclose(fixed(x), hq @ fc.quantized_weight().T + dense[3].bias, atol=1e-6)
    assert conv.quantized_weight().unique().numel() <= 8  # 3-bit weights


def test_greedy_search_lowers_each_precision_while_the_accuracy_holds() -> None:
    torch.manual_seed(0)
    dense = _convnet()
    x = torch.randn(200, 1, 4, 4)
    y = dense(x).argmax(1)  # labels the float network gets right: 100%
    fixed = to_fixed_point(dense, 16, x)
    found = search_precisions(fixed, x, y, 90.0, 2)
    assert accuracy_on(fixed, x, y) >= 90.0
    assert all(2 <= b <= 16 for pair in found for b in pair) and found != [(16, 16), (16, 16)]
    # the last word length searched (the last layer's input) is the lowest that keeps the floor
    wb, ib = found[-1]
    if ib > 2:
        set_precisions(fixed, [*found[:-1], (wb, ib - 1)])
        assert accuracy_on(fixed, x, y) < 90.0
    # a floor above what any lower precision keeps leaves the 16-bit network
    assert search_precisions(to_fixed_point(dense, 16, x), x, y, 100.1, 2) == [(16, 16), (16, 16)]


def test_bit_operations_and_storage() -> None:
    fixed = to_fixed_point(_convnet(), 16, torch.randn(8, 1, 4, 4))
    macs = layer_macs(fixed, torch.randn(2, 1, 4, 4))
    assert macs == [3 * 16 * 9, 4 * 48]  # conv: 48 outputs x 9 weights; fc: 4 outputs x 48 inputs
    assert bitop_reduction(macs, [(16, 16), (16, 16)], 16) == 1.0
    assert bitop_reduction(macs, [(4, 8), (4, 8)], 16) == 8.0
    set_precisions(fixed, [(4, 8), (3, 8)])
    parts = {p.name: p.bits for p in fixed_point_storage(fixed)}
    # conv weight as [3, 9] at 4 bits: 8 per word, 2 words a row; fc [4, 48] at 3 bits: 10 per word, 5 a row
    assert parts["0.layer.weight"] == 32 * 3 * 2 and parts["3.layer.weight"] == 32 * 4 * 5
    assert parts["0.layer.bias"] == 32 * 3 and parts["3.layer.bias"] == 32 * 4


def test_stored_codes_decode_to_the_weights_each_layer_computes_with() -> None:
    fixed = to_fixed_point(_convnet(), 16, torch.randn(8, 1, 4, 4))
    set_precisions(fixed, [(5, 8), (3, 8)])
    encoded = encode_weights(fixed)
    for name, layer in fixed.named_modules():
        if isinstance(layer, PrecisionLayer):
            decoded = encoded[f"{name}.layer.weight"].dequantize().reshape(layer.layer.weight.shape)
            assert torch.equal(decoded, layer.quantized_weight())
