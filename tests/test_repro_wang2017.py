"""Wang et al.'s gradually global pruning: the bias elimination, the global and layer-wise selections,
the weight count a step aims at."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.li2017 import conv_layers, remove_filters
from atlas_reproductions.wang2017 import (
    filter_counts,
    global_selection,
    layer_scores,
    layerwise_selection,
    nominal_ratio,
    proportional_counts,
    pruning_step,
    step_targets,
    weight_count,
)
from torch import nn

from atlas.harness import controls, models

SHAPE = (1, 12, 12)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("staged-conv", SHAPE, 5, chans=[6, 12, 24], per_stage=2).eval()


def _weights(model: nn.Module) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in controls.weight_names(model))


def test_bias_elimination_makes_a_layers_scale_irrelevant() -> None:
    model = _net()
    raw, norm = layer_scores(model, normalise=False), layer_scores(model)
    for s in norm:
        assert s.mean().item() == pytest.approx(1.0)
    first = model.get_submodule(conv_layers(model)[0])
    with torch.no_grad():
        first.weight.mul_(10.0)
    raw10, norm10 = layer_scores(model, normalise=False), layer_scores(model)
    torch.testing.assert_close(raw10[0], 10 * raw[0], rtol=1e-5, atol=0)  # the raw L1 norms follow the layer's scale ...
    for a, b in zip(norm, norm10, strict=True):  # ... the normalised scores do not
        torch.testing.assert_close(a, b, rtol=1e-5, atol=0)


def test_weight_count_is_the_smaller_models_count() -> None:
    model = _net()
    assert weight_count(model) == _weights(model)
    kept = [torch.tensor(k) for k in ([0, 2, 4], [1, 3, 5], [0, 1], [5], list(range(20)), [3, 4, 6])]
    small = remove_filters(model, kept)
    assert weight_count(model, [len(k) for k in kept]) == _weights(small) == weight_count(small)


def test_global_selection_removes_the_smallest_scores_over_all_layers() -> None:
    model = _net()
    counts = filter_counts(model)
    scores = [torch.arange(n, dtype=torch.float64) + 10 * i for i, n in enumerate(counts)]
    scores[3][[2, 7]] = -1.0  # the two least important filters of the network, both in layer 4
    scores[0][:] = 0.0  # layer 1's filters next; at least one stays
    # a target just below the network less layer 4's two filters: those two go, then layer 1's in order
    target = weight_count(model, [c - 2 * (i == 3) for i, c in enumerate(counts)]) - 1
    kept = global_selection(model, scores, target)
    assert 7 not in kept[3].tolist() and 2 not in kept[3].tolist() and len(kept[3]) == counts[3] - 2
    assert kept[0].tolist() == [1, 2, 3, 4, 5]  # one of layer 1's filters (the first of the ties) went next
    assert all(len(k) == c for k, c in zip(kept[1:3] + kept[4:], counts[1:3] + counts[4:], strict=True))
    assert weight_count(model, [len(k) for k in kept]) <= target
    # an unreachable target stops every layer at its floor of one filter
    assert [len(k) for k in global_selection(model, scores, 0)] == [1] * len(counts)


def test_layerwise_selection_takes_the_same_share_of_every_layer() -> None:
    assert proportional_counts([6, 6, 12, 12, 24, 24], 21) == [2, 1, 3, 3, 6, 6]  # 1.5 each: the first tie
    assert sum(proportional_counts([6, 12, 24], 7)) == 7
    model = _net()
    scores = layer_scores(model)
    target = int(0.7 * weight_count(model))
    kept = layerwise_selection(model, scores, target)
    counts = filter_counts(model)
    shares = [1 - len(k) / c for k, c in zip(kept, counts, strict=True)]
    assert max(shares) - min(shares) <= 1 / 6 + 1e-9  # the same share, up to one filter of the narrowest layer
    assert weight_count(model, [len(k) for k in kept]) <= target
    for k, s in zip(kept, scores, strict=True):  # each layer's own largest scores stay
        assert s[k].min() >= s[[j for j in range(len(s)) if j not in k.tolist()]].max() if len(k) < len(s) else True


def test_a_pruning_step_reaches_its_target_with_a_smaller_dense_network() -> None:
    model = _net()
    targets = step_targets(weight_count(model), 0.1, 3)
    assert targets == [int(weight_count(model) * 0.9 ** t) for t in (1, 2, 3)]
    assert nominal_ratio(0.1, 2) == round(1 / 0.81, 2)
    x = torch.randn(4, *SHAPE)
    for scheme in ("global", "layerwise"):
        small = pruning_step(model, targets[0], scheme)
        assert _weights(small) <= targets[0]
        assert _weights(small) > targets[0] - 24 * 9 * 12  # no more than a filter's worth below the target
        assert small(x).shape == (4, 5)
        assert sum(filter_counts(small)) < sum(filter_counts(model))
