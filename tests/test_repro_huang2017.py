"""Neuron selectivity transfer's MMD² (reproductions/huang2017.py)."""

import torch
from atlas_reproductions.huang2017 import mmd2, selectivity_samples


def test_mmd2_is_zero_for_identical_maps() -> None:
    x = torch.randn(3, 5, 4, 4)
    for kernel in ("linear", "poly", "gaussian"):
        assert abs(mmd2(x, x.clone(), kernel).item()) < 1e-5


def test_poly_mmd2_matches_explicit_sums() -> None:
    torch.manual_seed(0)
    s_map, t_map = torch.randn(1, 3, 2, 3), torch.randn(1, 4, 2, 3)
    s, t = selectivity_samples(s_map)[0], selectivity_samples(t_map)[0]
    k = lambda a, b: float(a @ b) ** 2  # noqa: E731 - the paper's k(x, y) = (x.y)^2
    expected = (sum(k(a, b) for a in t for b in t) / 16 + sum(k(a, b) for a in s for b in s) / 9
                - 2 * sum(k(a, b) for a in s for b in t) / 12)
    assert abs(mmd2(s_map, t_map, "poly").item() - expected) < 1e-5
    assert mmd2(s_map, t_map, "poly").item() > 0
