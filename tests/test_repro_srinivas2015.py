"""Srinivas & Babu's data-free neuron merging: the saliency, the surgery and the smaller network."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.srinivas2015 import (
    apply_merges,
    hidden_pairs,
    merge_neurons,
    merge_order,
    neurons_for_fraction,
    prune_by_saliency,
    prune_control,
    saliency,
    shrink,
)
from torch import nn

from atlas.harness import measure, models


def _mlp_with_duplicate(dup: int = 3, of: int = 1) -> nn.Module:
    """A 6-16-5-3 ReLU MLP whose first-layer neuron ``dup`` copies neuron ``of`` exactly. Every weight is
    a multiple of 1/8 below 4 in magnitude, so that sums of them are exact in float32."""
    gen = torch.Generator().manual_seed(0)
    model = models.build("mlp", (6,), 3, hidden=(16, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-16, 17, p.shape, generator=gen).float() / 8)
        first = model[1]
        first.weight[dup] = first.weight[of]
        first.bias[dup] = first.bias[of]
    return model.eval()


def test_merging_identical_neurons_leaves_the_output_unchanged() -> None:
    model = _mlp_with_duplicate(dup=3, of=1)
    x = torch.randint(-16, 17, (64, 6)).float() / 8
    pruned, kept = prune_by_saliency(model, layer=0, k=1)
    # The duplicate's saliency is exactly zero, so it (or its twin) is the neuron removed ...
    assert set(range(16)) - set(kept.tolist()) in ({1}, {3})
    assert measure.count_params(pruned) == measure.count_params(model) - (6 + 1 + 5)
    # ... and adding its outgoing weights to its twin's keeps every output, bit for bit.
    with torch.no_grad():
        assert torch.equal(pruned(x), model(x))


def test_removing_the_same_neuron_without_surgery_changes_the_output() -> None:
    """The control that makes the test above able to fail: the duplicate dropped without adding its
    outgoing weights to its twin's changes the network's function."""
    model = _mlp_with_duplicate(dup=3, of=1)
    x = torch.randint(-16, 17, (64, 6)).float() / 8
    _, kept = prune_by_saliency(model, layer=0, k=1)
    dropped = shrink(model, 0, kept)
    with torch.no_grad():
        assert not torch.allclose(dropped(x), model(x))


def test_saliency_values() -> None:
    w = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    a = torch.tensor([[1.0, 2.0, 0.0], [1.0, 0.0, 4.0]])  # <a_j^2>: 1, 2, 8
    s = saliency(w, a)
    assert s[0, 1].item() == pytest.approx(2 * 25)  # remove neuron 1 into 0: <a_1^2> ||W_0 - W_1||^2
    assert s[1, 0].item() == pytest.approx(1 * 25)  # the reverse uses neuron 0's outgoing weights
    assert s[1, 2].item() == pytest.approx(8 * 18)
    assert s[0, 2].item() == pytest.approx(8 * 1)
    assert all(math.isinf(s[i, i].item()) for i in range(3))


def test_merging_follows_the_least_saliency_and_updates_the_kept_neuron() -> None:
    w = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    a = torch.tensor([[1.0, 2.0, 0.0], [1.0, 0.0, 4.0]])
    kept, a_new = merge_neurons(w, a, k=1)
    # least saliency: neuron 0 into neuron 2 (<a_0^2> ||W_2 - W_0||^2 = 1 * 1, below 8, 25, 36, ...)
    assert kept.tolist() == [1, 2]
    torch.testing.assert_close(a_new, torch.tensor([[2.0, 1.0], [0.0, 5.0]]))
    # the second removal sees neuron 2's new outgoing weights: <a_2^2> = 13, so removing 2 into 1
    # costs 13 * 18 = 234 and removing 1 into 2 costs 2 * 18 = 36.
    kept, a_new = merge_neurons(w, a, k=2)
    assert kept.tolist() == [2]
    torch.testing.assert_close(a_new, torch.tensor([[3.0], [5.0]]))


def _merges_recomputed(w: torch.Tensor, a: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The greedy merges with every saliency recomputed from scratch before each merge."""
    a = a.double().clone()
    alive = torch.ones(len(w), dtype=torch.bool)
    order = []
    for _ in range(k):
        s = saliency(w, a)
        s[~alive, :] = math.inf
        s[:, ~alive] = math.inf
        i, j = divmod(int(torch.argmin(s)), len(w))
        a[:, i] += a[:, j]
        alive[j] = False
        order.append((j, i))
    return order


def test_the_incremental_saliency_update_follows_the_recomputed_one() -> None:
    model = models.build("mlp", (1, 28, 28), 10, hidden=(60, 20))
    w, a = torch.cat([model[1].weight, model[1].bias[:, None]], 1), model[3].weight
    assert merge_order(w, a, 55) == _merges_recomputed(w, a, 55)


def test_every_prefix_of_the_greedy_merges_is_the_greedy_result_for_fewer_neurons() -> None:
    model = models.build("lenet-300-100", (1, 28, 28), 10)
    w, a = torch.cat([model[1].weight, model[1].bias[:, None]], 1), model[3].weight
    merges = merge_order(w, a, 40)
    removed: set[int] = set()
    for j, i in merges:  # each merge removes a neuron still there into another still there
        assert j not in removed and i not in removed and i != j
        removed.add(j)
    for k in (1, 17, 40):
        kept, a_k = apply_merges(a, merges[:k])
        kept_direct, a_direct = merge_neurons(w, a, k)
        assert torch.equal(kept, kept_direct)
        torch.testing.assert_close(a_k, a_direct, rtol=0, atol=0)


def test_merging_refuses_to_remove_every_neuron() -> None:
    with pytest.raises(ValueError, match="cannot remove 3 of 3"):
        merge_neurons(torch.zeros(3, 2), torch.zeros(1, 3), k=3)


def test_neurons_for_the_abstracts_fraction_of_parameters() -> None:
    model = models.build("lenet-300-100", (1, 28, 28), 10)
    k = neurons_for_fraction(model, 0, 0.85)
    per_neuron = 784 + 1 + 100
    assert k == math.ceil(0.85 * 266_610 / per_neuron) == 257
    pruned, _ = prune_by_saliency(model, 0, k)
    removed = 1 - measure.count_params(pruned) / measure.count_params(model)
    assert 0.85 <= removed < 0.85 + per_neuron / 266_610
    assert pruned(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_the_lenet5_fully_connected_layer_is_found_and_shrunk() -> None:
    model = models.build("lenet-5", (1, 28, 28), 10)
    assert hidden_pairs(model) == [("classifier.1", "classifier.3")]
    pruned, kept = prune_by_saliency(model, 0, 20)
    assert len(kept) == 480 and pruned.classifier[1].out_features == 480
    assert measure.count_params(pruned) == measure.count_params(model) - 20 * (800 + 1 + 10)
    assert pruned(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_magnitude_control_removes_the_smallest_incoming_weights() -> None:
    model = _mlp_with_duplicate()
    with torch.no_grad():
        model[1].weight[[2, 7]] = 0.0
        model[1].bias[[2, 7]] = 0.0
    pruned = prune_control(model, 0, 2, "magnitude", torch.Generator())
    assert pruned[1].out_features == 14
    torch.testing.assert_close(pruned[1].weight, model[1].weight[[i for i in range(16) if i not in (2, 7)]])
