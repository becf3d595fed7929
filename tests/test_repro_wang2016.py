"""The dominant-kernel (low-rank) convolution of reproductions/wang2016.py."""

import torch
from atlas_reproductions.wang2016 import DominantKernelConv
from torch import nn

from atlas.harness import measure


def test_dominant_kernel_conv_shape_and_size() -> None:
    conv = nn.Conv2d(16, 32, 3, padding=1, bias=False)
    dk = DominantKernelConv(conv, rank=1)
    x = torch.randn(2, 16, 7, 7)
    assert dk(x).shape == conv(x).shape
    # 16*1*9 dominant-kernel weights + 16*32 coefficients, against 16*32*9
    assert measure.count_params(dk) == 16 * 9 + 16 * 32
    assert measure.count_params(conv) / measure.count_params(dk) > 6


def test_kp_student_gets_the_same_step_budget() -> None:
    """Pre-regression steps come out of the student's budget, not on top of it."""
    from atlas_reproductions.wang2016 import PROFILES

    from atlas.harness.convnets import remaining_steps

    class _Run:
        def __init__(self, config: dict) -> None:
            self.config = config

    for profile in PROFILES.values():
        run = _Run(profile)
        assert remaining_steps(run, "kp") + profile["kp"]["steps"] == profile["student"]["steps"]
