"""The families' shared controls (global magnitude pruning, uniform quantization) and the curves a
record keeps: the control's masks and grids are the stated ones, fine-tuning keeps them, the runner
gathers each level's per-seed values and refuses curves that differ between seeds, and a record's
curve with a value missing for a seed is refused on reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from atlas import results
from atlas.catalogue import load_catalogue
from atlas.errors import AtlasError
from atlas.harness import TrainConfig, controls
from atlas.harness.run import Measured, Run
from atlas.harness.runner import gather


def _run(tmp_path: Path, seed: int = 0) -> Run:
    return Run("han2015", "smoke", {"dataset": "digits", "train_limit": 300, "test_limit": 200},
               seed, cache_dir=tmp_path, progress=False)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_global_masks_keep_the_largest_weights_over_the_whole_network() -> None:
    model = _mlp()
    with torch.no_grad():
        model[3].weight.mul_(100.0)  # the last layer's weights now dominate every magnitude
    masks = controls.global_magnitude_masks(model, ratio=(2048 + 320) / 320)  # keep 320 of the 2368
    assert set(masks) == {"1.weight", "3.weight"}
    assert int(masks["3.weight"].sum()) == 320 and int(masks["1.weight"].sum()) == 0
    masks = controls.global_magnitude_masks(model, ratio=4.0)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round((2048 + 320) / 4)
    threshold = min(float(p.detach().abs()[masks[n]].min()) for n, p in model.named_parameters() if n in masks)
    dropped = max(float(p.detach().abs()[~masks[n]].max()) for n, p in model.named_parameters()
                  if n in masks and (~masks[n]).any())
    assert dropped <= threshold  # one threshold for every layer


def test_compression_ratio_counts_conv_and_linear_weights_only() -> None:
    model = _mlp()
    assert controls.compression_ratio(model) == pytest.approx(1.0)
    with torch.no_grad():
        model[1].weight.zero_()
    assert controls.compression_ratio(model) == pytest.approx((2048 + 320) / 320)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_uniform_quantization_has_at_most_the_grid_s_levels(bits: int) -> None:
    w = torch.randn(64, 32)
    q = controls.uniform_quantize(w, bits)
    levels = torch.unique(q)
    assert len(levels) <= (2 if bits == 1 else 2**bits - 1)
    if bits > 1:
        levels_b = 2 ** (bits - 1) - 1
        step = float(w.abs().max()) / levels_b
        max_scaled = (w / step).round().clamp(-levels_b, levels_b) * step
        assert float((q - w).pow(2).sum()) <= float((max_scaled - w).pow(2).sum()) + 1e-6  # clipping helps
        assert float(q.abs().max()) <= float(w.abs().max()) + 1e-6
        if bits == 2:  # scaled by the largest weight, {-s, 0, s} would round nearly all of them to 0
            assert float((q == 0).float().mean()) < 0.7
    else:
        assert torch.allclose(levels.abs(), w.abs().mean().expand_as(levels))


def test_the_pruning_control_fine_tunes_with_its_masks_and_keeps_the_ratio(tmp_path: Path) -> None:
    run = _run(tmp_path)
    dense = run.model("lenet-300-100")
    run.train(dense, run.dataset().train, TrainConfig(steps=30, lr=0.05), desc="dense")
    pruned = controls.global_magnitude_prune(run, dense, 10.0, TrainConfig(steps=10, lr=0.05))
    assert controls.compression_ratio(pruned) == pytest.approx(10.0, rel=1e-3)
    assert controls.compression_ratio(dense) == pytest.approx(1.0)  # the dense model is untouched
    series = controls.pruning_curve(run, dense, [2.0, 10.0], TrainConfig(steps=10, lr=0.05))
    assert series.control and series.x == controls.RATIO and sorted(series.points) == [2.0, 10.0]
    assert all(0.0 <= v <= 100.0 for v in series.points.values())


def test_the_quantization_control_ends_on_the_grid_after_straight_through_fine_tuning(tmp_path: Path) -> None:
    run = _run(tmp_path)
    model = run.model("lenet-300-100")
    run.train(model, run.dataset().train, TrainConfig(steps=30, lr=0.05), desc="fp32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuned = controls.uniform_quantization(run, model, 2, TrainConfig(steps=10, lr=0.05))
    for name in controls.weight_names(tuned):
        w = dict(tuned.named_parameters())[name].detach()
        assert len(torch.unique(w)) <= 3  # 2 bits, symmetric: -s, 0, +s
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # a copy was trained
    post = controls.uniform_quantization(run, model, 2, None)
    assert any(not torch.equal(dict(post.named_parameters())[n], dict(tuned.named_parameters())[n])
               for n in controls.weight_names(post))  # fine-tuning moved the latent weights


def _measured(points: dict[float, float], control_points: dict[float, float]) -> Measured:
    return Measured("lenet-300-100", "lenet-300-100", "digits", {"accuracy": 90.0},
                    curves=[controls.Series("method", controls.RATIO, controls.ACCURACY, points),
                            controls.Series(controls.PRUNING_CONTROL, controls.RATIO, controls.ACCURACY,
                                            control_points, control=True)])


def test_the_runner_gathers_each_level_s_per_seed_values() -> None:
    paper = load_catalogue().get("han2015")
    per_seed = [[_measured({4.0: 90.0, 12.0: 88.0}, {4.0: 89.0, 12.0: 85.0})],
                [_measured({4.0: 91.0, 12.0: 87.0}, {4.0: 88.0, 12.0: 86.0})]]
    (outcome,) = gather(per_seed, [0, 1], paper)
    method, control = outcome.curves
    assert method.label == "method" and not method.control and control.control
    assert [(p.x, p.y.values) for p in method.points] == [(4.0, [90.0, 91.0]), (12.0, [88.0, 87.0])]
    assert [p.y.values for p in control.points] == [[89.0, 88.0], [85.0, 86.0]]


def test_the_runner_refuses_a_curve_at_other_levels_on_another_seed() -> None:
    paper = load_catalogue().get("han2015")
    per_seed = [[_measured({4.0: 90.0, 12.0: 88.0}, {4.0: 89.0})], [_measured({4.0: 91.0, 13.0: 87.0}, {4.0: 88.0})]]
    with pytest.raises(AtlasError, match="curve 'method' is recorded at other levels"):
        gather(per_seed, [0, 1], paper)


def test_a_record_whose_curve_lacks_a_seed_s_value_is_stale() -> None:
    curve = results.Curve(label="m", x=controls.RATIO, y=controls.ACCURACY,
                          points=[results.CurvePoint(x=4.0, y=results.Metric(values=[90.0]))])
    outcome = results.Outcome(claim="c", model="m", dataset="digits", metrics={"a": results.Metric(values=[1.0, 2.0])},
                              curves=[curve])
    record = results.Record(key="han2015", profile="quick", seeds=[0, 1], config_hash="c", code_hash="d", config={},
                            outcomes=[outcome], provenance={})
    with pytest.raises(results.StaleRecord, match="curve 'm' at 4 has 1 values for 2 seeds"):
        results.parse(record.to_json())
    data = json.loads(record.to_json())
    data["outcomes"][0]["curves"][0]["points"][0]["y"]["values"].append(91.0)
    assert results.parse(json.dumps(data)).outcomes[0].curves[0].points[0].y.values == [90.0, 91.0]
