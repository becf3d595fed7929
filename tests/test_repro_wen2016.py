"""Wen et al.'s Structured Sparsity Learning: the group Lasso of Eq. 3, the released code's zeroing,
and the surgery that turns zero groups into a smaller dense network computing the same function."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.wen2016 import (
    _weights,
    boundaries,
    group_lasso,
    shrink,
    structure_at_ratio,
    unit_scores,
    weighted_layers,
    zero_small,
    zero_structure,
)
from torch import nn

from atlas.harness import measure, models


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return models.build("mlp", (1, 3, 4), 3, hidden=(16, 5)).eval()  # 12 inputs, 16-5 hidden, 3 classes


def test_group_lasso_is_the_sum_of_row_and_column_norms() -> None:
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    # rows: ||(3, 4)|| = 5, ||(0, 0)|| = 0; columns: ||(3, 0)|| = 3, ||(4, 0)|| = 4
    assert group_lasso(nn.Sequential(layer)).item() == pytest.approx(12.0)
    conv = nn.Conv2d(2, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([3.0, 4.0]).view(1, 2, 1, 1))
    # one filter of norm 5, two channels of norms 3 and 4
    assert group_lasso(nn.Sequential(conv)).item() == pytest.approx(12.0)


def test_zero_small_zeroes_only_weights_below_the_threshold() -> None:
    model = nn.Sequential(nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[5e-5, -2e-4, -5e-5]]))
        model[0].bias.fill_(1e-6)
    zero_small(model, 1e-4)
    assert model[0].weight.tolist() == [[0.0, pytest.approx(-2e-4), 0.0]]
    assert model[0].bias.item() == pytest.approx(1e-6)  # biases are not in a group


def test_removing_zero_groups_leaves_the_function_unchanged() -> None:
    model = _mlp()
    first, second, third = (m for _, m in weighted_layers(model))
    with torch.no_grad():
        first.weight[:, [0, 5]] = 0.0  # two input features nobody reads
        first.weight[3] = 0.0  # hidden unit 3 has no input: it outputs relu(b_3), folded into the next bias
        first.bias[3] = 0.7
        second.weight[:, 9] = 0.0  # hidden unit 9 is read by nobody
        second.weight[2] = 0.0  # second-layer unit 2: relu(b) folded into the classifier's bias
    kept = zero_structure(model)
    assert [int(k.sum()) for k in kept] == [10, 14, 4]
    small = shrink(model, kept)
    x = torch.randn(64, 1, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-6, rtol=1e-5)
    assert measure.count_params(small) == (10 * 14 + 14) + (14 * 4 + 4) + (4 * 3 + 3)
    assert measure.flops(small, (1, 3, 4)) < measure.flops(model, (1, 3, 4))


def test_dropping_a_zero_input_unit_without_the_fold_changes_the_function() -> None:
    """What makes the test above able to fail: unit 3's constant relu(b_3) must reach the next bias."""
    model = _mlp()
    first, second, _ = (m for _, m in weighted_layers(model))
    with torch.no_grad():
        first.weight[3] = 0.0
        first.bias[3] = 0.7
    small = shrink(model, zero_structure(model))
    expected = second.bias.detach() + 0.7 * second.weight.detach()[:, 3]
    torch.testing.assert_close(small.get_submodule("3").bias.detach(), expected)
    with torch.no_grad():
        small.get_submodule("3").bias.copy_(second.bias)  # undo the fold
        x = torch.randn(64, 1, 3, 4)
        assert not torch.allclose(small(x), model(x), atol=1e-4)


def test_lenet5_filters_and_channels_are_removed_exactly() -> None:
    torch.manual_seed(0)
    model = models.build("lenet-5", (1, 28, 28), 10, width=0.5).eval()  # 10-25-250, unpadded convs
    conv1, conv2, fc1, _ = (m for _, m in weighted_layers(model))
    with torch.no_grad():
        conv1.weight[[1, 4]] = 0.0  # two zero filters: constant maps, folded into conv2's bias
        conv2.weight[:, 7] = 0.0  # conv1's map 7 is read by nobody
        conv2.weight[[0, 3, 11]] = 0.0  # three zero conv2 filters: folded into fc1 (16 positions each)
        fc1.weight[:, 16 * 5:16 * 6] = 0.0  # conv2's map 5 is read by nobody
    assert [b.expand for b in boundaries(model)] == [1, 1, 16, 1]
    kept = zero_structure(model)
    assert [int(k.sum()) for k in kept] == [1, 7, 21, 250]
    small = shrink(model, kept)
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-4)
    assert measure.flops(model, (1, 28, 28)) / measure.flops(small, (1, 28, 28)) > 1.3


def test_a_zero_filter_feeding_a_padded_convolution_is_kept() -> None:
    """On 8x8 digits LeNet-5 pads its convolutions: a constant map is not constant at the border of
    the next convolution's output, so it cannot be folded into a bias."""
    model = models.build("lenet-5", (1, 8, 8), 10, width=0.5).eval()
    conv1 = next(m for _, m in weighted_layers(model))
    with torch.no_grad():
        conv1.weight[2] = 0.0
    assert bool(zero_structure(model)[1].all())


def test_structure_at_ratio_removes_the_smallest_groups_first_and_reaches_the_ratio() -> None:
    model = _mlp()
    first = next(m for _, m in weighted_layers(model))
    with torch.no_grad():
        first.weight[[2, 6]] *= 1e-3  # two hidden units with tiny incoming groups
    scores = unit_scores(model)
    assert set(torch.topk(-scores[1], 2).indices.tolist()) == {2, 6}
    kept = structure_at_ratio(model, 1.5)
    assert not kept[1][2] and not kept[1][6]
    small = shrink(model, kept)
    assert _weights(model) / _weights(small) >= 1.5
    kept_less = structure_at_ratio(model, 1.2)
    assert sum(int(k.sum()) for k in kept_less) > sum(int(k.sum()) for k in kept)
