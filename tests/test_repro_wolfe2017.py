"""Wolfe et al.'s neuron pruning: the brute-force error changes, the first- and second-order Taylor
terms of Eq. 3 (against autograd), Algorithm II's re-ranking, and the smaller dense network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from atlas_reproductions.wolfe2017 import (
    brute_force,
    first_hidden,
    gain_derivatives,
    gated_output,
    iterative_rerank,
    shrink,
    sigmoid_mlp,
    taylor,
    total_error,
)


def _setup(hidden: list[int], n: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    model = sigmoid_mlp(12, hidden, 4).double().eval()
    x = torch.randn(n, 12, dtype=torch.float64)
    targets = F.one_hot(torch.randint(4, (n,)), 4).double()
    return model, first_hidden(model, x), targets, x


def test_brute_force_is_the_measured_error_change() -> None:
    for hidden in ([6], [5, 4]):
        model, h1, t, _ = _setup(hidden)
        gains = torch.ones(sum(hidden), dtype=torch.float64)
        gains[1] = 0.0  # already off
        delta = brute_force(model, h1, t, gains)
        assert torch.isinf(delta[1])
        base = float(total_error(model, h1, t, gains).detach())
        for k in [k for k in range(sum(hidden)) if k != 1]:
            off = gains.clone()
            off[k] = 0.0
            assert abs(float(delta[k]) - (float(total_error(model, h1, t, off).detach()) - base)) < 1e-9


def test_taylor_terms_are_the_gain_derivatives() -> None:
    for hidden in ([6], [5, 4], [3, 4, 2]):
        model, h1, t, _ = _setup(hidden)
        gains = torch.ones(sum(hidden), dtype=torch.float64)
        gains[2] = 0.0

        def error(a: torch.Tensor, model=model, h1=h1, t=t) -> torch.Tensor:
            return total_error(model, h1, t, a)

        d1, d2 = gain_derivatives(model, h1, t, gains)
        with torch.enable_grad():
            torch.testing.assert_close(d1, torch.func.grad(error)(gains))
            torch.testing.assert_close(d2, torch.diagonal(torch.func.hessian(error)(gains)))
        # Eq. 3 for a neuron on: -O dE/dO (+ 1/2 O^2 d2E/dO^2) summed over the examples, i.e. the gain's derivatives
        assert torch.equal(taylor(1)(model, h1, t, gains)[3], -d1[3])
        assert torch.equal(taylor(2)(model, h1, t, gains)[3], -d1[3] + 0.5 * d2[3])
        assert torch.isinf(taylor(2)(model, h1, t, gains)[2])


def test_the_second_order_estimate_is_exact_for_a_quadratic_error() -> None:
    """With one hidden layer and the outputs' sigmoid nearly linear (tiny outgoing weights), E is nearly
    quadratic in a gain, so the second-order estimate matches the measured change and the first does not."""
    model, h1, t, _ = _setup([6])
    with torch.no_grad():
        model[3].weight.mul_(1e-2)
    gains = torch.ones(6, dtype=torch.float64)
    brute = brute_force(model, h1, t, gains)
    second = taylor(2)(model, h1, t, gains)
    first = taylor(1)(model, h1, t, gains)
    assert torch.allclose(second, brute, rtol=1e-3, atol=1e-9)
    assert not torch.allclose(first, brute, rtol=1e-3, atol=1e-9)


def test_iterative_rerank_removes_the_least_costly_neuron_each_time() -> None:
    model, h1, t, _ = _setup([6])
    order = iterative_rerank(model, h1, t, brute_force, 3)
    assert len(set(order)) == 3
    gains = torch.ones(6, dtype=torch.float64)
    for k in order:  # each removal is the argmin of the brute-force deltas of the network as it then is
        assert int(torch.argmin(brute_force(model, h1, t, gains))) == k
        gains[k] = 0.0


def test_shrink_builds_the_same_function_with_fewer_neurons() -> None:
    for hidden, removed in (([6], [0, 4]), ([5, 4], [1, 5, 8]), ([3, 4, 2], [2, 3, 7])):
        model, h1, _, x = _setup(hidden)
        small = shrink(model, removed)
        gains = torch.ones(sum(hidden), dtype=torch.float64)
        gains[removed] = 0.0
        torch.testing.assert_close(small(x), gated_output(model, h1, gains))
        widths = [m.out_features for m in small.modules() if isinstance(m, torch.nn.Linear)][:-1]
        assert sum(widths) == sum(hidden) - len(removed)
