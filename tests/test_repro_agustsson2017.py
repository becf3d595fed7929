"""Soft-to-hard quantization: the soft assignment tends to the hard one as sigma grows, the soft
entropy of a histogram, the annealing schedule, vectors of d weights, and the encoding (decode(encode)
is the hard-quantized weight, its bytes counted)."""

from __future__ import annotations

import math

import torch
from atlas_reproductions.agustsson2017 import (
    Config,
    Quantizer,
    center_gap,
    empirical_entropy,
    encode,
    hard_assignment,
    initial_centers,
    sigma_at,
    soft_assignment,
    soft_entropy,
    vectors,
)
from torch import nn

from atlas.harness import registry


def test_soft_assignment_tends_to_the_hard_one() -> None:
    centers = torch.tensor([[-1.0], [0.0], [2.0]])
    z = torch.tensor([[-0.8], [0.3], [1.5], [5.0]])
    hard = hard_assignment(z, centers)
    assert hard.tolist() == [0, 1, 2, 2]
    soft = soft_assignment(z, centers, 1.0)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    assert float(soft.max(1).values.min()) < 0.9  # still soft at sigma 1
    sharp = soft_assignment(z, centers, 1e4)
    torch.testing.assert_close(sharp, torch.nn.functional.one_hot(hard, 3).float())
    # phi_j(z) = exp(-sigma |z - c_j|^2) / sum: z = 0.3, sigma 1
    e = torch.exp(-torch.tensor([1.3**2, 0.3**2, 1.7**2]))
    torch.testing.assert_close(soft[1], e / e.sum())


def test_vector_assignment_uses_squared_euclidean_distance() -> None:
    centers = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    z = vectors(torch.tensor([[0.2, 0.1, 0.9, 0.6]]), 2)
    assert z.shape == (2, 2)
    assert hard_assignment(z, centers).tolist() == [0, 1]


def test_soft_entropy_of_histograms() -> None:
    assert float(soft_entropy(torch.tensor([5.0, 5.0, 5.0, 5.0]))) == 2.0
    assert abs(float(soft_entropy(torch.tensor([1.0, 0.0, 0.0])))) < 1e-9
    h = float(soft_entropy(torch.tensor([3.0, 1.0])))
    assert abs(h - (-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))) < 1e-6
    assert abs(empirical_entropy(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])) - 2.0) < 1e-12


def test_entropy_gradient_pulls_towards_fewer_centers() -> None:
    """A step down the rate's gradient makes the assignment less uniform (lower entropy)."""
    centers = torch.tensor([[-1.0], [1.0]])
    z = torch.tensor([[0.1], [-0.2], [0.3], [0.05]], requires_grad=True)
    h = soft_entropy(soft_assignment(z, centers, 2.0).sum(0))
    h.backward()
    with torch.no_grad():
        h2 = soft_entropy(soft_assignment(z - 0.1 * z.grad, centers, 2.0).sum(0))
    assert float(h2) < float(h.detach())


def test_annealing_is_geometric_between_its_ends() -> None:
    assert sigma_at(0, 11, 0.5, 200.0) == 0.5
    assert abs(sigma_at(10, 11, 0.5, 200.0) - 200.0) < 1e-9
    assert abs(sigma_at(5, 11, 1.0, 100.0) - 10.0) < 1e-9


def test_initial_centers_and_their_gap() -> None:
    w = torch.linspace(-1, 1, 1001).reshape(7, 143)
    c = initial_centers([w], 4, 1)
    torch.testing.assert_close(c.flatten(), torch.tensor([-0.75, -0.25, 0.25, 0.75]), atol=2e-3, rtol=0)
    assert abs(center_gap(c) - 0.5) < 2e-3


def test_encoding_decodes_to_the_hard_quantized_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    q = Quantizer(torch.tensor([[-0.2], [0.0], [0.2], [0.4]]), 1)
    with torch.no_grad():
        for m in (model[1], model[3]):
            m.weight.copy_(q.hard(m.weight)[0])
    parts, indices = encode(model, q)
    assert len(indices) == 12 * 6 + 6 * 3
    bits = {p.name: p.bits for p in parts}
    # 2-bit indices, 16 per int32 word, one row per output; four fp32 centers
    assert bits["1.weight"] == 8 * (6 * 4 + 4 * 4)
    assert bits["3.weight"] == 8 * (3 * 4 + 4 * 4)
    assert bits["1.bias"] == 32 * 6


def test_profiles_validate() -> None:
    profiles = registry.get("agustsson2017").profiles
    for name in ("smoke", "quick", "paper"):
        cfg = Config.model_validate(profiles[name])
        assert len(cfg.curve_centers) >= 3
    assert profiles["quick"]["seeds"] >= 3


def test_scalar_fast_path_is_the_soft_quantization() -> None:
    torch.manual_seed(1)
    w = torch.randn(5, 6)
    centers = torch.tensor([[-1.0], [0.0], [0.5], [2.0]])
    q = Quantizer(centers, 1)
    q.sigma = 3.0
    phi = soft_assignment(vectors(w, 1), centers, 3.0)
    torch.testing.assert_close(q.quantize(w), (phi @ centers).reshape(5, 6))
    assert q.histogram is not None
    torch.testing.assert_close(q.histogram, phi.sum(0))
