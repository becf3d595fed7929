"""Ullrich et al.'s soft weight-sharing: the mixture prior (the zero component, the hyper-priors, the
grid evaluation against the exact per-weight sum), the post-processing (merging by KL divergence, the
argmax assignment) and the storage (decode(encode(w)) is the quantized weight, bit for bit)."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.han2016 import encode_huffman
from atlas_reproductions.ullrich2017 import (
    _PRIOR,
    INDEX_BITS,
    Mixture,
    Prior,
    assign,
    complexity_loss,
    flat_weights,
    grid_nll,
    kl_gauss,
    merged_components,
    post_processing_parts,
    quantize,
    storage_parts,
)
from torch import nn

from atlas.harness import measure, models


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mixture(components: int = 6, gammas: list[float] | None = None) -> Mixture:
    w = torch.linspace(-0.5, 0.5, 11)
    mix = Mixture(w, components, pi_zero=0.9, init_std=0.25)
    if gammas is not None:
        with torch.no_grad():
            mix.gammas.copy_(torch.tensor(gammas))
    return mix


def test_zero_component_is_fixed_and_proportions_sum_to_one() -> None:
    mix = _mixture()
    with torch.no_grad():
        mix.rhos.copy_(torch.randn(5, generator=_gen(1)))
    pis = mix.log_pis().exp()
    assert mix.all_means()[0].item() == 0.0
    assert pis[0].item() == pytest.approx(0.9)
    assert pis.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(mix.means.detach(), torch.linspace(-0.5, 0.5, 5))  # the weights' range


def test_log_density_is_the_mixture_of_gaussians() -> None:
    mix = _mixture(3, [2.0, 4.0, 6.0])
    x = torch.tensor([-0.3, 0.0, 0.2])
    pis, means, var = mix.log_pis().exp(), mix.all_means(), torch.exp(-mix.gammas)
    expected = torch.stack([sum(pis[j] * torch.exp(-(v - means[j]) ** 2 / (2 * var[j])) / torch.sqrt(2 * math.pi * var[j])
                                for j in range(3)) for v in x]).log()
    torch.testing.assert_close(mix.log_density(x), expected.detach())


def test_hyper_prior_is_the_gamma_negative_log_density() -> None:
    """``(1 - alpha) gamma + beta exp(gamma)``: the negative log Gamma density of ``lambda = e^gamma``
    in ``gamma`` (its Jacobian included), summed, the zero component with its own (alpha, beta)."""
    mix = _mixture(3, [1.0, 2.0, 3.0])
    got = mix.hyper_prior((5.0, 2.0), (3.0, 0.5)).item()
    want = (1 - 5) * 1 + 2 * math.e + sum((1 - 3) * g + 0.5 * math.exp(g) for g in (2.0, 3.0))
    assert got == pytest.approx(want, rel=1e-6)


def test_grid_evaluation_matches_the_exact_sum_and_its_gradients() -> None:
    """The grid's interpolated loss and gradients against the exact per-weight log-sum-exp, on a sharp
    mixture (standard deviations down to 0.018) over 20,000 weights."""
    w = (torch.randn(20000, generator=_gen(2)) * 0.1).requires_grad_()
    mix = _mixture(8, [8.0, 4.0, 5.0, 6.0, 7.0, 8.0, 6.0, 5.0])
    grads = []
    for exact in (True, False):
        w.grad = None
        for p in mix.parameters():
            p.grad = None
        loss = (-mix.log_density(w).sum()) if exact else grid_nll(mix, w, 4096)
        loss.backward()
        grads.append((loss.item(), w.grad.clone(), mix.means.grad.clone(), mix.gammas.grad.clone(), mix.rhos.grad.clone()))
    (l1, *g1), (l2, *g2) = grads
    assert l2 == pytest.approx(l1, rel=1e-4)
    for a, b in zip(g1, g2, strict=True):
        assert (a - b).abs().max().item() <= 2e-3 * a.abs().max().item() + 1e-4


def test_complexity_loss_pulls_a_weight_to_its_nearest_component() -> None:
    mix = _mixture(3, [6.0, 6.0, 6.0])  # means 0 (fixed), -0.5, 0.5
    w = torch.tensor([0.04, -0.45, 0.47], requires_grad=True)
    prior = Prior(**_PRIOR)
    complexity_loss(mix, w, prior, exact=True).backward()
    assert w.grad[0] > 0 and w.grad[1] > 0 and w.grad[2] < 0  # descent moves each toward 0, -0.5, 0.5


def test_identical_components_merge_and_distinct_ones_do_not() -> None:
    mix = _mixture(4, [5.0, 6.0, 6.0, 6.0])
    with torch.no_grad():
        mix.means.copy_(torch.tensor([0.3, 0.3, -0.2]))
        mix.rhos.copy_(torch.tensor([0.0, math.log(3.0), 0.0]))
    assert kl_gauss(torch.tensor(0.3), torch.tensor(6.0), torch.tensor(0.3), torch.tensor(6.0)).item() == 0.0
    comps = merged_components(mix, 1e-10)
    assert sorted(comps.means.tolist()) == pytest.approx([-0.2, 0.0, 0.3])
    merged = int((comps.means - 0.3).abs().argmin())
    assert comps.log_pis[merged].exp().item() == pytest.approx(0.1 * 4 / 5)  # 1/5 + 3/5 of 1 - pi_0


def test_mean_nearest_zero_becomes_the_zero() -> None:
    mix = _mixture(3, [6.0, 6.0, 6.0])
    with torch.no_grad():
        mix.means.copy_(torch.tensor([0.3, -0.2]))
    # the zero component merged into nothing: it stays the zero; a merge moving it is reset to 0
    with torch.no_grad():
        mix.means.copy_(torch.tensor([0.0, -0.2]))
    comps = merged_components(mix, 1e-10)
    assert (comps.means == 0).sum().item() == 1 and len(comps.means) == 2


def test_assignment_is_the_largest_responsibility() -> None:
    """A weight at a non-zero mean goes there; a small weight goes to the (heavy) zero component even
    when it is nearer another mean; with equal proportions it goes to the nearest."""
    mix = _mixture(3, [7.0, 7.0, 7.0])
    with torch.no_grad():
        mix.means.copy_(torch.tensor([-0.3, 0.05]))
    comps = merged_components(mix, 1e-10)
    means = comps.means
    w = torch.tensor([-0.3, 0.04, 0.0])
    got = means[assign(w, comps)]
    assert got.tolist() == pytest.approx([-0.3, 0.0, 0.0])
    comps.log_pis = torch.full_like(comps.log_pis, -math.log(3))
    assert means[assign(w, comps)].tolist() == pytest.approx([-0.3, 0.05, 0.0])


def test_quantized_network_is_stored_and_decodes_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = models.build("lenet-300-100", (1, 8, 8), 10)
    mix = Mixture(flat_weights(model).detach(), 8, pi_zero=0.5, init_std=0.05)
    q = quantize(model, mix, 1e-10, INDEX_BITS)
    params = dict(q.model.named_parameters())
    values = torch.cat([params[s.param].detach().flatten() for s in q.shared])
    assert set(values.unique().tolist()) <= {0.0, *q.codebook.tolist()}
    assert 0 < int(torch.count_nonzero(values)) < values.numel()
    assert torch.all(q.codebook[1:] > q.codebook[:-1]) and not (q.codebook == 0).any()
    for s in q.shared:
        assert torch.equal(encode_huffman(s).decode(), params[s.param].detach())
        assert torch.equal((s.codes == 0), params[s.param].detach() == 0)
    huff, fixed = storage_parts(q)
    dense_bits = measure.dense_bits(model)
    assert measure.storage_bits(huff) < dense_bits and measure.storage_bits(fixed) < dense_bits
    biases = [n for n, _ in q.model.named_parameters() if n.endswith("bias")]
    assert {p.name for p in huff if p.what == "fp32"} == set(biases)


def test_quantize_refuses_nothing_and_keeps_biases() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.5, -0.5, 0.01, 0.0]] * 3))
    mix = Mixture(flat_weights(model).detach(), 3, pi_zero=0.9, init_std=0.02)
    with torch.no_grad():
        mix.means.copy_(torch.tensor([-0.5, 0.5]))
    q = quantize(model, mix, 1e-10, INDEX_BITS)
    assert q.model[1].weight[0].tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])
    assert torch.equal(q.model[1].bias, model[1].bias)


def test_post_processing_splits_into_its_pruning_and_its_sharing() -> None:
    """Pruned-only: the zero component's weights zeroed, the others as retrained; shared-only: the
    others set to their means, the zero component's kept; together they are the post-processing."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.49, -0.5, 0.01, -0.02], [0.51, 0.02, -0.48, 0.0]]))
    mix = Mixture(flat_weights(model).detach(), 3, pi_zero=0.9, init_std=0.02)
    with torch.no_grad():
        mix.means.copy_(torch.tensor([-0.5, 0.5]))
    q = quantize(model, mix, 1e-10, INDEX_BITS)
    pruned, shared = post_processing_parts(model, q)
    torch.testing.assert_close(q.model[1].weight, torch.tensor([[0.5, -0.5, 0.0, 0.0], [0.5, 0.0, -0.5, 0.0]]))
    torch.testing.assert_close(pruned[1].weight, torch.tensor([[0.49, -0.5, 0.0, 0.0], [0.51, 0.0, -0.48, 0.0]]))
    torch.testing.assert_close(shared[1].weight, torch.tensor([[0.5, -0.5, 0.01, -0.02], [0.5, 0.02, -0.5, 0.0]]))
    assert torch.equal(pruned[1].bias, model[1].bias) and torch.equal(shared[1].bias, model[1].bias)
