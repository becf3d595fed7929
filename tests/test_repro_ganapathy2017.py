"""DyVEDeep's saturation prediction and early termination: exactness at slack 1, the operation count,
the ordering of the chunks and the choice of the knob setting."""

from __future__ import annotations

import torch
from atlas_reproductions.ganapathy2017 import (
    CHECK_OPS,
    EXTREMA_OPS,
    choose_slack,
    dyvedeep_predict,
    full_ops,
    prepare,
    spet_forward,
)
from torch import nn

from atlas.harness import measure, models


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", (12,), 4, hidden=(16, 8)).eval()


def test_slack_one_is_exact() -> None:
    model = _mlp()
    x = torch.randn(64, 12)
    logits, ops = dyvedeep_predict(model, x, slack=1.0, checkpoints=4)
    torch.testing.assert_close(logits, model(x).detach(), atol=1e-5, rtol=1e-5)
    assert (ops <= full_ops(model) + 2 * (CHECK_OPS * 3 * 16 + EXTREMA_OPS * 12)).all()


def test_lower_slack_terminates_more_and_changes_outputs() -> None:
    model = _mlp()
    x = torch.randn(256, 12)
    _, ops_exact = dyvedeep_predict(model, x, slack=1.0, checkpoints=4)
    logits0, ops0 = dyvedeep_predict(model, x, slack=0.0, checkpoints=4)
    assert ops0.mean() < ops_exact.mean()
    assert not torch.allclose(logits0, model(x).detach(), atol=1e-4)  # the aggressive setting approximates


def test_full_ops_counts_the_multiply_accumulates() -> None:
    model = models.build("lenet-300-100", (1, 28, 28), 10)
    assert full_ops(model) == 784 * 300 + 300 * 100 + 100 * 10
    assert 2 * full_ops(model) == measure.flops(model, (1, 1, 28, 28))  # flops counts 2 per MAC


def test_chunks_hold_the_largest_weights_first_and_cover_every_weight() -> None:
    layer = nn.Linear(5, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -3.0, 2.0, 0.5, -1.0], [1.0, 2.0, 3.0, 4.0, 5.0]]))
        layer.bias.zero_()
    spet = prepare(layer, checkpoints=2)
    assert spet.bounds == [0, 2, 5]
    assert spet.chunks[0, 0].tolist() == [0.0, -3.0, 2.0, 0.0, 0.0]
    assert spet.chunks[0, 1].tolist() == [0.0, 0.0, 0.0, 4.0, 5.0]
    torch.testing.assert_close(spet.chunks.sum(0), layer.weight.detach())
    assert spet.pos[1].tolist() == [0.6000000238418579, 6.0] and spet.neg[1, 0].item() == -1.0


def test_termination_and_its_operation_count() -> None:
    """One neuron, weights [-4, 1, 1, 1]: after the first chunk (w = -4) with x = 1s the partial sum
    is -4 and the remaining terms can add at most 3, so it stops at slack 1 after 1 of 4 chunks."""
    layer = nn.Linear(4, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-4.0, 1.0, 1.0, 1.0]]))
        layer.bias.zero_()
    spet = prepare(layer, checkpoints=4)
    out, ops = spet_forward(spet, torch.ones(1, 4), slack=1.0)
    assert out.item() == 0.0
    assert ops.item() == 1 + CHECK_OPS * 1 + EXTREMA_OPS * 4
    # x = [0.5, 1, 1, 1]: partial -2, remaining at most 3: no early stop, output 1, every checkpoint run
    out, ops = spet_forward(spet, torch.tensor([[0.5, 1.0, 1.0, 1.0]]), slack=1.0)
    assert out.item() == 1.0
    assert ops.item() == 4 + CHECK_OPS * 3 + EXTREMA_OPS * 4
    # the same input at slack 0.5: -2 + 1.5 < 0, predicted saturated (wrongly) after one chunk
    out, _ = spet_forward(spet, torch.tensor([[0.5, 1.0, 1.0, 1.0]]), slack=0.5)
    assert out.item() == 0.0


def test_choose_slack_takes_the_cheapest_setting_within_the_loss() -> None:
    results = {1.0: (90.0, 1.2), 0.5: (89.8, 1.5), 0.0: (88.0, 2.5)}
    assert choose_slack(results, 90.0, 0.5) == 0.5
    assert choose_slack(results, 90.0, 3.0) == 0.0
    assert choose_slack({1.0: (80.0, 1.1), 0.0: (70.0, 2.0)}, 90.0, 0.5) == 1.0
