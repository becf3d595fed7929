"""Net-Trim's layer program (feasible, sparser, no larger l1 norm than the trained weights), its linear
last layer, the parallel scheme's guarantee (and a case where it fails), the gain search and the
authors' magnitude comparison at Net-Trim's per-layer counts."""

from __future__ import annotations

import math

import torch
from atlas_reproductions.aghasi2017 import (
    Admm,
    LayerProgram,
    NetTrim,
    Search,
    guarantee,
    linear_layers,
    magnitude_at_counts,
    search_gain,
    set_augmented,
    to_augmented,
    with_ones,
)
from torch import nn

from atlas.harness import controls, models


def _layer(seed: int = 0, n: int = 30, m: int = 12, p: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = with_ones(torch.randn(n, p, generator=gen, dtype=torch.float64))
    w = torch.randn(n + 1, m, generator=gen, dtype=torch.float64) * 0.3
    w = w * (torch.rand(n + 1, m, generator=gen, dtype=torch.float64) < 0.25)  # a sparse layer to recover
    return x, w, (w.T @ x).clamp_min(0.0)


def test_the_relu_program_is_feasible_sparser_and_no_larger_in_l1() -> None:
    x, w, y = _layer()
    eps = 0.1 * float(y.norm())
    program = LayerProgram(x, y, relu=True, rho=10.0)
    u = program.solve(eps, 400).double()
    residual = float(((u.T @ x).clamp_min(0.0) - y).norm())
    assert residual <= 1.02 * eps  # the response kept within eps (ADMM: to 2%)
    assert residual >= 0.9 * eps  # and the constraint is active: the l1 norm was traded for it
    inactive = y <= 1e-6
    assert float((u.T @ x)[inactive].clamp_min(0.0).norm()) <= 0.02 * eps  # inactive units stay inactive
    assert float(u.abs().sum()) < float(w.abs().sum())  # the trained weights are feasible: l1 no larger
    # exact zeros, on the generating layer's support (the paper's recovery of a sparse layer)
    assert int(torch.count_nonzero(u)) < 0.5 * u.numel()
    assert float(u[w == 0].abs().sum()) < 0.1 * float(u.abs().sum())
    # a larger eps prunes more
    sparser = LayerProgram(x, y, relu=True, rho=10.0).solve(3 * eps, 400)
    assert int(torch.count_nonzero(sparser)) < int(torch.count_nonzero(u))


def test_the_linear_last_layer_keeps_its_logits_within_eps() -> None:
    x, w, _ = _layer(1)
    y = w.T @ x  # no ReLU
    eps = 0.05 * float(y.norm())
    u = LayerProgram(x, y, relu=False, rho=10.0).solve(eps, 400).double()
    assert float((u.T @ x - y).norm()) <= 1.02 * eps
    # eps = 0 would keep the logits exactly; the ReLU program would not constrain negative logits
    relu_u = LayerProgram(x, y, relu=True, rho=10.0).solve(eps, 400).double()
    assert float((relu_u.T @ x - y).norm()) > 2 * eps


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", (1, 4, 5), 5, hidden=(24, 16)).eval()


def test_the_guarantee_holds_for_net_trim_and_fails_for_an_infeasible_layer() -> None:
    dense = _mlp()
    x = torch.randn(150, 1, 4, 5)
    trim = NetTrim(dense, x, rho=10.0)
    gain = 0.3
    pruned = trim.prune(gain, 200)
    checks = guarantee(trim, pruned, gain)
    assert checks["layer_excess"] <= 1.03
    assert 0 < checks["guarantee_ratio"] <= 1.0
    assert checks["guarantee_ratio_l1"] <= checks["guarantee_ratio"]  # the l1 form is the looser bound
    assert controls.compression_ratio(pruned) > 1.3
    # the same network with its logits shifted by a bias (not a solution of the last layer's program; the
    # weights' norms unchanged): the bound fails
    broken = controls.trainable_copy(pruned)
    last = linear_layers(broken)[-1]
    shifted = to_augmented(last)
    shifted[-1] += 3.0
    set_augmented(last, shifted)
    bad = guarantee(trim, broken, gain)
    assert bad["layer_excess"] > 1.5 and bad["guarantee_ratio"] > 1.0


def test_the_search_reaches_the_target_ratio() -> None:
    dense = _mlp(1)
    trim = NetTrim(dense, torch.randn(150, 1, 4, 5), rho=10.0)
    admm = Admm(steps=120, warm_fraction=0.5, rho=10.0)
    search = Search(first_gain=0.1, max_steps=6, tolerance=0.05)
    model, gain, ratio = search_gain(trim, 1.5, 0.1, admm, search, cold=True)
    assert abs(math.log(ratio / 1.5)) <= math.log(1.05)
    assert ratio == controls.compression_ratio(model) and gain > 0


def test_magnitude_comparison_keeps_net_trims_count_in_every_layer() -> None:
    dense = _mlp(2)
    trim = NetTrim(dense, torch.randn(120, 1, 4, 5), rho=10.0)
    pruned = trim.prune(0.3, 150)
    naive = magnitude_at_counts(dense, pruned)
    for a, b, d in zip(linear_layers(naive), linear_layers(pruned), linear_layers(dense), strict=True):
        assert int(torch.count_nonzero(a.weight)) == int(torch.count_nonzero(b.weight))
        kept = a.weight != 0  # the largest magnitudes of the trained layer
        if (~kept).any():
            w = d.weight.detach()
            assert float(w[kept].abs().min()) >= float(w[~kept].abs().max())
        assert torch.equal(a.bias, d.bias)
