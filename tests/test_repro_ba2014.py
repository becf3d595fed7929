"""Ba & Caruana 2014: the L2 logit-regression objective and the linear-bottleneck shallow net."""

import torch
from atlas_reproductions.ba2014 import ShallowNet, mimic_loss


def test_mimic_loss_is_half_squared_distance_per_example() -> None:
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert torch.isclose(mimic_loss(s, t), torch.tensor((0.5 * 4 + 0.5 * 25) / 2))
    assert mimic_loss(t, t) == 0


def test_bottleneck_factorises_the_first_layer() -> None:
    full = ShallowNet((1, 28, 28), 10, hidden=1000)
    thin = ShallowNet((1, 28, 28), 10, hidden=1000, bottleneck=50)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(full) == 784 * 1000 + 1000 + 1000 * 10 + 10
    assert n(thin) == 784 * 50 + 50 * 1000 + 1000 + 1000 * 10 + 10
    assert thin(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
