"""Park et al.'s weighted-entropy quantization: the weights' weighted entropy and its boundary search
(against brute force), the levels and their encoding (decode(encode(w)) is the quantized weight, bit
for bit), and LogQuant of the activations (its entropy table against a direct count, its levels, its
straight-through gradient)."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.park2017b import (
    BASE,
    LogQuantReLU,
    level_table,
    log_entropies,
    log_histogram,
    log_quant_params,
    log_quantize,
    quantize_weight,
    quantize_weights,
    storage,
    weighted_entropy,
    weighted_entropy_clusters,
    with_log_relus,
)

from atlas.harness import measure, models


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_weighted_entropy_is_the_formula() -> None:
    """Importances 1, 1, 4, 9 (weights ±1, 2, 3) in clusters {1, 1} and {4, 9}: S = -sum I_k p_k log(p_k / 2)
    with p = 1/2, I = 1 and 6.5; an odd level count drops the first (zero) cluster's term."""
    cum = [1.0, 2.0, 6.0, 15.0]
    s = weighted_entropy(cum, [2, 4], num_levels=4)
    want = -(2 / 4) * math.log(0.25) - (13 / 4) * math.log(0.25)
    assert s == pytest.approx(want)
    assert weighted_entropy(cum, [2, 4], num_levels=3) == pytest.approx(-(13 / 4) * math.log(0.25))


def test_boundary_search_finds_the_brute_force_optimum() -> None:
    w = torch.randn(2000, generator=_gen(1)) * 0.1
    c = weighted_entropy_clusters(w, 4)  # two magnitude clusters: one boundary
    cum = (w.abs().sort().values.double() ** 2).cumsum(0).tolist()
    best = max(weighted_entropy(cum, [b, 2000], 4) for b in range(1, 2000))
    assert c.entropy == pytest.approx(best, rel=1e-9)
    equal = weighted_entropy(cum, [1000, 2000], 4)
    assert c.entropy > equal  # the search improves on the equal-count start


def test_levels_are_the_clusters_root_mean_importance() -> None:
    w = torch.randn(3000, generator=_gen(2)) * 0.05
    c = weighted_entropy_clusters(w, 8)
    mags = w.abs().sort().values.double()
    start = 0
    for k, end in enumerate(c.slices):
        assert c.levels[k].item() == pytest.approx(math.sqrt(float((mags[start:end] ** 2).mean())), rel=1e-5)
        if k > 0:
            assert c.bounds[k].item() == pytest.approx(float(mags[start]), rel=1e-6)
        start = end
    assert torch.all(c.levels[1:] > c.levels[:-1]) and torch.all(c.bounds[1:] > c.bounds[:-1])
    odd = weighted_entropy_clusters(w, 7)
    assert odd.levels[0].item() == 0.0 and len(odd.levels) == 4


def test_weights_take_their_clusters_level_with_their_sign() -> None:
    w = torch.randn(40, 30, generator=_gen(3)) * 0.1
    c = weighted_entropy_clusters(w, 8)
    q, index = quantize_weight(w, c)
    assert torch.equal(torch.sign(q), torch.sign(w))
    assert set(q.abs().unique().tolist()) <= set(c.levels.tolist())
    assert torch.equal(level_table(c)[index], q)
    k = (torch.bucketize(w.abs(), c.bounds, right=True) - 1)
    assert torch.equal(q.abs(), c.levels[k])


def test_network_encoding_decodes_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = models.build("lenet-300-100", (1, 8, 8), 10)
    state = quantize_weights(model, 8)
    parts = storage(model, state, 3)
    assert measure.storage_bits(parts) < measure.dense_bits(model) / 5  # 3-bit indices + tables + fp32 biases
    params = dict(model.named_parameters())
    for name, (_, c, _) in state.items():
        assert set(params[name].detach().abs().unique().tolist()) <= set(c.levels.tolist())


def test_log_entropy_table_matches_a_direct_count() -> None:
    x = torch.rand(5000, generator=_gen(4)) * 4
    hist, lo = log_histogram(x)
    table = log_entropies(hist, lo, num_levels=4)
    bins = torch.floor(torch.log2(x) * BASE).long() - lo
    for h, fsr in [(1, 10), (3, 20), (2, 0)]:
        ent = 0.0
        for i in range(1, 4):
            begin, end = fsr + h * (2 * i - 3), fsr + h * (2 * i - 1)
            inside = (bins >= begin) & ((bins < end) | (i == 3))
            p = float(inside.sum()) / len(x)
            if p > 0:
                ent -= 2 ** ((fsr + lo + (i - 1) * 2 * h) / BASE) * p * math.log(p)
        assert table[h - 1, fsr].item() == pytest.approx(ent, rel=1e-9)


def test_log_quantize_levels_clamp_and_zero() -> None:
    x = torch.tensor([-1.0, 0.0, 2.0 ** -9, 1.0, 1.3, 2.0, 1000.0])
    q = log_quantize(x, offset=0.0, step=16.0, num_levels=4)  # levels 1, 2, 4 (and 0)
    assert q.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 4.0]


def test_log_quant_params_pick_a_finite_configuration() -> None:
    x = torch.relu(torch.randn(4000, generator=_gen(5)))
    offset, step = log_quant_params(x, 8)
    assert step % 2 == 0 and 2 <= step <= 32
    q = log_quantize(x, offset, step, 8)
    assert len(q.unique()) <= 8


def test_log_quant_relu_passes_relus_gradient_straight_through() -> None:
    layer = LogQuantReLU(8)
    x = torch.tensor([-0.5, 0.3, 1.7], requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0]
    assert set(y.detach().tolist()) <= set(log_quantize(x.detach().relu(), *layer.params.tolist(), 8).tolist())
    model = with_log_relus(models.build("lenet-300-100", (1, 8, 8), 10), 8)
    assert sum(isinstance(m, LogQuantReLU) for m in model.modules()) == 2
