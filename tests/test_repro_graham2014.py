"""Spatially-sparse CNNs: active sites propagated layer to layer, the ground state, the convolution and
pooling computed at the active sites only (equal to the dense network), the counted FLOPs, the outline."""

from __future__ import annotations

import torch
from atlas_reproductions.graham2014 import (
    SparseNet,
    active_shares,
    counted_flops,
    input_map,
    outline,
    sparse_conv2d,
    sparse_trunk,
)
from torch import nn

from atlas.harness import models


def _sparse_input(n: int, c: int, h: int, w: int, density: float, background: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    keep = torch.rand(n, 1, h, w, generator=g) < density
    return torch.where(keep, x, torch.full_like(x, background))


def test_sparse_trunk_equals_the_dense_network_at_every_site() -> None:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 2, padding=1), nn.ReLU(),
                          nn.MaxPool2d(3, 2))
    background = torch.tensor([-0.4, 0.3])
    x = _sparse_input(3, 2, 16, 16, 0.05, 0.0, seed=1)
    x = torch.where((x == 0).all(1, keepdim=True), background.view(1, -1, 1, 1).expand_as(x), x)
    maps = sparse_trunk(trunk, x, background)
    dense = x
    for layer, m in zip(trunk, maps[1:], strict=True):
        dense = layer(dense)
        torch.testing.assert_close(m.dense(), dense, atol=1e-5, rtol=1e-5)
        inactive = ~m.active
        # every inactive site holds the one ground state (row 0), as the dense network computes it
        torch.testing.assert_close(dense.permute(0, 2, 3, 1)[inactive], m.features[0].expand(int(inactive.sum()), -1))
    shares = active_shares(maps)
    assert 0 < shares[0] < 0.15 and shares[1] < 0.6 and shares[0] < shares[1]  # sparse, and the active set grows


def test_one_active_pixel_activates_exactly_its_receptive_field() -> None:
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 3] = 1.0
    conv = nn.Conv2d(1, 2, 3)  # 6x6 output: sites (y, x) with y, x in 1..3 see the pixel
    m = sparse_conv2d(input_map(x, torch.zeros(1)), conv)
    expected = torch.zeros(1, 6, 6, dtype=torch.bool)
    expected[0, 1:4, 1:4] = True
    assert torch.equal(m.active, expected)
    assert m.features.shape == (1 + 9, 2)
    pooled = sparse_trunk(nn.Sequential(conv, nn.MaxPool2d(2)), x, torch.zeros(1))[-1]
    assert pooled.active[0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_counted_flops_are_the_active_sites_products_plus_one_ground_state() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 4, 3)
    x = _sparse_input(2, 3, 10, 10, 0.1, 0.0, seed=3)
    m = input_map(x, torch.zeros(3))
    out = sparse_conv2d(m, conv)
    a = int(out.active.sum())
    total, _, _ = counted_flops(sparse_conv2d, m, conv)  # type: ignore[arg-type]
    assert total == 2 * (a + 1) * 9 * 3 * 4
    assert a < 2 * 8 * 8  # fewer than the dense layer's sites


def test_sparse_lenet5_equals_the_dense_one_and_all_active_is_dense() -> None:
    torch.manual_seed(4)
    model = models.build("lenet-5", (1, 28, 28), 10, width=0.5).eval()
    x = _sparse_input(4, 1, 28, 28, 0.05, -0.5, seed=5)
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(SparseNet(model, torch.tensor([-0.5]))(x), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(SparseNet(model, torch.tensor([-0.5]), all_active=True)(x), want,
                                   atol=1e-5, rtol=1e-5)
        # the same active sites with a wrong ground state (0 instead of the background) break the equality
        m = input_map(x, torch.tensor([-0.5]))
        m.features[0] = 0.0
        conv = model.features[0]
        assert not torch.allclose(sparse_conv2d(m, conv).dense(), conv(x), atol=1e-3)
    sparse_total, _, _ = counted_flops(SparseNet(model, torch.tensor([-0.5])), x)
    dense_total, _, _ = counted_flops(model, x)
    assert sparse_total < dense_total


def test_outline_keeps_the_inked_sites_with_a_blank_neighbour() -> None:
    x = torch.full((1, 1, 6, 6), -1.0)
    x[0, 0, 1:5, 1:5] = 2.0
    out = outline(x, torch.tensor([-1.0]))[0, 0]
    ring = torch.zeros(6, 6, dtype=torch.bool)
    ring[1:5, 1:5] = True
    ring[2:4, 2:4] = False
    assert torch.equal(out == 2.0, ring)
    assert torch.equal(out[~ring], torch.full((int((~ring).sum()),), -1.0))
