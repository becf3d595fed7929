"""Tu et al.'s Fisher estimate (Adam's bias-corrected second moments), the global ranking that removes
the weights of lowest Fisher information, and the saliency variant."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.tu2016 import adam_fisher, lowest_fisher_masks, overlap, saliency
from torch import nn


def test_the_fisher_estimate_is_adams_bias_corrected_moving_average_of_squared_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.99))
    v = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for _ in range(3):
        x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for n, p in model.named_parameters():
            v[n] = 0.99 * v[n] + 0.01 * p.grad ** 2
        opt.step()
    fisher = adam_fisher(model, opt)
    for n in v:
        torch.testing.assert_close(fisher[n], v[n] / (1 - 0.99 ** 3))


def test_the_weights_of_lowest_fisher_information_are_removed_over_all_layers() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    fisher = {"0.weight": torch.tensor([[1.0, 8.0], [2.0, 7.0]]), "0.bias": torch.zeros(2),
              "2.weight": torch.tensor([[6.0, 3.0], [5.0, 4.0]]), "2.bias": torch.zeros(2)}
    masks = lowest_fisher_masks(model, fisher, ratio=2.0)  # keep 4 of 8: Fisher 8, 7, 6, 5
    assert set(masks) == {"0.weight", "2.weight"}  # biases are never pruned
    assert masks["0.weight"].tolist() == [[False, True], [False, True]]
    assert masks["2.weight"].tolist() == [[True, False], [True, False]]
    assert lowest_fisher_masks(model, fisher, ratio=8.0)["0.weight"].sum() == 1  # the single highest


def test_saliency_weighs_the_fisher_information_by_the_squared_weight() -> None:
    model = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.5]]))
    s = saliency(model, {"0.weight": torch.tensor([[0.1, 2.0]])})
    assert s["0.weight"][0].tolist() == pytest.approx([0.45, 0.25])  # F w^2 / 2: the order flips


def test_overlap_is_the_share_of_the_first_masks_kept_by_the_second() -> None:
    a = {"w": torch.tensor([True, True, False, True])}
    b = {"w": torch.tensor([True, False, True, True])}
    assert overlap(a, b) == pytest.approx(2 / 3)
    assert overlap(a, a) == 1.0
