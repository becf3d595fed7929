"""Changpinyo et al.'s channel-wise random sparse convolutions and their depth-multiplier control."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.changpinyo2017 import (
    bake,
    channel_mask,
    connect,
    narrow_chans,
    sparse_masks,
    sparse_weight_count,
    staged_conv_weights,
    weight_count,
)

from atlas.harness import controls, models


def test_channel_mask_connects_each_output_to_a_fixed_number_of_inputs() -> None:
    gen = torch.Generator().manual_seed(0)
    mask = channel_mask(16, 32, 0.25, gen)
    assert mask.shape == (16, 32)
    assert mask.sum(dim=1).tolist() == [8] * 16
    # drawn independently per output channel: not all rows alike
    assert len({tuple(row.tolist()) for row in mask}) > 1
    assert channel_mask(4, 3, 0.01, gen).sum(dim=1).tolist() == [1] * 4  # at least one input
    assert bool(channel_mask(4, 3, 1.0, gen).all())
    with pytest.raises(ValueError):
        channel_mask(4, 3, 0.0, gen)


def test_channel_mask_is_reproducible_from_its_generator() -> None:
    a = channel_mask(8, 16, 0.5, torch.Generator().manual_seed(7))
    b = channel_mask(8, 16, 0.5, torch.Generator().manual_seed(7))
    c = channel_mask(8, 16, 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sparse_masks_keep_whole_kernels_and_skip_the_first_conv() -> None:
    model = models.build("staged-conv", (1, 28, 28), 10, chans=(8, 16, 32), per_stage=1)
    masks = sparse_masks(model, 0.5, torch.Generator().manual_seed(0))
    assert sorted(masks) == ["features.4.weight", "features.8.weight"]  # conv2, conv3; not conv1 (1 input)
    for mask in masks.values():
        per_pair = mask.flatten(2)
        assert bool((per_pair.all(dim=2) | ~per_pair.any(dim=2)).all())  # a kernel is kept or removed whole
    bake(connect(model, masks))
    # conv1 72 + conv2 8*16*9/2 + conv3 16*32*9/2 + fc 320
    assert sparse_weight_count(model) == 72 + 576 + 2304 + 320
    assert weight_count(model) == 6152
    assert controls.compression_ratio(model) == pytest.approx(6152 / 3272)


def test_weight_formula_and_narrowing() -> None:
    model = models.build("staged-conv", (3, 32, 32), 10, chans=(5, 7, 11), per_stage=1)
    assert staged_conv_weights(3, [5, 7, 11], 10) == weight_count(model)
    # the narrowed network is the smallest uniform narrowing with at least the sparse network's weights
    chans = narrow_chans(1, [8, 16, 32], 10, 1832)
    assert chans == [4, 9, 17]
    assert staged_conv_weights(1, chans, 10) >= 1832
    assert staged_conv_weights(1, [4, 8, 16], 10) < 1832
    assert narrow_chans(1, [8, 16, 32], 10, 6152) == [8, 16, 32]
