"""Vanhoucke et al. 2011: a trained network run in 8-bit fixed point (int8 weights and activations,
int32 accumulation, fp32 bias). The int8 layers compute the quantized product exactly, both GEMM paths
agree bit for bit, and the storage is the int8 encoding's bytes."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.vanhoucke2011 import Int8Linear, int8_latency, int8_storage, to_int8
from torch import nn

from atlas.harness import measure


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def test_int8_layer_is_the_scaled_integer_product_plus_bias() -> None:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.27, -0.635, 0.0], [0.5, 0.25, -1.0]]))
        layer.bias.copy_(torch.tensor([0.5, -0.5]))
    q = Int8Linear(layer)
    # weight scales: 1.27 / 127 = 0.01 and 1 / 127; codes [127, -64 (tie -63.5 -> -64), 0], [64 (63.5), 32 (31.75), -127]
    assert q.weight.q.tolist() == [[127, -64, 0], [64, 32, -127]]
    x = torch.tensor([[1.0, 2.0, -0.5]])
    # activation scale 2 / 127: codes [64 (63.5 -> 64), 127, -32 (-31.75)]
    acc = torch.tensor([[127 * 64 - 64 * 127 + 0, 64 * 64 + 32 * 127 + 127 * 32]], dtype=torch.float32)
    expected = acc * (2 / 127) * q.weight.scale[None, :] + layer.bias.detach()
    assert torch.allclose(q(x), expected, rtol=1e-6)
    assert torch.allclose(q(x), layer(x), atol=0.05)  # close to the fp32 layer


def test_int8_network_is_close_to_fp32_and_exact_in_its_integer_products() -> None:
    model = _mlp()
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    atlas8 = to_int8(model)
    layer = atlas8[1]
    xq, xs = ak.quantize_int8_activation(x.flatten(1))
    assert torch.equal(ak.int8_matmul(xq, layer.weight, xs, bias=layer.bias),
                       ak.int8_matmul_reference(xq, layer.weight, xs, layer.bias))
    with torch.no_grad():
        err = (atlas8(x) - model(x)).abs().max().item()
    assert 0 < err < 0.05
    assert not any(isinstance(m, nn.Linear) for m in atlas8.modules())


def test_storage_counts_int8_codes_scales_and_fp32_biases() -> None:
    parts = {p.name: p.bits for p in int8_storage(to_int8(_mlp()))}
    assert parts == {"1.weight": 8 * (8 * 16 + 4 * 8), "1.bias": 32 * 8, "3.weight": 8 * (3 * 8 + 4 * 3),
                     "3.bias": 32 * 3}
    dense = measure.dense_bits(_mlp())
    assert dense == 32 * (16 * 8 + 8 + 8 * 3 + 3)
    enc = to_int8(_mlp())[1].weight
    assert isinstance(enc, ak.Int8Weight)
    assert torch.allclose(enc.dequantize(), _mlp()[1].weight.detach(), atol=float(enc.scale.max()) / 2 + 1e-7)


def test_latency_times_the_int8_network_against_fp32() -> None:
    timing = int8_latency(_mlp(), 4, (16,))
    assert set(timing) == {"dense_latency_us", "encoded_latency_us", "speedup"}
    assert timing["speedup"] == pytest.approx(timing["dense_latency_us"] / timing["encoded_latency_us"])
    assert all(v > 0 for v in timing.values())
