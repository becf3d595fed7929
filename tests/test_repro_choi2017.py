"""Choi et al.'s network quantization: Hessian-weighted k-means (plain k-means its special case), ECSQ's
uniform quantizer, the Hessian and Adam weightings, and the encodings whose bits are counted (each
decodes to the quantized weights, bit for bit)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from atlas_reproductions.choi2017 import (
    Config,
    adam_second_moment,
    codebook_parts,
    hessian_diagonal,
    huffman_parts,
    quantize,
    shared_copy,
    surviving,
    uniform_ecsq,
    weighted_kmeans_1d,
)
from atlas_reproductions.han2016 import encode_codebook_layers, encode_huffman, kmeans_1d
from torch import nn

from atlas.harness import measure, registry
from atlas.harness.run import Run


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_unit_weights_give_deep_compressions_kmeans() -> None:
    x = torch.randn(500, generator=_gen(1))
    c1, l1 = weighted_kmeans_1d(x, torch.ones_like(x), 7, 50)
    c2, l2 = kmeans_1d(x, 7, 50)
    torch.testing.assert_close(c1, c2)
    assert torch.equal(l1, l2)


def test_weighted_centroid_is_the_weighted_mean() -> None:
    """One cluster of {0, 1} with weights {3, 1}: its centroid is 0.25 (plain k-means: 0.5); a far
    cluster at 10 is its own."""
    x = torch.tensor([0.0, 1.0, 10.0])
    c, labels = weighted_kmeans_1d(x, torch.tensor([3.0, 1.0, 1.0]), 2, 20)
    torch.testing.assert_close(c, torch.tensor([0.25, 10.0]))
    assert labels.tolist() == [0, 0, 1]
    c_plain, _ = weighted_kmeans_1d(x, torch.ones(3), 2, 20)
    torch.testing.assert_close(c_plain, torch.tensor([0.5, 10.0]))


def test_weighting_lowers_the_weighted_distortion() -> None:
    """Hessian-weighted k-means reaches a lower Hessian-weighted distortion than plain k-means, and
    plain k-means a lower unweighted one (each minimises its own objective)."""
    x = torch.randn(2000, generator=_gen(2))
    h = torch.rand(2000, generator=_gen(3)) ** 4 * (x > 0.5)  # importance concentrated on some weights
    h = h + 1e-3

    def distortion(c: torch.Tensor, labels: torch.Tensor, w: torch.Tensor) -> float:
        return float((w * (x - c[labels]) ** 2).sum())

    cw, lw = weighted_kmeans_1d(x, h, 4, 100)
    cp, lp = weighted_kmeans_1d(x, torch.ones_like(x), 4, 100)
    assert distortion(cw, lw, h) < distortion(cp, lp, h)
    assert distortion(cp, lp, torch.ones_like(x)) < distortion(cw, lw, torch.ones_like(x))


def test_uniform_ecsq_bins_and_weighted_means() -> None:
    x = torch.tensor([-0.26, -0.24, 0.01, 0.11, 0.14, 0.31])
    h = torch.tensor([1.0, 1.0, 1.0, 3.0, 1.0, 1.0])
    c, labels = uniform_ecsq(x, h, 0.1)  # bins -3, -2, 0, 1, 1, 3
    assert labels.tolist() == [0, 1, 2, 3, 3, 4]
    torch.testing.assert_close(c, torch.tensor([-0.26, -0.24, 0.01, (3 * 0.11 + 0.14) / 4, 0.31]))
    assert torch.all(c[1:] > c[:-1])
    # a larger step: fewer values, and every value within a step of its shared value
    c2, l2 = uniform_ecsq(x, torch.ones_like(x), 0.3)
    assert len(c2) < len(c) and float((x - c2[l2]).abs().max()) < 0.3


def _pruned_mlp() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    masks = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                masks[name] = torch.rand(p.shape) < 0.4
                p.mul_(masks[name])
    return model, masks


@pytest.mark.parametrize("how", [{"bits": 2}, {"bits": 3}, {"step": 0.05}])
def test_quantized_network_encodings_decode_to_its_weights(how: dict) -> None:
    model, masks = _pruned_mlp()
    values, _ = surviving(model, masks, None)
    shared = quantize(model, masks, None, {"conv": 8, "fc": 5}, **how)
    q = shared_copy(model, shared)
    params = dict(q.named_parameters())
    k = len(shared[0].centroids)
    if "bits" in how:
        assert k == 2 ** how["bits"] - 1
    for layer in shared:
        w = params[layer.param].detach()
        assert torch.equal(w != 0, masks[layer.param])  # pruned stay zero, survivors take a shared value
        assert torch.equal(encode_huffman(layer).decode(), w)
        enc = encode_codebook_layers(shared)[layer.param]
        assert torch.equal(enc.dequantize().view_as(w), w)
        assert enc.bits == max(1, k.bit_length())
    # storage: the Huffman streams (codes and gaps) are counted, with the codebook and the fp32 biases
    huff = measure.storage_bits(huffman_parts(q, shared))
    biases = sum(32 * p.numel() for n, p in q.named_parameters() if n.endswith("bias"))
    codebooks = sum(32 * k for _ in shared)
    assert huff > biases + codebooks
    # fixed-length: per layer N rows of ceil(K_in / (32 // b)) int32 words, and the table [0, values]
    b = max(1, k.bit_length())
    words = sum(m.shape[0] * -(-m.shape[1] // (32 // b)) for m in masks.values())
    assert measure.storage_bits(codebook_parts(q, shared)) == biases + 32 * words + 32 * (k + 1) * len(shared)
    assert len(torch.unique(torch.cat([params[n].detach()[m] for n, m in masks.items()]))) <= len(values)


def test_hessian_diagonal_matches_autograd_on_a_tiny_network() -> None:
    """The Gauss-Newton diagonal of a one-layer softmax regression equals the exact Hessian's diagonal
    (the cross-entropy is convex in the logits and the logits linear in the weights)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 2))
    x = torch.randn(5, 3)
    h = hessian_diagonal(model, x)["0.weight"]
    w0 = model[0].weight.detach().clone()
    b0 = model[0].bias.detach()

    def loss(w: torch.Tensor) -> torch.Tensor:  # mean over examples of -log p(label); the
        logits = x @ w.view(2, 3).T + b0  # Hessian in the logits does not depend on the label
        return torch.logsumexp(logits, 1).mean()

    full = torch.autograd.functional.hessian(loss, w0.flatten())
    torch.testing.assert_close(h.flatten(), full.diagonal(), rtol=1e-4, atol=1e-6)


def _smoke_run(tmp_path: Path) -> Run:
    cfg = copy.deepcopy(registry.get("choi2017").profiles["smoke"])
    return Run("choi2017", "smoke", cfg, 0, cache_dir=tmp_path, progress=False)


def test_adam_second_moment_is_the_root_mean_square_gradient(tmp_path: Path) -> None:
    """Adam's bias-corrected second moment: of every prunable weight's shape, non-negative, not all
    zero."""
    run = _smoke_run(tmp_path)
    model = run.model("lenet-300-100")
    v = adam_second_moment(run, model, 3, 0.999, 32)
    assert len(v) == 3
    params = dict(model.named_parameters())
    for n, t in v.items():
        assert t.shape == params[n].shape and bool((t >= 0).all()) and float(t.sum()) > 0


def test_profiles_validate_and_quick_has_three_seeds() -> None:
    profiles = registry.get("choi2017").profiles
    for name in ("smoke", "quick", "paper"):
        cfg = Config.model_validate(profiles[name])
        assert list(cfg.archs) == [cfg.quantize.model]
        assert len(cfg.quantize.curve_bits) >= 3
    assert profiles["quick"]["seeds"] >= 3
