"""Dong et al.'s stochastic quantization: the error, the roulette (paper and code readings), the hybrid
weight and its gradient, the stages, and the deployed encodings."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.courbariaux2015 import quantized_layers
from atlas_reproductions.dong2017b import (
    SQLinear,
    encode_bwn_layers,
    hybrid_weight,
    n_quantized,
    quantization_error,
    roulette,
    set_ratio,
    storage,
)
from atlas_reproductions.li2016 import encode_ternary_layers, ternarize
from atlas_reproductions.rastegari2016 import binary_weight
from torch import nn

from atlas.harness import measure


def test_quantization_error_is_the_relative_l1_error_of_each_filter() -> None:
    w = torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, 0.0]])
    q = torch.tensor([[1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    assert quantization_error(w, q).tolist() == [0.0, 1.0, 0.0]  # |2-1|+|0-1| over |2|+|0|; empty -> 0


def test_quantized_count_follows_the_released_code() -> None:
    assert [n_quantized(10, r) for r in (0.5, 0.75, 0.875, 1.0)] == [5, 8, 9, 10]
    assert n_quantized(7, 0.5) == 4  # 7 - int(3.5)


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_roulette_prefers_filters_with_small_error(mode: str) -> None:
    """Filter 0 quantizes almost exactly, filter 1 badly: at r = 0.5 (one of two quantized) the first is
    chosen far more often, under both readings; the count is always one."""
    err = torch.tensor([0.01, 1.0])
    gen = torch.Generator().manual_seed(0)
    masks = torch.stack([roulette(err, 0.5, mode, gen) for _ in range(2000)])
    assert bool((masks.sum(1) == 1).all())
    share = masks[:, 0].float().mean().item()
    expected = (1 / 0.01) / (1 / 0.01 + 1 / 1.0) if mode == "paper" else 1.0 / 1.01  # P(filter 0 quantized)
    assert share == pytest.approx(expected, abs=0.02)


def test_roulette_at_full_ratio_quantizes_every_filter_and_a_zero_error_filter_stays_quantized() -> None:
    assert bool(roulette(torch.rand(6), 1.0, "paper").all())
    assert bool(roulette(torch.rand(6), 1.0, "code").all())
    mask = roulette(torch.tensor([0.0, 0.0, 0.5, 0.0]), 0.5, "code")  # 2 to keep real, only one has error
    assert mask.tolist() == [True, True, False, True]
    with pytest.raises(ValueError):
        roulette(torch.rand(3), 0.5, "other")  # type: ignore[arg-type]


def test_hybrid_weight_takes_quantized_rows_where_selected() -> None:
    w = torch.randn(3, 2, 3, 3)
    q = binary_weight(w)
    h = hybrid_weight(w, q, torch.tensor([True, False, True]))
    assert torch.equal(h[0], q[0]) and torch.equal(h[1], w[1]) and torch.equal(h[2], q[2])


def test_sq_layer_trains_with_the_hybrid_and_tests_fully_quantized() -> None:
    torch.manual_seed(0)
    layer = SQLinear(5, 8, quantizer=binary_weight)
    x = torch.randn(4, 5)
    layer.train()
    set_ratio(layer, 0.5)
    w = layer.propagation_weight()
    q = binary_weight(layer.weight.detach())
    rows_q = [bool(torch.allclose(w[i].detach(), q[i], atol=1e-6)) for i in range(8)]  # w + (q - w)
    rows_w = [bool(torch.allclose(w[i].detach(), layer.weight[i].detach(), atol=1e-6)) for i in range(8)]
    assert sum(rows_q) == 4 and all(a != b for a, b in zip(rows_q, rows_w, strict=True))
    layer(x).sum().backward()  # straight-through: dL/dW = dL/dW~ = sum_b x_b for every row
    assert torch.allclose(layer.weight.grad, x.sum(0).expand(8, 5))
    layer.eval()
    assert torch.allclose(layer(x), x @ binary_weight(layer.weight.detach()).T + layer.bias, atol=1e-5)


def test_bwn_and_twn_encodings_decode_to_the_quantized_weights_and_count_their_bytes() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), SQLinear(40, 7, quantizer=binary_weight), nn.ReLU(),
                          SQLinear(7, 3, quantizer=binary_weight))
    params = dict(model.named_parameters())
    for name, enc in encode_bwn_layers(model).items():
        assert torch.equal(enc.dequantize(), binary_weight(params[name].detach()))
    for name, enc in encode_ternary_layers(model).items():
        assert torch.equal(enc.dequantize(), ternarize(params[name].detach()))
    parts, code_bits = storage(model, 1)
    # 1-bit rows: 40 signs -> 2 int32 words, 7 signs -> 1 word; an fp32 alpha per row; two fp32 constants
    words = 7 * 2 + 3 * 1
    assert code_bits == sum(8 * e.storage_bytes() for e in encode_bwn_layers(model).values())
    assert code_bits >= 32 * words + 32 * (7 + 3)
    assert measure.storage_bits(parts) == code_bits + 32 * (7 + 3)  # the fp32 biases
    assert {n for n, _ in quantized_layers(model)} == {"1", "3"}
