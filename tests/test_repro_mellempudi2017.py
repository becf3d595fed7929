"""Mixed low-precision inference (mellempudi2017): clustered ternary and k-bit weights, their encoding's
round trip, the dynamic fixed-point format of the activations, and the conversion of a network."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.mellempudi2017 import (
    calibrate,
    clusters,
    convert,
    dynamic_frac_length,
    encode_clusters,
    quantize_clusters,
    ternary_clusters,
    uniform_clusters,
)
from torch import nn


def test_clusters_are_consecutive_groups_of_filters() -> None:
    w = torch.zeros(10, 3)
    assert clusters(w, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert len(clusters(w, 1)) == 10 and clusters(w, 64) == [slice(0, 10)]


def test_each_cluster_gets_twns_threshold_and_scale() -> None:
    w = torch.tensor([[1.0, -0.1], [0.8, 0.0],   # cluster 0: mean|w| 0.475, Delta 0.3325 -> alpha 0.9
                      [0.02, -0.04], [0.05, 0.01]])  # cluster 1: mean|w| 0.03, Delta 0.021 -> alpha 0.045
    codes, alpha = ternary_clusters(w, 2)
    assert codes.tolist() == [[1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [1.0, 0.0]]
    assert alpha.tolist() == pytest.approx([0.9, 0.9, 0.045, 0.045])
    # one scale for the whole layer (N = 4) loses the small cluster entirely
    codes4, _ = ternary_clusters(w, 4)
    assert codes4[2:].abs().sum() == 0


def test_k_bit_clusters_use_the_clusters_largest_magnitude() -> None:
    w = torch.tensor([[0.7, -0.35], [0.1, 0.0]])
    codes, step = uniform_clusters(w, 2, 4)  # 7 levels a side, step 0.1
    assert step.tolist() == pytest.approx([0.1, 0.1])
    assert codes.tolist() == [[7.0, -4.0], [1.0, 0.0]]  # -3.5 rounds to -4 (half to even)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_encoding_round_trips(bits: int) -> None:
    w = torch.randn(12, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    codes, scale = quantize_clusters(w, 4, bits)
    q = encode_clusters(codes, scale, bits)
    expected = (codes * scale.view(-1, 1, 1, 1)).reshape(12, -1)
    assert torch.allclose(q.dequantize(), expected)
    assert q.storage_bytes() == 4 * 12 * -(-27 // (32 // bits)) + 4 * 12 + 4  # words + scales + zero


def test_dynamic_fixed_point_keeps_the_largest_input_in_range() -> None:
    assert dynamic_frac_length(3.0, 8) == 5  # range [-4, 4 - 1/32]
    assert dynamic_frac_length(0.2, 8) == 9  # range [-0.25, 0.25)
    lo, hi = ak.fixed_point_range(8, dynamic_frac_length(3.0, 8))
    assert lo <= -3.0 and hi >= 3.0 and hi < 4.0


def test_conversion_quantizes_weights_and_layer_inputs() -> None:
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(32, 6)
    x_max = calibrate(dense, x)
    assert set(x_max) == {"1", "3"} and x_max["1"] == pytest.approx(float(x.abs().max()))
    model, enc = convert(dense, 4, 2, x_max, 8)
    for name, q in enc.items():
        assert torch.allclose(dict(model.named_parameters())[name].detach(), q.dequantize())
    seen = {}
    model[3].register_forward_pre_hook(lambda _m, inp: seen.setdefault("x", inp[0]))
    model(x)
    fl = dynamic_frac_length(x_max["3"], 8)
    assert torch.equal(seen["x"], ak.round_fixed_point(seen["x"], 8, fl))  # on the 8-bit grid
    assert not torch.equal(dense(x), model(x))
