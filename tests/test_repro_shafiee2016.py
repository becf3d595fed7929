"""StochasticNet: a random connectivity formed before training, held through training."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.shafiee2016 import bake, connect, random_connections

from atlas.harness import controls, models


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build("staged-conv", (2, 8, 8), 3, chans=(4, 6), per_stage=1)


def test_random_connections_keep_the_fraction_p_of_every_convolution() -> None:
    model = models.build("staged-conv", (1, 28, 28), 10, chans=(8, 16, 32), per_stage=1)
    masks = random_connections(model, 0.5, torch.Generator().manual_seed(0))
    assert sorted(masks) == ["features.0.weight", "features.4.weight", "features.8.weight"]  # convs only
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert mask.shape == params[name].shape and mask.dtype == torch.bool
        assert int(mask.sum()) == round(0.5 * mask.numel())
    bake(connect(model, masks))
    # conv weights 72 + 1152 + 4608 halved, the classifier's 320 kept: "less than half" of 6152 kept
    assert controls.compression_ratio(model) == pytest.approx(6152 / (36 + 576 + 2304 + 320))
    with pytest.raises(ValueError):
        random_connections(model, 0.0, torch.Generator())


def test_a_realisation_is_fixed_by_its_generator_and_not_structured() -> None:
    a = random_connections(_net(), 0.5, torch.Generator().manual_seed(3))
    b = random_connections(_net(), 0.5, torch.Generator().manual_seed(3))
    c = random_connections(_net(), 0.5, torch.Generator().manual_seed(4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # connections are single kernel weights: some kernels are partly connected
    kernels = a["features.4.weight"].flatten(2)
    assert bool((kernels.any(dim=2) & ~kernels.all(dim=2)).any())


def test_absent_connections_stay_absent_through_training() -> None:
    model = _net()
    masks = random_connections(model, 0.25, torch.Generator().manual_seed(1))
    before = model.features[4].weight.detach().clone()
    connect(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(5, 2, 8, 8)), torch.tensor([0, 1, 2, 0, 1])).backward()
        opt.step()
    bake(model)
    params = dict(model.named_parameters())
    assert "features.4.weight_orig" not in params
    for name, mask in masks.items():
        assert bool((params[name][~mask] == 0).all())
        assert bool((params[name][mask] != 0).all())
    kept = masks["features.4.weight"]
    assert not torch.equal(params["features.4.weight"][kept], before[kept])
