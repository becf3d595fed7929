"""Pure parts of the weight-quantisation reproductions: BinaryConnect's binarisation and clipping
(courbariaux2015) and TWN's threshold, scale and 2-bit storage (li2016)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reproductions.courbariaux2015 import (
    BinaryLinear,
    binarize_deterministic,
    binarize_stochastic,
    clip_latent,
    hard_sigmoid,
    pack_codes,
    unpack_codes,
)
from reproductions.li2016 import ternarize, ternary_codes, ternary_scale, ternary_storage, ternary_threshold


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
    assert ternary_codes(w).tolist() == [0, 0, 1, 2, 0, 1]


def test_pack_codes_sizes_and_round_trip() -> None:
    codes = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0, 1])
    packed = pack_codes(codes, 2)
    assert packed.dtype == torch.uint8 and packed.numel() == 3  # 10 codes x 2 bits = 20 bits -> 3 bytes
    assert torch.equal(unpack_codes(packed, 2, 10), codes)
    signs = torch.randint(0, 2, (17,))
    assert pack_codes(signs, 1).numel() == 3  # 17 bits -> 3 bytes
    assert torch.equal(unpack_codes(pack_codes(signs, 1), 1, 17), signs)
    with pytest.raises(ValueError):
        pack_codes(torch.tensor([4]), 2)


def test_ternary_storage_counts_codes_alpha_and_biases() -> None:
    from reproductions.courbariaux2015 import quantize_layers
    from reproductions.li2016 import TernaryConv2d, TernaryLinear

    model = quantize_layers(nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 3, bias=False)),
                            TernaryLinear, TernaryConv2d)
    parts = {p.name: p.bits for p in ternary_storage(model)}
    # layer 0: 40 codes -> 10 bytes; layer 2: 12 codes -> 3 bytes; one fp32 alpha each; 4 fp32 biases
    assert parts == {"0.weight": 80, "0.alpha": 32, "2.weight": 24, "2.alpha": 32, "0.bias": 128}


@pytest.mark.parametrize("key", ["courbariaux2015", "li2016"])
def test_profiles_are_step_budgets_with_enough_seeds(key: str) -> None:
    import importlib

    from atlas.harness.training import TrainConfig

    profiles = importlib.import_module(f"reproductions.{key}").PROFILES
    for name, cfg in profiles.items():
        assert "epochs" not in cfg and cfg["steps"] > 0, name
        TrainConfig.from_dict(cfg)
    assert profiles["quick"]["seeds"] >= 3


def test_binary_storage_counts_signs_at_one_bit_and_bn_in_fp32() -> None:
    from reproductions.courbariaux2015 import BinaryConv2d, bc_mlp, binary_storage, quantize_layers

    model = quantize_layers(bc_mlp((1, 4, 4), 3, [8]), BinaryLinear, BinaryConv2d)
    parts = {p.name: p.bits for p in binary_storage(model)}
    # 16x8 and 8x3 signs -> 16 and 3 bytes; BN scale and shift of 8 and 3 units in fp32
    assert parts == {"1.weight": 128, "4.weight": 24, "2.weight": 256, "2.bias": 256, "5.weight": 96,
                     "5.bias": 96}
    signs = sum(b for n, b in parts.items() if n in ("1.weight", "4.weight"))
    assert 32 * (16 * 8 + 8 * 3) / signs == 32.0  # weight_storage_compression: the weight matrices alone
