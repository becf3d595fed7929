"""Attention maps of activation-based attention transfer (reproductions/zagoruyko2017.py)."""

import torch

from reproductions.zagoruyko2017 import at_loss, attention_map


def test_attention_map_is_unit_norm_and_channel_count_free() -> None:
    a = torch.randn(2, 6, 5, 5)
    q = attention_map(a)
    assert q.shape == (2, 25)
    assert torch.allclose(q.norm(dim=1), torch.ones(2))
    # the map depends on sum_c A_c², not on how many channels carry it
    assert torch.allclose(attention_map(torch.cat([a, a], 1)), q, atol=1e-6)
    assert at_loss(a, q).item() < 1e-10
