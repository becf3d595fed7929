"""Few multiplications (lin2016b): stochastic ternary connect, the unbiased power-of-two quantizer of
quantized back propagation, the layer's gradients (weight gradient from the quantized input, input
gradient exact), test-time weights and the deterministic encodings (round trip)."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.courbariaux2015 import bc_mlp
from atlas_reproductions.lin2016b import (
    PROFILES,
    FewMultLinear,
    deterministic_storage,
    deterministic_view,
    encode_deterministic,
    few_multiplications_network,
    quantize_pow2_stochastic,
    ternarize_deterministic,
    ternarize_stochastic,
)
from torch import nn

from atlas.harness import measure


def test_ternary_connect_draws_sign_with_probability_abs_w() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.tensor([-1.0, -0.3, 0.0, 0.6, 1.0]).repeat(20000, 1)
    t = ternarize_stochastic(w, gen)
    assert set(t.unique().tolist()) <= {-1.0, 0.0, 1.0}
    mean = t.mean(0)
    assert torch.allclose(mean, torch.tensor([-1.0, -0.3, 0.0, 0.6, 1.0]), atol=0.02)  # E[w_t] = w
    assert t[:, 0].eq(-1).all() and t[:, 2].eq(0).all() and t[:, 4].eq(1).all()
    assert ternarize_deterministic(torch.tensor([-0.7, -0.4, 0.2, 0.51])).tolist() == [-1.0, 0.0, 0.0, 1.0]


def test_pow2_quantizer_gives_the_two_neighbouring_powers_without_bias() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.tensor([0.0, 0.75, -3.0, 4.0, 0.1]).repeat(40000, 1)
    q = quantize_pow2_stochastic(x, gen)
    assert q[:, 0].eq(0).all()
    assert set(q[:, 1].unique().tolist()) == {0.5, 1.0}  # 0.75 between 2^-1 and 2^0
    assert set(q[:, 2].unique().tolist()) == {-4.0, -2.0}
    assert q[:, 3].eq(4.0).all()  # a power of two stays itself
    assert set(q[:, 4].unique().tolist()) == {0.0625, 0.125}
    assert torch.allclose(q.mean(0), x[0], rtol=0.02, atol=1e-3)  # unbiased
    nz = q[q != 0].abs()
    assert torch.equal(torch.exp2(torch.log2(nz).round()), nz)  # powers of two only


def _net(kind: str = "binary") -> nn.Sequential:
    torch.manual_seed(0)
    return few_multiplications_network(bc_mlp((1, 4, 16), 3, [40, 33]), kind)  # type: ignore[return-value]


def test_weight_gradient_uses_the_quantized_input_and_input_gradient_is_exact() -> None:
    torch.manual_seed(1)
    layer = FewMultLinear(6, 4, bias=False, kind="binary").train()
    x = torch.rand(5, 6, requires_grad=True) * 3
    x.retain_grad()
    torch.manual_seed(2)
    w_used = layer.quantize(layer.weight.detach())  # the stochastic ±1 weights this pass draws
    torch.manual_seed(2)
    y = layer(x)
    assert set(w_used.unique().tolist()) <= {-1.0, 1.0}
    g = torch.randn(5, 4)
    torch.manual_seed(3)
    y.backward(g)
    assert torch.allclose(x.grad, g @ w_used, atol=1e-4)  # delta W_b: exact
    torch.manual_seed(3)
    expected = g.t() @ quantize_pow2_stochastic(x.detach())
    assert torch.allclose(layer.weight.grad, expected)  # delta^T quant(x)
    assert not torch.allclose(layer.weight.grad, g.t() @ x.detach())  # ... not delta^T x


def test_test_time_uses_real_weights_and_deterministic_view_rounds_them() -> None:
    net = _net("ternary").eval()
    layer = net[1]
    assert torch.equal(layer.propagation_weight(), layer.weight)
    view = deterministic_view(net)
    assert torch.equal(view[1].propagation_weight().detach(), ternarize_deterministic(view[1].weight.detach()))


@pytest.mark.parametrize("kind,bits", [("binary", 1), ("ternary", 2)])
def test_deterministic_encodings_round_trip_and_count_bits(kind: str, bits: int) -> None:
    net = _net(kind)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, FewMultLinear):
                m.weight.uniform_(-1, 1)
    view = deterministic_view(net)
    encoded = encode_deterministic(net)
    words, fixed = 0, 0
    for name, q in encoded.items():
        layer = view.get_submodule(name.split(".")[0])
        assert q.bits == bits
        assert torch.equal(q.dequantize(), layer.quantize(layer.weight.detach()))
        n, k = q.shape
        words += 4 * n * math.ceil(k / (32 // bits))
        fixed += q.storage_bytes() - 4 * n * math.ceil(k / (32 // bits))
    bn = sum(2 * m.num_features * 4 for m in net if isinstance(m, nn.BatchNorm1d))
    assert measure.storage_bits(deterministic_storage(net)) == 8 * (words + fixed + bn)


def test_quick_profile_has_three_seeds() -> None:
    assert PROFILES["quick"]["seeds"] >= 3
