"""Attention maps of activation-based attention transfer (reproductions/zagoruyko2017.py)."""

import torch
from atlas_reproductions.zagoruyko2017 import at_loss, attention_map


def test_attention_map_is_unit_norm_and_channel_count_free() -> None:
    a = torch.randn(2, 6, 5, 5)
    q = attention_map(a)
    assert q.shape == (2, 25)
    assert torch.allclose(q.norm(dim=1), torch.ones(2))
    # the map depends on sum_c A_c², not on how many channels carry it
    assert torch.allclose(attention_map(torch.cat([a, a], 1)), q, atol=1e-6)
    assert at_loss(a, q).item() < 1e-10
    assert at_loss(a, q, "code").item() < 1e-10


def test_at_loss_is_the_authors_form() -> None:
    """The authors' code: at(x) = F.normalize(x.pow(2).mean(1).view(B, -1)), at_loss =
    (at(x) - at(y)).pow(2).mean(), i.e. ||Q_s - Q_t||² divided by the batch and the map size, used
    with beta = 1000 as beta/2 * sum over groups."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    s, t = torch.randn(4, 3, 6, 6), torch.randn(4, 5, 6, 6)

    def at(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))

    expected = (at(s) - at(t)).pow(2).mean()
    assert torch.allclose(at_loss(s, attention_map(t), "code"), expected)
    per_example = (at(s) - at(t)).norm(dim=1).pow(2)
    assert torch.allclose(expected, per_example.sum() / (4 * 36))


def test_at_loss_paper_mode_is_eq_2_and_differs_from_the_code_by_the_square() -> None:
    """Eq. 2 with p = 2 and beta divided by the map size and the batch: the mean over the batch of the
    L2 norm (not squared) of the normalised maps' difference, divided by H*W (torchdistill's
    mode='paper' up to that constant)."""
    import pytest

    torch.manual_seed(1)
    s, t = torch.randn(4, 3, 6, 6), torch.randn(4, 5, 6, 6)
    norms = (attention_map(s) - attention_map(t)).norm(dim=1)
    assert torch.allclose(at_loss(s, attention_map(t), "paper"), norms.mean() / 36)
    assert torch.allclose(at_loss(s, attention_map(t), "code"), norms.pow(2).mean() / 36)
    # close maps: the paper's term is the larger one
    near = attention_map(s) + 0.01 * torch.randn(4, 36)
    assert at_loss(s, near, "paper") > 5 * at_loss(s, near, "code")
    with pytest.raises(ValueError, match="unknown attention-transfer mode"):
        at_loss(s, near, "other")
