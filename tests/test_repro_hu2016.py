"""The rule projection and the imitation schedule of iterative rule distillation (hu2016)."""

import pytest
import torch
from atlas_reproductions.hu2016 import (
    ANKLE_BOOT,
    PROFILES,
    SNEAKER,
    T_SHIRT,
    Config,
    imitation_weight,
    project,
    rule_penalty,
)

from atlas.errors import ReproductionError
from atlas.harness.profiles import validate_profile


def test_penalty_hits_only_excluded_classes() -> None:
    features = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
    pen = rule_penalty(features, 10, [1.0, 1.0, 1.0])
    assert pen[0, ANKLE_BOOT] == 1.0 and pen[0].sum() == 1.0
    assert pen[1, T_SHIRT] == 0.5 and pen[1].sum() == 0.5
    assert pen[2, SNEAKER] == 1.0 and pen[2, ANKLE_BOOT] == 1.0 and pen[2].sum() == 2.0


def test_projection_is_p_times_exp_minus_c_penalty() -> None:
    logits = torch.randn(3, 10)
    pen = torch.rand(3, 10)
    q = project(logits, pen, 6.0).exp()
    expected = torch.softmax(logits, 1) * torch.exp(-6.0 * pen)
    assert torch.allclose(q, expected / expected.sum(1, keepdim=True), atol=1e-6)
    assert torch.allclose(project(logits, torch.zeros(3, 10), 6.0).exp(), torch.softmax(logits, 1), atol=1e-6)


def test_imitation_weight_anneals_to_cap() -> None:
    assert imitation_weight(0, 0.95, 1.0) == 0.0
    assert abs(imitation_weight(10, 0.95, 1.0) - (1 - 0.95**10)) < 1e-12
    assert imitation_weight(1000, 0.95, 0.9) == 0.9


def test_profile_needs_one_weight_per_rule() -> None:
    """A rule weight too few is refused when the profile is read, naming the paper and the key."""
    cfg = validate_profile("hu2016", "smoke", Config, PROFILES["smoke"])
    assert cfg["train"] == {"steps": 90, "lr": 0.05, "batch_size": 64, "optimizer": "sgd", "momentum": 0.9,
                            "weight_decay": 0.0, "schedule": "cosine"}
    with pytest.raises(ReproductionError, match=r"hu2016.py, profile 'smoke'.*'rule_weights'"):
        validate_profile("hu2016", "smoke", Config, dict(PROFILES["smoke"], rule_weights=[1.0, 1.0]))
