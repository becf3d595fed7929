"""Zhu & Gupta's automated gradual pruning: Eq. (1)'s schedule, the per-layer masks it drives during
training, and the small-dense model of the same parameter count."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.zhu2018 import (
    GradualPruner,
    Schedule,
    gradual_prune,
    matching_width,
    narrow,
    sparsity_at,
    update_steps,
)
from torch import nn

from atlas.harness import measure, models
from atlas.harness.run import Run

SCHEDULE = Schedule(final_sparsities=[0.9], frequency=50, updates=8)  # t0 = 0, n Δt = 400


def _layer_sparsity(model: nn.Module) -> list[float]:
    return [1.0 - float(torch.count_nonzero(m.weight)) / m.weight.numel()
            for m in model.modules() if isinstance(m, nn.Linear)]


# ------------------------------------------------------------------------------------- Eq. (1)
def test_eq1_values_at_its_ends_and_midpoint() -> None:
    assert sparsity_at(0, SCHEDULE, 0.9) == 0.0  # s_i at t0
    assert sparsity_at(400, SCHEDULE, 0.9) == pytest.approx(0.9)  # s_f at t0 + n Δt
    assert sparsity_at(5000, SCHEDULE, 0.9) == pytest.approx(0.9)  # masks no longer change after
    # halfway: s_f + (s_i - s_f) (1 - 1/2)^3 = 0.9 - 0.9 / 8
    assert sparsity_at(200, SCHEDULE, 0.9) == pytest.approx(0.9 - 0.9 / 8)
    late = Schedule(final_sparsities=[0.5], initial_sparsity=0.1, begin_step=100, frequency=10, updates=4)
    assert sparsity_at(50, late, 0.5) == pytest.approx(0.1)  # before t0: s_i
    assert sparsity_at(120, late, 0.5) == pytest.approx(0.5 - 0.4 * 0.5**3)


def test_eq1_prunes_fast_first_then_ever_less() -> None:
    values = [sparsity_at(t, SCHEDULE, 0.9) for t in update_steps(SCHEDULE)]
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert all(s > 0 for s in steps)
    assert all(later < earlier for earlier, later in zip(steps, steps[1:], strict=False))
    # a linear schedule (exponent 1) prunes the same amount at every update
    linear = Schedule(final_sparsities=[0.9], frequency=50, updates=8, exponent=1.0)
    lin = [sparsity_at(t, linear, 0.9) for t in update_steps(linear)]
    assert [b - a for a, b in zip(lin, lin[1:], strict=False)] == pytest.approx([0.9 / 8] * 8)


def test_update_steps_are_t0_plus_multiples_of_dt() -> None:
    assert update_steps(SCHEDULE) == [0, 50, 100, 150, 200, 250, 300, 350, 400]
    assert update_steps(Schedule(final_sparsities=[0.5], begin_step=7, frequency=3, updates=2)) == [7, 10, 13]


def test_a_final_sparsity_below_the_initial_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Schedule(final_sparsities=[0.2], initial_sparsity=0.5, frequency=1, updates=1)


# ------------------------------------------------------------------------------ the pruner
def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", (20,), 4, hidden=(16, 8))


def test_every_layer_reaches_the_schedule_sparsity_at_each_update() -> None:
    model = _mlp()
    schedule = Schedule(final_sparsities=[0.75], frequency=2, updates=4)
    pruner = GradualPruner(model, schedule, 0.75)
    pruner.start(model)
    for step in range(1, 9):
        pruner.after_step(model)
        if step in update_steps(schedule):
            want = sparsity_at(step, schedule, 0.75)
            for got, m in zip(_layer_sparsity(model), [m for m in model.modules() if isinstance(m, nn.Linear)],
                              strict=True):
                assert got == pytest.approx(1 - round((1 - want) * m.weight.numel()) / m.weight.numel())
    assert _layer_sparsity(model) == pytest.approx([0.75, 0.75, 0.75])
    # the survivors are each layer's largest magnitudes (per layer, not one global threshold)
    dense = _mlp()
    for m, d in zip(model.modules(), dense.modules(), strict=True):
        if isinstance(m, nn.Linear):
            kept = d.weight.abs()[m.weight != 0]
            dropped = d.weight.abs()[m.weight == 0]
            assert kept.min() >= dropped.max()


def test_a_pruned_weight_stays_pruned_and_masks_hold_between_updates() -> None:
    model = _mlp()
    schedule = Schedule(final_sparsities=[0.5], frequency=2, updates=2)
    pruner = GradualPruner(model, schedule, 0.5)
    pruner.start(model)
    pruner.after_step(model)
    pruner.after_step(model)  # step 2: first update, s = 0.5 - 0.5 * 0.5^3
    first = model[1].weight
    pruned_before = (first == 0).clone()
    with torch.no_grad():  # an optimizer step that would revive a pruned weight with a huge value
        first[pruned_before] = 100.0
    pruner.after_step(model)  # step 3: no update, the masks are re-applied
    assert torch.equal(first == 0, pruned_before)
    with torch.no_grad():
        first[pruned_before] = 100.0
    pruner.after_step(model)  # step 4: the last update; the huge pruned weights must not come back
    assert bool((first[pruned_before] == 0).all())
    assert _layer_sparsity(model)[0] == pytest.approx(0.5)


def test_finish_reaches_the_final_sparsity_when_the_stage_is_shorter() -> None:
    model = _mlp()
    pruner = GradualPruner(model, SCHEDULE, 0.9)
    pruner.start(model)
    for _ in range(60):  # 60 of the schedule's 400 steps: one update at step 50
        pruner.after_step(model)
    assert max(_layer_sparsity(model)) < 0.9
    pruner.finish(model)
    assert _layer_sparsity(model) == pytest.approx([0.9, 0.9, 0.9], abs=0.02)


def test_gradual_prune_trains_to_the_final_sparsity(tmp_path) -> None:
    run = Run("zhu2018", "smoke", {"dataset": "digits"}, seed=0, cache_dir=tmp_path, progress=False)
    model = run.model("lenet-300-100")
    from atlas.harness import TrainConfig

    before = run.accuracy(model, run.dataset().test)
    cfg = TrainConfig(steps=40, lr=0.05, batch_size=64)
    masks = gradual_prune(run, model, cfg, Schedule(final_sparsities=[0.8], frequency=5, updates=6), 0.8)
    assert _layer_sparsity(model) == pytest.approx([0.8, 0.8, 0.8])
    params = dict(model.named_parameters())
    assert all(torch.equal(params[name] != 0, mask) for name, mask in masks.items())
    assert run.accuracy(model, run.dataset().test) > before + 20  # it trained while pruning


# ---------------------------------------------------------------------------- small-dense
def test_narrow_scales_both_hidden_layers_of_lenet_300_100() -> None:
    assert narrow("lenet-300-100", 0.5) == ("mlp", {"hidden": [150, 50]})
    assert narrow("lenet-300-100", 0.001) == ("mlp", {"hidden": [1, 1]})
    assert narrow("lenet-5", 0.25) == ("lenet-5", {"width": 0.25})


def test_matching_width_finds_the_closest_parameter_count() -> None:
    def count(width: float) -> int:
        name, kwargs = narrow("lenet-300-100", width)
        return measure.count_params(models.build(name, (1, 28, 28), 10, **kwargs))

    # LeNet-300-100 pruned to 90% of its 266,200 weights keeps 26,620 of them and its 410 biases
    target = 26620 + 410
    width = matching_width(count, target)

    def formula(width: float) -> int:  # 784-h1-h2-10 with biases
        h1, h2 = narrow("lenet-300-100", width)[1]["hidden"]
        return 784 * h1 + h1 + h1 * h2 + h2 + 10 * h2 + 10

    best = min(abs(formula(k / 30000) - target) for k in range(1, 30001))
    assert count(width) == formula(width)
    assert abs(count(width) - target) == best
    assert narrow("lenet-300-100", width)[1]["hidden"][0] in range(30, 36)
