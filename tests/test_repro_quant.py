"""Pure parts of the weight-quantisation reproductions: BinaryConnect's binarisation, clipping and
1-bit storage (courbariaux2015) and TWN's threshold, scale and 2-bit storage (li2016); each storage is
the atlas_kernels encoding the paper's weights decode back from."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.courbariaux2015 import (
    BinaryConv2d,
    BinaryLinear,
    bc_mlp,
    binarize_deterministic,
    binarize_stochastic,
    binary_storage,
    clip_latent,
    encode_binary_layers,
    hard_sigmoid,
    quantize_layers,
)
from atlas_reproductions.li2016 import (
    TernaryConv2d,
    TernaryLinear,
    encode_ternary_layers,
    ternarize,
    ternary_scale,
    ternary_sign,
    ternary_storage,
    ternary_threshold,
)
from torch import nn

from atlas.harness import registry


def test_deterministic_binarisation_maps_zero_to_plus_one() -> None:
    w = torch.tensor([-0.7, -1e-8, 0.0, 1e-8, 0.3, 2.0])
    assert binarize_deterministic(w).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]


def test_hard_sigmoid() -> None:
    assert hard_sigmoid(torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])).tolist() == [0, 0, 0.25, 0.5, 0.75, 1, 1]


@pytest.mark.parametrize("w", [-0.6, -0.2, 0.0, 0.4, 0.9])
def test_stochastic_binarisation_probability(w: float) -> None:
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    wb = binarize_stochastic(torch.full((n,), w), generator=gen)
    assert set(wb.unique().tolist()) <= {-1.0, 1.0}
    p_plus = (wb > 0).float().mean().item()
    expected = (w + 1) / 2
    assert p_plus == pytest.approx(expected, abs=4 * (expected * (1 - expected) / n) ** 0.5 + 1e-6)


def test_stochastic_binarisation_saturates_outside_unit_interval() -> None:
    gen = torch.Generator().manual_seed(1)
    assert binarize_stochastic(torch.full((1000,), 1.5), generator=gen).eq(1).all()
    assert binarize_stochastic(torch.full((1000,), -1.0), generator=gen).eq(-1).all()


def test_binary_layer_straight_through_and_clipping() -> None:
    torch.manual_seed(0)
    layer = BinaryLinear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.95, -0.2, 0.0], [-0.99, 0.5, -0.1]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    out = layer(x)
    assert out.tolist() == [[1 - 2 + 3, -1 + 2 - 3]]  # propagated with the signs, 0 -> +1
    out.sum().backward()
    assert torch.equal(layer.weight.grad, x.expand(2, 3))  # dC/dw = dC/dw_b
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    opt.step()  # w - 0.1 * x: [[0.85, -0.4, -0.3], [-1.09, 0.3, -0.4]]
    clip_latent(nn.Sequential(layer))
    assert torch.allclose(layer.weight, torch.tensor([[0.85, -0.4, -0.3], [-1.0, 0.3, -0.4]]))
    assert layer.weight.abs().max() <= 1.0


def test_stochastic_layer_tests_with_real_weights() -> None:
    layer = BinaryLinear(2, 1, bias=False, stochastic=True, test_weights="real")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.25, -0.5]]))
    layer.eval()
    assert layer(torch.tensor([[1.0, 1.0]])).item() == pytest.approx(-0.25)


def test_twn_threshold_and_scale_by_hand() -> None:
    w = torch.tensor([0.1, -0.2, 0.5, -1.0, 0.0, 0.6])
    # E|W| = 2.4 / 6 = 0.4 -> Delta = 0.28; |W| > 0.28: 0.5, 1.0, 0.6 -> alpha = 2.1 / 3 = 0.7
    delta = ternary_threshold(w)
    assert delta.item() == pytest.approx(0.28)
    assert ternary_scale(w, delta).item() == pytest.approx(0.7)
    assert torch.allclose(ternarize(w), torch.tensor([0.0, 0.0, 0.7, -0.7, 0.0, 0.7]))
    assert ternary_sign(w, delta).tolist() == [0, 0, 1, -1, 0, 1]


def _ternary_model() -> nn.Module:
    torch.manual_seed(0)
    return quantize_layers(nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 4), nn.ReLU(),
                                         nn.Linear(4, 3, bias=False)), TernaryLinear, TernaryConv2d)


def test_ternary_encoding_decodes_to_the_ternary_weights() -> None:
    model = _ternary_model()
    encoded = encode_ternary_layers(model)
    params = dict(model.named_parameters())
    assert sorted(encoded) == ["0.weight", "2.weight", "4.weight"]
    for name, q in encoded.items():
        w = params[name].detach()
        assert torch.equal(q.dequantize().view_as(w), ternarize(w))  # exact, conv kernels included


def test_ternary_storage_counts_the_bytes_of_codes_alpha_and_biases() -> None:
    parts = {p.name: p.bits for p in ternary_storage(_ternary_model())}
    # conv 3 x (2*3*3 = 18 codes -> 2 words); fc 4 x 12 codes -> 1 word; fc 3 x 4 codes -> 1 word; each
    # layer also stores its alpha and the encoding's zero point (fp32); biases fp32
    assert parts == {"0.weight": 8 * (3 * 2 * 4 + 8), "2.weight": 8 * (4 * 4 + 8), "4.weight": 8 * (3 * 4 + 8),
                     "0.bias": 96, "2.bias": 128}


@pytest.mark.parametrize("key", ["courbariaux2015", "li2016"])
def test_profiles_are_complete_step_budgets_with_enough_seeds(key: str) -> None:
    profiles = registry.get(key).profiles  # validated against the paper's Config
    for name, cfg in profiles.items():
        assert cfg["train"]["steps"] > 0, name
        assert set(cfg["train"]) >= {"steps", "lr", "batch_size", "optimizer", "schedule"}
    assert profiles["quick"]["seeds"] >= 3
    # the smoke profile's training is the one the published records were made with
    assert {k: v for k, v in profiles["smoke"]["train"].items() if k in ("steps", "batch_size", "lr")} == (
        {"steps": 67, "batch_size": 64, "lr": 0.01} if key == "courbariaux2015"
        else {"steps": 45, "batch_size": 64, "lr": 0.05})


def test_binary_encoding_decodes_to_the_signs() -> None:
    torch.manual_seed(1)
    model = quantize_layers(bc_mlp((1, 4, 10), 3, [8]), BinaryLinear, BinaryConv2d)
    params = dict(model.named_parameters())
    for name, q in encode_binary_layers(model).items():
        w = params[name].detach()
        assert torch.equal(q.dequantize(), binarize_deterministic(w))


def test_binary_storage_counts_signs_at_one_bit_and_bn_in_fp32() -> None:
    model = quantize_layers(bc_mlp((1, 4, 16), 3, [8]), BinaryLinear, BinaryConv2d)
    parts = {p.name: p.bits for p in binary_storage(model)}
    # 64 -> 8 and 8 -> 3 signs: 8 rows of 2 words and 3 rows of 1 word, each layer with the encoding's
    # two fp32 decode constants; BN scale and shift of 8 and 3 units in fp32
    assert parts == {"1.weight": 8 * (8 * 2 * 4 + 8), "4.weight": 8 * (3 * 4 + 8), "2.weight": 256,
                     "2.bias": 256, "5.weight": 96, "5.bias": 96}
    signs = parts["1.weight"] + parts["4.weight"]
    assert signs == 736  # weight_storage_compression 32 * 536 / 736 = 23.3: tiny layers pay the padding
    assert 32 * (64 * 8 + 8 * 3) / signs == pytest.approx(23.304, abs=1e-3)
