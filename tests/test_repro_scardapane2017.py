"""Scardapane et al.'s group sparse regularisation: the outgoing-weight groups, R_GL and R_SGL, and the
smaller network that the units with a zero outgoing group leave."""

from __future__ import annotations

import copy

import pytest
import torch
from atlas_reproductions.scardapane2017 import (
    compact,
    compactness,
    group_lasso,
    lasso,
    linears,
    penalty,
    units_kept,
    zero_small,
)
from torch import nn

from atlas.harness import measure, models


def _tiny() -> nn.Module:
    """A 2-2-1 network with hand-set weights."""
    model = models.build("mlp", (2,), 1, hidden=(2,))
    first, second = linears(model)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[3.0, 0.0], [4.0, 1.0]]))  # input 0's outgoing: (3, 4); input 1's: (0, 1)
        first.bias.copy_(torch.tensor([0.0, 0.0]))  # a zero bias group
        second.weight.copy_(torch.tensor([[2.0, 0.0]]))  # neuron 0's outgoing: (2); neuron 1's: (0)
        second.bias.copy_(torch.tensor([-1.0]))
    return model


def test_group_lasso_weights_each_outgoing_group_by_the_root_of_its_size() -> None:
    model = _tiny()
    # input groups (size 2): sqrt2 * (5 + 1); first bias group (size 2): 0;
    # neuron groups (size 1): 2 + 0; second bias group (size 1): 1
    expected = 2**0.5 * 6 + 0 + 2 + 0 + 1
    assert group_lasso(model).item() == pytest.approx(expected)
    assert lasso(model).item() == pytest.approx(3 + 4 + 1 + 2 + 1)
    assert penalty(model, "sgl").item() == pytest.approx(expected + 11)
    with pytest.raises(ValueError):
        penalty(model, "wd")


def test_units_with_a_zero_outgoing_group_are_the_ones_dropped() -> None:
    kept = units_kept(_tiny())
    assert kept[0].tolist() == [True, True]  # both inputs still read
    assert kept[1].tolist() == [True, False]  # neuron 1 feeds nothing


def test_the_smaller_network_computes_the_same_function() -> None:
    torch.manual_seed(0)
    model = models.build("lenet-300-100", (1, 6, 6), 10)
    first, second, third = linears(model)
    with torch.no_grad():
        first.weight[:, [0, 7, 35]] = 0.0  # three input features nobody reads
        second.weight[:, 10:250] = 0.0  # 240 first-layer neurons feed nothing
        third.weight[:, 50:] = 0.0  # 50 second-layer neurons feed nothing
    small = compact(model)
    x = torch.randn(32, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)
    assert measure.count_params(small) == (33 * 60 + 60) + (60 * 50 + 50) + (50 * 10 + 10)
    assert compactness(model)["inputs_kept"] == 33
    assert compactness(model)["hidden1_kept"] == 60
    assert compactness(model)["hidden2_kept"] == 50


def test_removing_a_unit_that_still_feeds_the_next_layer_changes_the_function() -> None:
    """What makes the test above able to fail: a neuron with a non-zero outgoing group matters."""
    torch.manual_seed(0)
    model = models.build("lenet-300-100", (1, 6, 6), 10)
    second = linears(model)[1]
    with torch.no_grad():
        saved = second.weight[:, 3].clone()
        second.weight[:, 3] = 0.0
        small = compact(model)  # neuron 3 dropped
        second.weight[:, 3] = saved  # ... but in the full network it still feeds the next layer
        x = torch.randn(32, 1, 6, 6)
        assert not torch.allclose(small(x), model(x), atol=1e-4)


def test_zero_small_sets_weights_and_biases_below_the_threshold_to_zero() -> None:
    model = nn.Sequential(nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[5e-4, -2e-3, -9e-4]]))
        model[0].bias.fill_(1e-4)
    zero_small(model, 1e-3)
    assert model[0].weight.tolist() == [[0.0, pytest.approx(-2e-3), 0.0]]
    assert model[0].bias.item() == 0.0


def test_sgl_training_drives_groups_of_useless_inputs_to_zero() -> None:
    """On a task that reads only the first two of eight inputs, the sparse group Lasso zeroes the other
    inputs' outgoing groups; plain cross-entropy keeps them all."""
    from atlas_reproductions.scardapane2017 import regularised_loss

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = models.build("mlp", (8,), 2, hidden=(16,))
    plain = copy.deepcopy(model)
    for net, strength in ((model, 1e-2), (plain, 0.0)):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / 600)  # decays to 0, as the harness's cosine
        loss_fn = regularised_loss("sgl", strength)
        for _ in range(600):
            opt.zero_grad()
            loss_fn(net, x, y, torch.arange(512)).backward()
            opt.step()
            sched.step()
        zero_small(net, 1e-3)
    kept = units_kept(model)[0]
    assert kept[:2].all()
    assert int(kept[2:].sum()) <= 1
    assert bool(units_kept(plain)[0].all())


def test_code_mode_leaves_the_biases_out_of_the_penalty() -> None:
    """The released Lasagne script penalises the weights only (``mode: code``); the paper's groups
    include each layer's bias unit (``mode: paper``)."""
    model = _tiny()
    # weights only: input groups sqrt2 * (5 + 1), neuron groups 2 + 0; l1 of the weights 3 + 4 + 1 + 2
    assert group_lasso(model, biases=False).item() == pytest.approx(2**0.5 * 6 + 2)
    assert lasso(model, biases=False).item() == pytest.approx(10)
    assert penalty(model, "sgl", biases=False).item() == pytest.approx(2**0.5 * 6 + 2 + 10)
    assert penalty(model, "sgl").item() - penalty(model, "sgl", biases=False).item() == pytest.approx(1 + 1)
