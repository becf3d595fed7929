"""Luo et al. 2016's neuron selection: informative neurons first, redundant copies skipped."""

import torch
from atlas_reproductions.luo2016 import mutual_information, select_neurons


def _responses() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (2000,), generator=g)
    informative = labels.float() + 0.1 * torch.randn(2000, generator=g)
    copy = informative * 2.0 + 1.0  # perfectly correlated with the first neuron
    other = (labels % 2).float() + 0.1 * torch.randn(2000, generator=g)  # half as informative, less correlated
    noise = torch.randn(2000, generator=g)
    return torch.stack([informative, copy, other, noise], dim=1), labels


def test_mutual_information_ranks_informative_neurons_above_noise() -> None:
    responses, labels = _responses()
    mi = mutual_information(responses, labels, num_classes=4, bins=8)
    assert mi[0] > mi[2] > mi[3]
    assert abs(mi[0] - torch.log(torch.tensor(4.0))) < 0.1  # the label is nearly recoverable: I ~ H(y) = log 4
    assert mi[3] < 0.05


def test_selection_skips_a_redundant_copy() -> None:
    responses, labels = _responses()
    chosen, _ = select_neurons(responses, labels, num_classes=4, k=2, redundancy_weight=1.0, bins=8)
    assert chosen[0] in (0, 1)
    assert chosen[1] == 2  # not the perfectly correlated copy, though it is as informative
    chosen, _ = select_neurons(responses, labels, num_classes=4, k=2, redundancy_weight=0.0, bins=8)
    assert set(chosen.tolist()) == {0, 1}  # without the redundancy term the copy is taken
