"""Molchanov et al.'s iterative feature-map pruning: the Taylor criterion, its per-layer normalisation,
the masks and the removal schedule."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.li2017 import filter_l1, weight_compression
from atlas_reproductions.molchanov2017 import MapPruner, feature_maps, mean_activation, normalise, taylor
from torch import nn

from atlas.harness import models

SHAPE = (1, 12, 12)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("staged-conv", SHAPE, 5, chans=[6, 12, 24], per_stage=2)


def test_taylor_is_the_mean_over_examples_of_the_absolute_spatial_mean() -> None:
    a = torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]], [[[3.0, 0.0]], [[2.0, 2.0]]]])  # (B=2, C=2, 1, 2)
    g = torch.tensor([[[[1.0, -1.0]], [[5.0, 1.0]]], [[[-1.0, 0.0]], [[0.5, 0.5]]]])
    # example 0: map 0 |(1 - 2) / 2| = 0.5, map 1 |(0 + 1) / 2| = 0.5; example 1: map 0 |-3 / 2| = 1.5, map 1 1.0
    assert taylor(a, g).tolist() == [1.0, 0.75]
    assert mean_activation(a).tolist() == [1.5, 1.25]


def test_normalise_divides_by_the_l2_norm_of_the_remaining_maps() -> None:
    score = torch.tensor([3.0, 100.0, 4.0])
    alive = torch.tensor([True, False, True])
    out = normalise(score, alive)
    assert out[0].item() == pytest.approx(0.6) and out[2].item() == pytest.approx(0.8)
    assert out[1].item() == float("inf")


def test_the_taylor_statistics_are_activation_times_gradient_of_the_loss() -> None:
    model = _net().train()
    pruner = MapPruner(model, "taylor", every=10, levels=[1.5])
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 5, (8,))
    captured: dict[int, torch.Tensor] = {}
    relus = feature_maps(model)

    def keep(i: int):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            out.retain_grad()
            captured[i] = out
        return hook

    extra = [relu.register_forward_hook(keep(i)) for i, relu in enumerate(relus)]
    nn.functional.cross_entropy(model(x), y).backward()
    for h in extra:
        h.remove()
    for i, z in captured.items():
        expected = (z * z.grad).mean(dim=(2, 3)).abs().mean(dim=0).double()
        assert torch.allclose(pruner.stats[i], expected, rtol=1e-5, atol=1e-12)
    pruner.close()


def test_a_masked_map_gives_the_same_output_as_the_smaller_network() -> None:
    model = _net().eval()
    pruner = MapPruner(model, "weight", every=1, levels=[10.0])
    pruner.masks[1][[0, 3]] = False
    pruner.masks[5][[2, 7, 8]] = False
    x = torch.randn(5, *SHAPE)
    masked = model(x)
    small = pruner.pruned()
    assert torch.allclose(small(x), masked, atol=1e-5)
    pruner.close()
    assert not torch.allclose(model(x), masked, atol=1e-4)  # without the masks the output differs


def test_one_map_per_interval_by_the_normalised_weight_norm_until_the_target() -> None:
    model = _net().train()
    pruner = MapPruner(model, "weight", every=3, levels=[1.2, 1.5])
    first = [normalise(filter_l1(c).double(), torch.ones(c.out_channels, dtype=torch.bool)) for c in pruner.convs]
    layer = min(range(len(first)), key=lambda i: float(first[i].min()))
    for _ in range(2):
        pruner.after_step(model)
    assert pruner.removed == 0  # nothing before the first interval
    pruner.after_step(model)
    assert pruner.removed == 1 and not bool(pruner.masks[layer][int(first[layer].argmin())])
    for _ in range(600):
        pruner.after_step(model)
    assert not pruner.levels and set(pruner.snapshots) == {1.2, 1.5}
    assert pruner.ratio() >= 1.5
    assert pruner.ratio() == pytest.approx(weight_compression(pruner.reference, pruner.pruned()))
    assert weight_compression(pruner.reference, pruner.snapshots[1.2]) >= 1.2
    assert all(int(m.sum()) >= 1 for m in pruner.masks)
    pruner.close()
