"""Divnet's pieces: the kernel, the k-DPP draw, the least-squares fusing, the smaller network."""

from __future__ import annotations

import itertools

import pytest
import torch
from atlas_reproductions.mariet2016 import (
    divnet,
    elementary_symmetric,
    first_activations,
    fuse,
    gaussian_kernel,
    keep_neurons,
    sample_kdpp,
)

from atlas.harness import measure, models


def test_gaussian_kernel_values() -> None:
    acts = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])  # columns: (0,0), (1,0), (0,2)
    k = gaussian_kernel(acts)
    mean = (1 + 4 + 5) * 2 / 6  # squared distances 1, 4, 5, each twice, over the 6 ordered pairs
    assert k[0, 1].item() == pytest.approx(torch.exp(torch.tensor(-1 / mean)).item())
    assert k[1, 2].item() == pytest.approx(torch.exp(torch.tensor(-5 / mean)).item())
    assert torch.allclose(k.diagonal(), torch.ones(3, dtype=torch.float64))


def test_elementary_symmetric_polynomials() -> None:
    e = elementary_symmetric(torch.tensor([1.0, 2.0, 3.0]), 3)
    assert e[:, 3].tolist() == [1.0, 6.0, 11.0, 6.0]  # 1, 1+2+3, 2+3+6, 1*2*3


def test_kdpp_frequencies_follow_the_determinants() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    kernel = x @ x.T + 0.3 * torch.eye(4, dtype=torch.float64)
    pairs = list(itertools.combinations(range(4), 2))
    det = torch.tensor([float(torch.det(kernel[list(p)][:, list(p)])) for p in pairs])
    expected = det / det.sum()
    counts = torch.zeros(len(pairs))
    draws = 4000
    for _ in range(draws):
        counts[pairs.index(tuple(sample_kdpp(kernel, 2, gen)))] += 1
    torch.testing.assert_close(counts / draws, expected.float(), atol=0.03, rtol=0)


def test_kdpp_never_keeps_two_identical_neurons_and_refuses_bad_sizes() -> None:
    v = torch.tensor([[1.0, 1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.2]])  # neurons 0 and 1 identical
    kernel = gaussian_kernel(v)
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        assert not {0, 1} <= set(sample_kdpp(kernel, 3, gen))
    with pytest.raises(ValueError, match="cannot draw 5 of 4"):
        sample_kdpp(kernel, 5, gen)


def test_fusing_a_combination_of_kept_neurons_leaves_the_next_input_unchanged() -> None:
    torch.manual_seed(0)
    model = models.build("mlp", (6,), 3, hidden=(8, 5)).eval()
    with torch.no_grad():  # neuron 7 = 2 * neuron 1 after the ReLU, neuron 6 = neuron 2
        model[1].weight[7], model[1].bias[7] = 2 * model[1].weight[1], 2 * model[1].bias[1]
        model[1].weight[6], model[1].bias[6] = model[1].weight[2], model[1].bias[2]
    x = torch.randn(256, 6)
    acts = first_activations(model, x)
    kept = [0, 1, 2, 3, 4, 5]
    fused = keep_neurons(model, kept, fuse(acts, model[3].weight, kept))
    unfused = keep_neurons(model, kept)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(unfused(x), model(x), atol=1e-3)
    assert measure.count_params(fused) == measure.count_params(model) - 2 * (6 + 1 + 5)


def test_divnet_builds_a_smaller_lenet_300_100() -> None:
    torch.manual_seed(0)
    model = models.build("lenet-300-100", (1, 28, 28), 10).eval()
    x = torch.randn(400, 1, 28, 28)
    small, kept = divnet(model, x, 75, torch.Generator().manual_seed(0))
    assert len(kept) == len(set(kept)) == 75 and small[1].out_features == 75 and small[3].in_features == 75
    assert measure.flops(small, (1, 28, 28)) < measure.flops(model, (1, 28, 28)) / 3
    assert small(x[:2]).shape == (2, 10)
