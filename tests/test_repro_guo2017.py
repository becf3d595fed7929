"""Specialist pruning: the subset's split and logits, the filters of smallest mean activation, the most
correlated channel, and the three compensations acting on the feature maps the next layer reads."""

from __future__ import annotations

import torch
from atlas_reproductions.guo2017 import (
    Compensation,
    Specialist,
    activations,
    feature_maps,
    most_correlated,
    removed_filters,
    specialist_split,
)
from torch import nn

from atlas.harness import models
from atlas.harness.data import Split


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = models.build("staged-conv", (1, 8, 8), 10, chans=[6, 8], per_stage=1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


def test_specialist_split_and_logits() -> None:
    split = Split(torch.randn(6, 1, 2, 2), torch.tensor([0, 3, 5, 3, 9, 5]))
    sub = specialist_split(split, torch.tensor([3, 5]))
    assert sub.y.tolist() == [0, 1, 0, 1]
    torch.testing.assert_close(sub.x, split.x[[1, 2, 3, 5]])
    head = Specialist(nn.Identity(), torch.tensor([3, 5]))
    assert head(torch.arange(10.0)[None]).tolist() == [[3.0, 5.0]]


def test_removed_filters_are_the_least_active_and_correlated_source_is_kept() -> None:
    a = torch.zeros(4, 4, 2, 2)
    a[:, 0], a[:, 1], a[:, 2], a[:, 3] = 3.0, 0.1, 2.0, 0.5
    a[:, 3] += torch.arange(4.0)[:, None, None]  # channel 3 varies over images
    a[:, 2] += 2 * torch.arange(4.0)[:, None, None]  # ... as channel 2 does (correlation 1)
    a[:, 0] += torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None, None]
    removed = removed_filters([a], [0.5])[0]
    assert removed.tolist() == [1, 3]
    src = most_correlated(a, torch.tensor([3]))
    assert src.tolist() == [2]


@torch.no_grad()
def test_compensations_change_only_the_removed_maps() -> None:
    net = _net()
    x = torch.randn(16, 1, 8, 8)
    maps = activations(net, x)
    assert [m.shape[1] for m in maps] == [6, 8] and len(feature_maps(net)) == 2
    removed = [torch.tensor([1, 4]), torch.tensor([], dtype=torch.long)]
    seen: list[torch.Tensor] = []
    h = net.features[3].register_forward_pre_hook(lambda m, i: seen.append(i[0].clone()))  # next conv's input
    outs = {}
    for mode in ("zero", "mean", "correlated"):
        comp = Compensation(net, removed, maps, mode)
        outs[mode] = net(x)
        comp.remove()
    net(x)
    h.remove()
    zero, mean, corr, plain = seen
    kept = [0, 2, 3, 5]
    for t in (zero, mean, corr):
        torch.testing.assert_close(t[:, kept], plain[:, kept])
    assert float(zero[:, [1, 4]].abs().max()) == 0.0
    torch.testing.assert_close(mean[:, [1, 4]], maps[0][:, [1, 4]].mean(0).expand(16, -1, -1, -1))
    src = most_correlated(maps[0], removed[0])
    torch.testing.assert_close(corr[:, [1, 4]], plain[:, src])
    assert not torch.allclose(outs["zero"], outs["mean"])  # the compensations reach the logits
    assert not net.features[2]._forward_hooks  # removed
