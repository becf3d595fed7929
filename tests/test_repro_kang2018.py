"""Shakeout: the shaken weights, the layer that computes them, and Dropout as its c = 0 case."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.kang2018 import ShakeoutLinear, shakeout_weights, small_weight_pct, with_shakeout
from torch import nn

from atlas.harness import models


def _w() -> torch.Tensor:
    return torch.tensor([[0.5, -0.25, 0.125], [-1.0, 0.75, -0.5]])


def test_reversed_and_enhanced_weights() -> None:
    w, tau, c = _w(), 0.5, 0.25
    reversed_ = shakeout_weights(w, torch.zeros(3), tau, c)
    enhanced = shakeout_weights(w, torch.ones(3), tau, c)
    assert torch.equal(reversed_, -c * torch.sign(w))
    assert torch.allclose(enhanced, (w + c * tau * torch.sign(w)) / (1 - tau))
    # unbiased: E[W~] = tau * reversed + (1 - tau) * enhanced = W
    assert torch.allclose(tau * reversed_ + (1 - tau) * enhanced, w)


def test_the_layer_computes_each_examples_shaken_weights() -> None:
    torch.manual_seed(0)
    layer = ShakeoutLinear(3, 2, tau=0.3, c=0.2)
    with torch.no_grad():
        layer.weight.copy_(_w())
    layer.train()
    x = torch.randn(4, 3)
    r = torch.bernoulli(torch.full_like(x, 0.7))
    out = layer(x, r)
    for n in range(4):
        expected = shakeout_weights(layer.weight, r[n], 0.3, 0.2) @ x[n] + layer.bias
        assert torch.allclose(out[n], expected, atol=1e-6)


def test_c_zero_is_dropout_and_c_positive_is_not() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3)
    r = torch.bernoulli(torch.full_like(x, 0.5))
    drop = ShakeoutLinear(3, 2, tau=0.5, c=0.0).train()
    dropout_out = nn.functional.linear(x * r / 0.5, drop.weight, drop.bias)
    assert torch.allclose(drop(x, r), dropout_out)
    shake = ShakeoutLinear(3, 2, tau=0.5, c=0.1).train()
    shake.load_state_dict(drop.state_dict())
    assert not torch.allclose(shake(x, r), dropout_out)
    # evaluation: the plain layer
    assert torch.allclose(shake.eval()(x), nn.functional.linear(x, drop.weight, drop.bias))


def test_with_shakeout_replaces_the_hidden_layers_and_keeps_the_function() -> None:
    torch.manual_seed(0)
    model = models.build("lenet-300-100", (1, 8, 8), 10).eval()
    shaken = with_shakeout(model, 0.5, 0.1).eval()
    kinds = [type(m).__name__ for m in shaken.modules() if isinstance(m, nn.Linear)]
    assert kinds == ["Linear", "ShakeoutLinear", "ShakeoutLinear"]
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(shaken(x), model(x))


def test_small_weight_pct() -> None:
    model = nn.Sequential(nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.005, 0.5, -0.001]]))
    assert small_weight_pct(model) == pytest.approx(50.0)
