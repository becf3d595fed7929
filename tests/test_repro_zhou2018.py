"""Rocket Launching's gradient block: the hint loss does not update the booster (zhou2018)."""

import torch
from atlas_reproductions.zhou2018 import RocketNet, rocket_loss


def _grads(net: RocketNet, block: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    x, y = torch.randn(5, 1, 4, 4), torch.randint(0, 3, (5,))
    light, booster = net.both(x)
    net.zero_grad()
    (rocket_loss(light, booster, y, 1.0, block) - rocket_loss(light, booster, y, 0.0, block)).backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def test_hint_gradient_is_blocked_from_booster_only() -> None:
    torch.manual_seed(0)
    net = RocketNet((1, 4, 4), 3, shared=6, light=[], booster=[8])
    blocked = _grads(net, True)
    assert all(g.abs().max() == 0 for n, g in blocked.items() if n.startswith("booster"))
    assert any(g.abs().max() > 0 for n, g in blocked.items() if n.startswith("shared"))
    assert any(g.abs().max() > 0 for n, g in _grads(net, False).items() if n.startswith("booster"))
