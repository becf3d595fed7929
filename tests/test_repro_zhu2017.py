"""Trained Ternary Quantization (zhu2017): the threshold (Eq. 9), the ternary weights and their two
gradients (Eq. 7-8) by hand, the scales' start, and the 2-bit encoding with its two scales, which
decodes to exactly the weights the network propagates with."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.courbariaux2015 import quantized_layers
from atlas_reproductions.li2016 import PROFILES as LI2016_PROFILES
from atlas_reproductions.li2016 import TernaryConv2d, TernaryLinear, ternarize
from atlas_reproductions.zhu2017 import (
    PROFILES,
    TtqConv2d,
    TtqLinear,
    encode_ttq_layers,
    param_groups,
    ternarize_model,
    ternary_codes,
    ttq_model,
    ttq_storage,
    ttq_weight,
)
from torch import nn


def test_threshold_is_t_times_the_largest_magnitude() -> None:
    w = torch.tensor([2.0, 0.11, -0.09, 0.1, -0.12, -0.5])
    # Delta = 0.05 * 2 = 0.1: strictly above / below -Delta only
    assert ternary_codes(w, 0.05).tolist() == [1, 1, 0, 0, -1, -1]
    assert ternary_codes(w, 0.3).tolist() == [1, 0, 0, 0, 0, 0]  # Delta = 0.6


def test_ternary_weights_and_both_gradients_by_hand() -> None:
    latent = torch.tensor([0.9, -0.5, 0.02, -0.03, 0.6, -1.0], requires_grad=True)
    w_p = torch.tensor(0.7, requires_grad=True)
    w_n = torch.tensor(0.4, requires_grad=True)
    w = ttq_weight(latent, w_p, w_n, 0.05)  # Delta = 0.05
    assert torch.equal(w, torch.stack([w_p, -w_n, 0 * w_p, 0 * w_p, w_p, -w_n]))  # exactly +Wp, 0, -Wn
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    (w * g).sum().backward()
    # Eq. 8: latent gradient scaled by Wp on I^p, 1 on I^z, Wn on I^n
    assert torch.allclose(latent.grad, torch.tensor([0.7 * 1, 0.4 * 2, 3.0, 4.0, 0.7 * 5, 0.4 * 6]))
    # Eq. 7: sums over I^p and (with w_t = -Wn there) minus the sum over I^n
    assert w_p.grad.item() == pytest.approx(1 + 5)
    assert w_n.grad.item() == pytest.approx(-(2 + 6))


def test_ttq_gradient_differs_from_twns_straight_through() -> None:
    """TWN (li2016) passes the gradient to every latent weight unchanged; TTQ scales it (so the test
    above can fail)."""
    torch.manual_seed(0)
    twn = TernaryLinear(4, 2, bias=False)
    ttq = ttq_model(nn.Sequential(nn.Linear(4, 2, bias=False)), 0.05, False)[0]
    x = torch.randn(3, 4)
    twn(x).sum().backward()
    ttq(x).sum().backward()
    plain = x.sum(0).expand(2, 4)
    assert torch.allclose(twn.weight.grad, plain)
    assert not torch.allclose(ttq.weight.grad, plain)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3, bias=False))


def test_start_normalises_latent_weights_and_sets_least_squares_scales() -> None:
    fp32 = _net()
    model = ttq_model(fp32, 0.05, False)
    for (name, layer), w in zip(quantized_layers(model), (fp32[0].weight, fp32[2].weight, fp32[4].weight),
                                strict=True):
        w = w.detach()
        assert layer.weight.abs().max().item() == pytest.approx(1.0), name  # normalised to [-1, 1]
        assert torch.equal(ternary_codes(layer.weight, 0.05), ternary_codes(w, 0.05))  # same assignment
        delta = 0.05 * w.abs().max()
        assert layer.w_p.item() == pytest.approx(w[w > delta].mean().item())
        assert layer.w_n.item() == pytest.approx(-w[w < -delta].mean().item())
    assert [n for n, _ in quantized_layers(model)] == ["0", "2", "4"]


def test_fp32_ends_keeps_the_first_and_last_layers_full_precision() -> None:
    model = ttq_model(_net(), 0.05, True)
    assert type(model[0]) is nn.Conv2d and type(model[4]) is nn.Linear
    assert isinstance(model[2], TtqLinear)
    conv = ttq_model(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3)), 0.05, True)
    assert [type(m) for m in conv] == [nn.Conv2d, TtqConv2d, nn.Conv2d]
    twn = ternarize_model(_net(), TernaryLinear, TernaryConv2d, False)
    assert isinstance(twn[0], TernaryConv2d) and isinstance(twn[2], TernaryLinear)


def _trained_step(model: nn.Module) -> None:
    """One SGD step, so that W^p and W^n differ from their start (and from each other)."""
    opt = torch.optim.SGD(param_groups(model), lr=0.5)
    model(torch.randn(5, 2, 4, 4)).pow(2).sum().backward()
    opt.step()


def test_encoding_decodes_to_exactly_the_propagated_weights() -> None:
    model = ttq_model(_net(), 0.05, False)
    _trained_step(model)
    encoded = encode_ttq_layers(model)
    assert sorted(encoded) == ["0.weight", "2.weight", "4.weight"]
    for name, layer in quantized_layers(model):
        w = layer.propagation_weight().detach()
        assert layer.w_p.item() != pytest.approx(layer.w_n.item())  # asymmetric: both scales stored
        decoded = encoded[f"{name}.weight"].dequantize().view_as(w)
        assert torch.equal(decoded, w)
        assert set(decoded.unique().tolist()) <= {layer.w_p.item(), 0.0, -layer.w_n.item()}


def test_storage_counts_codes_both_scales_and_biases() -> None:
    parts = {p.name: p.bits for p in ttq_storage(ttq_model(_net(), 0.05, False))}
    # conv 3 x (2*3*3 = 18 codes -> 2 int32 words); fc 4 x 12 codes -> 1 word; fc 3 x 4 -> 1 word; each
    # layer also stores W^p, W^n and the encoding's zero point (fp32); the biases fp32; the scale
    # parameters are not counted a second time
    assert parts == {"0.weight": 8 * (3 * 2 * 4 + 12), "2.weight": 8 * (4 * 4 + 12), "4.weight": 8 * (3 * 4 + 12),
                     "0.bias": 96, "2.bias": 128}
    with_ends = {p.name: p.bits for p in ttq_storage(ttq_model(_net(), 0.05, True))}
    assert with_ends["0.weight"] == 32 * 3 * 18 and with_ends["4.weight"] == 32 * 12
    assert with_ends["2.weight"] == 8 * (4 * 4 + 12)


def test_scales_get_no_weight_decay() -> None:
    model = ttq_model(_net(), 0.05, False)
    groups = param_groups(model)
    scales = {id(layer.w_p) for _, layer in quantized_layers(model)} | {
        id(layer.w_n) for _, layer in quantized_layers(model)}
    assert {id(p) for p in groups[1]["params"]} == scales and groups[1]["weight_decay"] == 0.0
    assert not scales & {id(p) for p in groups[0]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_same_network_as_li2016_quick_and_enough_seeds() -> None:
    quick = PROFILES["quick"]
    assert quick["seeds"] >= 3
    assert (quick["dataset"], quick["model"], quick["lenet5_width"]) == (
        LI2016_PROFILES["quick"]["dataset"], "lenet-5", LI2016_PROFILES["quick"]["lenet5_width"])
    assert quick["ttq"]["threshold_factor"] == 0.05


def test_twn_and_ttq_agree_on_a_symmetric_layer_at_start() -> None:
    """With weights symmetric in sign TTQ's two starting scales are equal: TWN's alpha for TTQ's
    threshold (li2016's scale, Eq. 6, is shared); TWN's own threshold, 0.7 E|w|, zeroes more."""
    w = torch.tensor([[0.9, -0.9, 0.2, -0.2, 0.01, -0.01]])
    layer = ttq_model(nn.Sequential(nn.Linear(6, 1, bias=False)), 0.05, False)[0]
    with torch.no_grad():
        layer.weight.copy_(w)
    layer.start(0.05)
    assert layer.w_p.item() == pytest.approx(layer.w_n.item()) == pytest.approx(0.55)
    assert torch.allclose(layer.propagation_weight(), torch.tensor([[0.55, -0.55, 0.55, -0.55, 0.0, 0.0]]))
    assert not torch.allclose(ternarize(w), layer.propagation_weight())  # TWN's threshold 0.7 E|w| differs
