"""ardakani2017 (sparsely-connected networks): the LFSR (maximal length, deterministic), the masks'
density, the index-free encoding that decodes to the weights, and training that keeps the disabled
connections at zero."""

from __future__ import annotations

import copy

import pytest
import torch
from atlas_reproductions.ardakani2017 import (
    PROFILES,
    Config,
    encode_lfsr,
    lfsr_mask,
    lfsr_states,
    lfsr_step,
    nominal_ratio,
    sparse_layers,
    train_sparse,
)

from atlas.harness import controls
from atlas.harness.profiles import validate_profile
from atlas.harness.run import Run


def _run(tmp_path, **changes) -> Run:
    config = copy.deepcopy(PROFILES["smoke"])
    config.update(changes)
    config = validate_profile("ardakani2017", "smoke", Config, config)
    return Run("ardakani2017", "smoke", config, seed=0, cache_dir=tmp_path, progress=False)


def test_the_lfsr_has_maximal_period() -> None:
    s, seen = 1, set()
    for _ in range(2**16 - 1):
        s = lfsr_step(s)  # the same operations on a Python int
        seen.add(s)
    assert s == 1 and len(seen) == 2**16 - 1 and 0 not in seen


def test_masks_are_deterministic_and_have_the_density() -> None:
    a = lfsr_mask((300, 784), 12345, 0.1)
    assert torch.equal(a, lfsr_mask((300, 784), 12345, 0.1))  # regenerated from the seed alone
    assert not torch.equal(a, lfsr_mask((300, 784), 54321, 0.1))
    assert a.float().mean().item() == pytest.approx(0.1, abs=0.005)
    assert a.float().mean(1).min() > 0.05  # every neuron keeps some inputs
    # words 16 clocks apart share no bits: enabled connections do not come in runs
    runs = (a[:, 1:] & a[:, :-1]).float().mean() / a.float().mean()
    assert runs.item() == pytest.approx(0.1, abs=0.02)
    assert torch.all(lfsr_states(torch.tensor([7, 9]), 5) > 0)


def test_encoding_stores_no_indices_and_decodes_to_the_weights() -> None:
    torch.manual_seed(0)
    mask = lfsr_mask((20, 64), 77, 0.25)
    w = torch.randn(20, 64) * mask
    enc = encode_lfsr(w, 77, 0.25)
    assert torch.equal(enc.to_dense(), w)
    assert enc.storage_bytes() == 4 * int(mask.sum()) + 8  # values, seed and threshold only


def test_sparse_training_keeps_disabled_connections_at_zero_and_the_classifier_dense(tmp_path) -> None:
    run = _run(tmp_path, train={**PROFILES["smoke"]["train"], "steps": 5})
    model, masks, seeds = train_sparse(run, 0.9)
    assert set(masks) == set(seeds) == set(sparse_layers(model))
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        w = params[name].detach()
        assert torch.all(w[~mask] == 0) and torch.count_nonzero(w[mask]) == mask.sum()
        assert torch.equal(encode_lfsr(w, seeds[name], 0.1).to_dense(), w)
    last = controls.weight_names(model)[-1]
    assert torch.count_nonzero(params[last]) == params[last].numel()
    # the curve's x: all weights over the hidden layers' 10% and the whole classifier
    total = sum(params[n].numel() for n in controls.weight_names(model))
    kept = 0.1 * sum(m.numel() for m in masks.values()) + params[last].numel()
    assert nominal_ratio(model, masks, 0.9) == round(total / kept, 2)


def test_profiles_put_the_claims_sparsity_on_a_three_point_curve() -> None:
    for values in PROFILES.values():
        cfg = Config.model_validate(values)
        assert cfg.sparsity in cfg.curve_sparsities and len(cfg.curve_sparsities) >= 3
    with pytest.raises(ValueError, match="one of the curve"):
        Config.model_validate({**PROFILES["smoke"], "sparsity": 0.8})
