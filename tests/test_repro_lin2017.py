"""BCNN with separable filters (lin2017): the rank-1 binary kernels, their gradient through the SVD,
the separable layers of the network and their packed encodings (round trip and bit count)."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions import courbariaux2015
from atlas_reproductions.lin2017 import (
    PROFILES,
    SFConv2d,
    binarize,
    conv_bits,
    decode_separable,
    encode,
    factors,
    network,
    rank1_fraction,
    rank1_sign,
    rank1_vjp,
    separable_sign,
)


def test_rank1_sign_is_the_outer_product_of_the_top_singular_vectors_signs() -> None:
    b = torch.tensor([[1.0, 1.0, -1.0], [1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])
    q = rank1_sign(b)
    assert torch.linalg.matrix_rank(q) == 1
    u, s, vh = torch.linalg.svd(b)
    expected = torch.outer(torch.sign(u[:, 0]), torch.sign(vh[0]))
    assert torch.equal(q, expected)
    assert (q != b).sum() == 1  # one sign changes: the closest rank-1 sign pattern here
    rank_one = torch.outer(torch.tensor([1.0, -1.0, 1.0]), torch.tensor([-1.0, 1.0, 1.0]))
    assert torch.equal(rank1_sign(rank_one), rank_one)  # a separable kernel is left as it is


def test_factors_rebuild_the_separable_kernels() -> None:
    torch.manual_seed(0)
    w = torch.randn(5, 4, 3, 3)
    col, row = factors(w)
    q = rank1_sign(courbariaux2015.binarize_deterministic(w))
    assert torch.equal(col[..., :, None] * row[..., None, :], q)
    assert bool((torch.linalg.matrix_rank(q) == 1).all())


def test_the_closed_form_gradient_of_the_rank1_approximation() -> None:
    torch.manual_seed(1)
    b = torch.randn(6, 3, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, 3, 3, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(b)
    ((s[:, :1, None] * u[:, :, :1] * vh[:, :1, :]) * g).sum().backward()  # autograd (generic matrices)
    assert torch.allclose(rank1_vjp(b.detach(), g), b.grad, atol=1e-8)
    # and a central finite difference of one entry
    e = torch.zeros(6, 3, 3, dtype=torch.float64)
    e[2, 1, 0] = 1e-6

    def f(x: torch.Tensor) -> torch.Tensor:
        u, s, vh = torch.linalg.svd(x)
        return ((s[:, :1, None] * u[:, :, :1] * vh[:, :1, :]) * g).sum()

    fd = (f(b.detach() + e) - f(b.detach() - e)) / 2e-6
    assert rank1_vjp(b.detach(), g)[2, 1, 0] == pytest.approx(float(fd), rel=1e-5)


def test_separable_sign_backward_uses_the_svd_gradient_where_the_top_pair_is_unique() -> None:
    torch.manual_seed(1)
    w = torch.randn(64, 3, 3, requires_grad=True)
    g = torch.randn(64, 3, 3)
    separable_sign(w).backward(g)
    b = courbariaux2015.binarize_deterministic(w.detach()).double()
    sv = torch.linalg.svdvals(b)
    simple = (sv[:, 0] - sv[:, 1]) > 1e-6
    assert simple.any() and (~simple).any()  # both cases occur among random sign kernels
    assert torch.allclose(w.grad[simple].double(), rank1_vjp(b, g.double())[simple], atol=1e-5)
    assert torch.equal(w.grad[~simple], g[~simple])  # straight through where the top pair is not unique
    assert torch.isfinite(w.grad).all()


def test_the_sf_network_propagates_with_separable_kernels_and_keeps_the_latent_weights() -> None:
    torch.manual_seed(2)
    fp32 = network((1, 8, 8), 3, [4, 6], [1])
    sf, bcnn = binarize(fp32, separable=True), binarize(fp32, separable=False)
    assert [type(m).__name__ for m in sf][:4] == ["SFConv2d", "BatchNorm2d", "SignActivation", "SFConv2d"]
    assert type(bcnn[0]).__name__ == "BinaryConv2d"
    for a, b in zip(fp32.parameters(), sf.parameters(), strict=True):
        assert torch.equal(a, b)
    seen: list[torch.Tensor] = []
    sf[3].register_forward_hook(lambda m, i, o: seen.append(m.propagation_weight().detach()))
    sf.train()
    out = sf(torch.randn(5, 1, 8, 8))
    assert torch.equal(seen[0], rank1_sign(courbariaux2015.binarize_deterministic(sf[3].weight.detach())))
    courbariaux2015.square_hinge_loss(out, torch.arange(5) % 3).backward()
    assert sf[0].weight.grad is not None and sf[0].weight.grad.abs().sum() > 0


def test_encoding_round_trip_and_the_storage_saving() -> None:
    torch.manual_seed(3)
    fp32 = network((1, 8, 8), 3, [16, 32], [1])
    sf, bcnn = binarize(fp32, separable=True), binarize(fp32, separable=False)
    enc = encode(sf)
    for name in ("0.weight", "3.weight"):
        m = dict(sf.named_children())[name.split(".")[0]]
        assert isinstance(m, SFConv2d)
        assert torch.equal(decode_separable(enc[name], m.weight.shape), m.quantize(m.weight.detach()))
    # 16 -> 32: each filter 16 x 3 column + 16 x 3 row signs = 96 bits (3 words), against 16 x 9 = 144 (5 words)
    assert enc["3.weight"].storage_bytes() * 8 == 32 * 96
    assert encode(bcnn)["3.weight"].storage_bytes() * 8 == 32 * 160
    # first layer (1 input channel): 6 bits and 9 bits each fill one word
    assert conv_bits(sf) == 16 * 32 + 32 * 96 and conv_bits(bcnn) == 16 * 32 + 32 * 160
    assert 0.0 <= rank1_fraction(bcnn) <= 1.0


@pytest.mark.parametrize("name", ["smoke", "quick", "paper"])
def test_profiles(name: str) -> None:
    assert PROFILES[name]["train"]["steps"] > 0
    assert PROFILES["quick"]["seeds"] >= 3
