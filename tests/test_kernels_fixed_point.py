"""atlas_kernels' fixed-point format ``<IL, FL>``: the rounding modes of Gupta et al. 2015 (Eq. 1-2),
saturation, and the packed codes, which decode back exactly to the quantized values."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_range_of_formats() -> None:
    assert ak.fixed_point_range(16, 14) == (-2.0, 2.0 - 2.0**-14)  # <2, 14>
    assert ak.fixed_point_range(8, 4) == (-8.0, 8.0 - 1 / 16)  # <4, 4>
    assert ak.fixed_point_range(4, 6) == (-0.125, 0.125 - 2.0**-6)  # IL = -2: a range below 1/2
    with pytest.raises(ValueError, match="word_length"):
        ak.fixed_point_range(17, 8)


def test_round_to_nearest_by_hand_ties_go_down() -> None:
    # <4, 2>: eps = 0.25, range [-8, 7.75]
    x = torch.tensor([0.1, 0.125, 0.126, -0.125, -0.126, 1.374, 7.8, 100.0, -8.1, -1e9])
    got = ak.round_fixed_point(x, 6, 2, "nearest")
    assert got.tolist() == [0.0, 0.0, 0.25, -0.25, -0.25, 1.25, 7.75, 7.75, -8.0, -8.0]


def test_stochastic_rounding_picks_the_two_neighbours_and_is_unbiased() -> None:
    eps = 2.0**-3
    for v in (0.3, -0.71, 1.0 / 16, 2.0):
        x = torch.full((200_000,), v)
        r = ak.round_fixed_point(x, 8, 3, "stochastic", generator=_gen(1))
        lo = torch.floor(torch.tensor(v) / eps) * eps
        assert set(r.unique().tolist()) <= {lo.item(), lo.item() + eps}
        p = (v - lo.item()) / eps  # probability of rounding up
        sd = eps * (p * (1 - p) / x.numel()) ** 0.5
        assert r.double().mean().item() == pytest.approx(v, abs=5 * sd + 1e-12)
    # round-to-nearest of the same values is biased: 0.3 -> 0.25 always
    assert ak.round_fixed_point(torch.full((10,), 0.3), 8, 3, "nearest").eq(0.25).all()


def test_stochastic_rounding_keeps_small_updates_in_expectation() -> None:
    """Gupta et al.'s point: an update below eps/2 vanishes under round-to-nearest, not under
    stochastic rounding (in expectation)."""
    w = torch.zeros(100_000)
    step = torch.full_like(w, 2.0**-10)  # a quarter of eps = 2^-8
    assert ak.round_fixed_point(w + step, 12, 8, "nearest").eq(0).all()
    sr = ak.round_fixed_point(w + step, 12, 8, "stochastic", generator=_gen(2))
    assert sr.mean().item() == pytest.approx(2.0**-10, rel=0.05)


def test_saturation_in_both_modes() -> None:
    x = torch.tensor([-5.0, -4.0, 3.99, 4.0, 50.0])
    lo, hi = ak.fixed_point_range(5, 2)  # <3, 2>: [-4, 3.75]
    for mode in ("nearest", "stochastic"):
        r = ak.round_fixed_point(x, 5, 2, mode, generator=_gen(3))
        assert r.min().item() >= lo and r.max().item() <= hi
        assert r[[0, 1]].tolist() == [-4.0, -4.0] and r[[3, 4]].tolist() == [3.75, 3.75]


@pytest.mark.parametrize(("wl", "fl"), [(16, 14), (16, 8), (12, 10), (8, 4), (5, 7), (3, -1), (1, 0)])
@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
def test_encoding_round_trips_to_the_quantized_values(wl: int, fl: int, mode: str) -> None:
    w = torch.randn(7, 37, generator=_gen(wl * 100 + fl)) * 2.0 ** (wl - fl - 2)
    w[0, :3] = torch.tensor([1e6, -1e6, 0.0])  # saturate both ends
    q = ak.round_fixed_point(w, wl, fl, mode, generator=_gen(5))  # type: ignore[arg-type]
    enc = ak.encode_fixed_point(w, wl, fl, mode, generator=_gen(5))  # type: ignore[arg-type]
    assert torch.equal(enc.dequantize(), q)  # the same draws: exactly the quantized weights
    assert enc.int_length == wl - fl
    ints = enc.integers()
    assert int(ints.min()) >= -(1 << (wl - 1)) and int(ints.max()) <= (1 << (wl - 1)) - 1
    assert torch.equal(ints.double() * 2.0**-fl, q.double())
    # a tensor already on the grid is stored exactly, in either mode
    assert torch.equal(ak.encode_fixed_point(q, wl, fl, "stochastic", generator=_gen(6)).dequantize(), q)


@pytest.mark.parametrize("wl", [1, 3, 8, 12, 16])
def test_storage_is_the_packed_codes(wl: int) -> None:
    enc = ak.encode_fixed_point(torch.randn(5, 37, generator=_gen(wl)), wl, max(0, wl - 3))
    cpw = 32 // wl
    assert enc.packed.dtype == torch.int32 and enc.packed.shape == (5, -(-37 // cpw))
    assert enc.storage_bytes() == 4 * 5 * -(-37 // cpw)  # IL and FL are metadata, no scale stored
    assert enc.bits_per_weight() == pytest.approx(32 * -(-37 // cpw) / 37)


def test_encoding_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        ak.encode_fixed_point(torch.zeros(3), 8, 4)
    with pytest.raises(ValueError, match="rounding"):
        ak.round_fixed_point(torch.zeros(3), 8, 4, "up")  # type: ignore[arg-type]
