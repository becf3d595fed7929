"""Soulié et al.'s on-the-fly compression: the k-means cluster penalty, its gradient, the training
hooks (lambda's ramp, the centres' re-fits), and that the regularised weights cluster and quantize
with less error; the PQ encoding decodes to the quantized weights bit for bit."""

from __future__ import annotations

import torch
from atlas_reproductions.gong2014 import product_quantize, scalar_kmeans
from atlas_reproductions.soulie2016 import OnTheFly, Regularizer, cluster_penalty, fit_centres
from torch import nn


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_cluster_penalty_value_and_gradient() -> None:
    """Each weight's squared distance to its nearest centre, summed; the gradient 2 (w - c)."""
    w = torch.tensor([-1.1, 0.2, 0.9, 2.5], requires_grad=True)
    c = torch.tensor([-1.0, 0.0, 1.0])
    p = cluster_penalty(w, c)
    torch.testing.assert_close(p, torch.tensor(0.01 + 0.04 + 0.01 + 2.25))
    p.backward()
    torch.testing.assert_close(w.grad, torch.tensor([-0.2, 0.4, -0.2, 3.0]))


def test_penalty_is_zero_on_the_centres_and_centres_are_kmeans() -> None:
    w = torch.tensor([-0.5] * 10 + [0.0] * 10 + [0.7] * 10)
    c = fit_centres(w + 0.001 * torch.randn(30, generator=_gen(1)), 3, 30, _gen(2))
    torch.testing.assert_close(c, torch.tensor([-0.5, 0.0, 0.7]), atol=2e-3, rtol=0)
    assert cluster_penalty(w, torch.tensor([-0.5, 0.0, 0.7])).item() == 0.0


def test_hooks_ramp_lambda_and_refit_centres() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    reg = Regularizer(lam=0.1, k=2, update_every=2, kmeans_iters=5)
    hooks = OnTheFly(model, reg, steps=4, generator=_gen(0))
    x, y = torch.randn(8, 6), torch.randint(3, (8,))
    ce = nn.functional.cross_entropy(model(x), y)
    loss0 = hooks.loss_fn(model, x, y, torch.arange(8))  # step 0: lambda 0, the plain cross-entropy
    torch.testing.assert_close(loss0, ce)
    assert set(hooks.centres) == {"1.weight", "3.weight"} and hooks.centres["1.weight"].numel() == 2
    hooks.loss_fn(model, x, y, torch.arange(8))  # step 1
    assert hooks.lam() == 0.1 * 2 / 4
    with torch.no_grad():
        model[1].weight.add_(1.0)
    loss2 = hooks.loss_fn(model, x, y, torch.arange(8))  # step 2: the centres re-fitted to the moved weights
    expect = nn.functional.cross_entropy(model(x), y) + 0.05 * sum(
        cluster_penalty(m.weight, hooks.centres[n]) for n, m in hooks.layers.items())
    torch.testing.assert_close(loss2, expect)
    assert hooks.centres["1.weight"].min() > 0.3  # the first layer's centres moved with its weights


def test_regularised_descent_clusters_weights_and_lowers_quantization_error() -> None:
    """Gradient steps on the penalty alone pull weights to k values: 2-bit k-means of them is then
    (almost) exact, where it was not before; the encoding decodes to the quantized weight."""
    w0 = torch.randn(40, 24, generator=_gen(3)) * 0.1
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.SGD([w], lr=0.1)
    for step in range(60):
        if step % 10 == 0:
            c = fit_centres(w, 4, 20, _gen(step))
        opt.zero_grad()
        cluster_penalty(w, c).backward()
        opt.step()
    err = {name: (scalar_kmeans(v.detach(), 2, 30, generator=_gen(5)).weight - v.detach()).square().mean().item()
           for name, v in (("before", w0), ("after", w))}
    assert err["after"] < 1e-3 * err["before"]
    q = product_quantize(w.detach(), 4, 8, 20, generator=_gen(6))
    assert all(torch.equal(enc.dequantize(), q.weight) for enc in q.encodings)
