"""Li et al. 2017: BinaryConnect (a float buffer quantized in the forward pass) against stochastic
rounding (the weights themselves kept on the grid, each update rounded stochastically). The grid,
the two update rules, the buffer clipping and the storage encoding."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.li2017c import (
    Grid,
    GridLinear,
    clip_buffer,
    decode_weight,
    deployed_weights,
    encode_weight,
    grid_for,
    grid_storage,
    layer_grids,
    round_weights,
    to_binaryconnect,
    to_stochastic_rounding,
)
from torch import nn

from atlas.harness import measure


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def test_grids_have_the_stated_points() -> None:
    binary, two, four = Grid(1, 0.5), Grid(2, 0.5), Grid(4, 0.25)
    assert (binary.points, binary.spacing, binary.bound) == (2, 1.0, 0.5)
    assert (two.points, two.bound) == (3, 0.5)
    assert (four.points, four.bound) == (15, 1.75)
    w = torch.tensor([-3.0, -0.3, -0.1, 0.0, 0.2, 0.6, 9.0])
    assert binary.round(w, "nearest").tolist() == [-0.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5]
    assert two.round(w, "nearest").tolist() == [-0.5, -0.5, 0.0, 0.0, 0.0, 0.5, 0.5]
    assert four.round(w, "nearest").tolist() == [-1.75, -0.25, 0.0, 0.0, 0.25, 0.5, 1.75]


def test_grid_step_comes_from_the_initial_weights() -> None:
    w = torch.tensor([[-2.0, 1.0], [0.5, -0.5]])
    assert grid_for(w, 1).step == pytest.approx(1.0)  # mean |w|
    assert grid_for(w, 2).step == pytest.approx(2.0)  # max |w| / 1
    assert grid_for(w, 4).step == pytest.approx(2.0 / 7)


def test_stochastic_rounding_is_unbiased_and_stays_on_the_grid() -> None:
    torch.manual_seed(0)
    g = Grid(2, 1.0)
    w = torch.full((200_000,), 0.3)
    q = g.round(w, "stochastic")
    assert set(q.unique().tolist()) == {0.0, 1.0}
    assert q.mean().item() == pytest.approx(0.3, abs=0.01)  # E[Q_s(w)] = w
    assert g.round(w, "nearest").unique().tolist() == [0.0]


def test_small_updates_accumulate_in_the_bc_buffer_but_only_by_chance_in_sr() -> None:
    """The paper's contrast: after 10 updates of a tenth of a grid spacing, BC's buffer has moved a
    whole spacing (the quantized weight flips deterministically); SR's weights flip at random."""
    initial = nn.Sequential(nn.Linear(100, 100, bias=False))
    with torch.no_grad():
        initial[0].weight.fill_(0.45)  # binary grid step 0.45 (mean |w|): every weight on +0.45
    grids = layer_grids(initial, 1)
    bc = to_binaryconnect(initial, grids)
    torch.manual_seed(0)
    sr = to_stochastic_rounding(initial, grids)
    sr_round = round_weights(grids)
    for _ in range(10):
        with torch.no_grad():
            bc[0].weight -= 0.09  # a tenth of the spacing 0.9
            sr[0].weight -= 0.09
        clip_buffer(bc)
        sr_round(sr)
    step = grids["0"].step  # 0.45 up to the rounding of the mean
    assert step == pytest.approx(0.45)
    bc_w = bc[0].quantize(bc[0].weight.detach())
    assert torch.all(bc_w == -step)  # the buffer crossed zero: every weight flipped
    assert torch.all(bc[0].weight >= -step)  # clipped to the grid's range
    sr_w = sr[0].weight.detach()
    assert set(sr_w.unique().tolist()) <= {-step, step}
    # each update flips a +0.45 weight with probability 0.1, and a flipped one stays (saturated at
    # -0.45): after 10 updates 1 - 0.9^10 = 65% have flipped, not all
    assert 0.55 < (sr_w == -step).float().mean().item() < 0.75


def test_bc_forward_uses_the_quantized_weights_and_the_gradient_reaches_the_buffer() -> None:
    model = to_binaryconnect(_mlp(), layer_grids(_mlp(), 2))
    layer = model[1]
    assert isinstance(layer, GridLinear)
    x = torch.randn(4, 6)
    expected = torch.nn.functional.linear(x, layer.grid.round(layer.weight.detach(), "nearest"), layer.bias)
    assert torch.allclose(layer(x), expected)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_storage_decodes_to_the_deployed_weights(bits: int) -> None:
    model = to_binaryconnect(_mlp(), layer_grids(_mlp(), bits))
    weights = deployed_weights(model)
    assert sorted(weights) == ["1.weight", "3.weight"]
    for w, grid in weights.values():
        q = encode_weight(w, grid)
        assert isinstance(q, ak.LowBitWeight if bits == 1 else ak.FixedPointWeight)
        assert torch.equal(decode_weight(q, grid).reshape(w.shape), w)
    parts = {p.name: p.bits for p in grid_storage(model)}
    words = {1: (1, 1), 2: (1, 1), 4: (1, 1)}[bits]  # 6 and 5 codes per row fit one int32 word
    assert parts["1.weight"] == 32 * 5 * words[0] + (64 if bits == 1 else 0)  # binary: two fp32 decode constants
    assert parts["3.weight"] == 32 * 3 * words[1] + (64 if bits == 1 else 0)
    assert parts["1.bias"] == 32 * 5 and parts["1.weight.step"] == 32
    assert measure.storage_bits(grid_storage(model)) == sum(parts.values())
