"""Li & Liu's Sparse Shrink: the row-sparse self-representation (its optimality conditions), the
importance of a dead or redundant channel, and the surgery that removes it."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.li2017 import conv_layers
from atlas_reproductions.li2017b import (
    channel_importance,
    layer_features,
    prune_by_scores,
    row_shrink,
    sparse_self_representation,
    sparse_shrink_scores,
)
from torch import nn

from atlas.harness import models

SHAPE = (1, 12, 12)
REC = {"examples": 50, "positions": 16, "lambda_fraction": 0.001, "iterations": 500, "tolerance": 1e-9}


def test_row_shrink_is_the_group_soft_threshold() -> None:
    c = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    out = row_shrink(c, 1.0)
    torch.testing.assert_close(out, torch.tensor([[2.4, 3.2], [0.0, 0.0], [0.0, 0.0]]))


@pytest.mark.parametrize("fraction", [0.2, 0.6])
def test_solution_satisfies_the_optimality_conditions(fraction: float) -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(200, 6, generator=gen, dtype=torch.float64)
    y[:, 5] = y[:, 0] + 0.5 * y[:, 1]  # a channel that carries two others
    g = y.T @ y
    lam = fraction * float(g.norm(dim=1).max())
    c = sparse_self_representation(g, lam, 20000, 1e-13)
    residual = g @ (torch.eye(6, dtype=torch.float64) - c)  # minus the smooth part's gradient
    for i in range(6):
        norm = float(c[i].norm())
        if norm > 1e-8:  # a row in the support: its gradient balances the penalty's
            torch.testing.assert_close(residual[i], lam * c[i] / norm, atol=1e-4 * lam, rtol=0)
        else:
            assert float(residual[i].norm()) <= lam * (1 + 1e-4)
    if fraction == 0.6:  # a strong penalty keeps only the representative: the channel that carries two others
        assert (c.norm(dim=1) > 1e-8).tolist() == [False] * 5 + [True]
    # above lambda_max nothing is needed: C* = 0
    assert float(sparse_self_representation(g, 1.01 * float(g.norm(dim=1).max()), 100).abs().max()) == 0.0


def test_a_dead_channel_has_no_importance() -> None:
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(300, 5, generator=gen).relu()
    y[:, 3] = 0.0
    imp = channel_importance(y, 0.1, 500)
    assert imp[3].item() == 0.0 and (imp[[0, 1, 2, 4]] > 0).all()


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("staged-conv", SHAPE, 5, chans=[6, 12, 24], per_stage=2).eval()


def test_dead_channels_are_removed_first_and_the_output_does_not_change() -> None:
    model = _net()
    index = int(conv_layers(model)[2].rsplit(".", 1)[-1])
    conv, bn = model.features[index], model.features[index + 1]
    with torch.no_grad():  # channels 4 and 9 of the third convolution: ReLU(-1) = 0 on every input
        conv.weight[[4, 9]] = 0.0
        bn.weight[[4, 9]] = 0.0
        bn.bias[[4, 9]] = -1.0
    x = torch.randn(REC["examples"], *SHAPE)
    features = layer_features(model, x, REC["positions"], torch.Generator().manual_seed(0))
    # 16 positions an image, or all of a 3 x 3 map
    assert [tuple(f.shape) for f in features] == [(REC["examples"] * p, c) for p, c in
                                                   zip((16, 16, 16, 16, 9, 9), (6, 6, 12, 12, 24, 24), strict=True)]
    scores = sparse_shrink_scores(model, x, REC, torch.Generator().manual_seed(0))
    assert scores[2][[4, 9]].tolist() == [0.0, 0.0]
    assert (scores[2][[j for j in range(12) if j not in (4, 9)]] > 0).all()  # a weak penalty: the rest all count
    rates = [0.0, 0.0, 2 / 12, 0.0, 0.0, 0.0]
    small = prune_by_scores(model, scores, rates)
    convs = [small.get_submodule(n) for n in conv_layers(small)]
    assert convs[2].out_channels == 10 and convs[3].in_channels == 10
    torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)
    # the counterpart: two informative channels removed instead change the output
    scores[2][[4, 9]] = 10.0
    scores[2][[0, 1]] = -1.0
    assert not torch.allclose(prune_by_scores(model, scores, rates)(x), model(x), atol=1e-3)


@pytest.mark.parametrize("rates", [[0.5, 0.5, 0.5, 0.5, 0.25, 0.25]])
def test_rates_remove_the_stated_channels(rates: list[float]) -> None:
    model = _net()
    scores = [torch.arange(c.out_channels, dtype=torch.float64)
              for c in (model.get_submodule(n) for n in conv_layers(model))]
    small = prune_by_scores(model, scores, rates)
    assert [small.get_submodule(n).out_channels for n in conv_layers(small)] == [3, 3, 6, 6, 18, 18]
    assert small.get_submodule(conv_layers(small)[0]).weight.shape[0] == 3
