"""Unit tests of the pure parts of han2015 (magnitude pruning) and han2016 (Deep Compression's
k-means weight sharing, relative sparse indices and Huffman coding)."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch
from torch import nn

from atlas.harness.run import Run
from reproductions import han2015, han2016
from reproductions.han2015 import apply_masks, magnitude_mask, prunable_layers, prune_by_magnitude
from reproductions.han2016 import (
    SharedLayer,
    huffman_bits,
    huffman_code,
    kmeans_1d,
    layer_streams,
    linear_init,
    relative_indices,
)


# ------------------------------------------------------------------------------------ Huffman
def test_huffman_textbook_example_is_optimal_and_prefix_free() -> None:
    # CLRS 16.3: frequencies (in thousands) a:45 b:13 c:12 d:16 e:9 f:5; an optimal code has lengths
    # a:1, b:3, c:3, d:3, e:4, f:4 and costs 45 + 3*(13+12+16) + 4*(9+5) = 224.
    freqs = {"a": 45, "b": 13, "c": 12, "d": 16, "e": 9, "f": 5}
    codes = huffman_code(freqs)
    assert sum(freqs[s] * len(c) for s, c in codes.items()) == 224
    assert {s: len(c) for s, c in codes.items()} == {"a": 1, "b": 3, "c": 3, "d": 3, "e": 4, "f": 4}
    for x, y in itertools.permutations(codes.values(), 2):
        assert not y.startswith(x)
    assert sum(2.0 ** -len(c) for c in codes.values()) == pytest.approx(1.0)  # a full tree (Kraft)


def test_huffman_small_hand_example_and_single_symbol() -> None:
    # x:2, y:1, z:1 -> merge y,z (2), then with x: lengths x:1, y:2, z:2, total 2*1 + 1*2 + 1*2 = 6.
    codes = huffman_code({"x": 2, "y": 1, "z": 1})
    assert sorted(len(c) for c in codes.values()) == [1, 2, 2]
    assert len(codes["x"]) == 1
    payload, table = huffman_bits(["x", "x", "y", "z"], alphabet=4)
    assert payload == 6
    assert table == 5 + 4 * 2  # max length 2 -> 2 bits per table entry, plus the 5-bit header
    assert huffman_code({"only": 7}) == {"only": "0"}


# ---------------------------------------------------------------------------- relative indices
def test_relative_indices_insert_filler_zeros() -> None:
    # Fig. 2 of Deep Compression with 3-bit indices (gaps 1..8): non-zeros at positions 1, 4 and 15.
    # 15 - 4 = 11 > 8, so a filler entry at 4 + 8 = 12 bridges the gap and 15 follows 3 later.
    entries = relative_indices([1, 4, 15], index_bits=3)
    assert entries == [(2, False), (3, False), (8, True), (3, False)]
    # decoding the gaps gives back the positions (fillers included)
    pos, decoded = -1, []
    for gap, filler in entries:
        pos += gap
        if not filler:
            decoded.append(pos)
    assert decoded == [1, 4, 15]


def test_relative_indices_several_fillers_and_exact_bound() -> None:
    # a gap of exactly 2^bits needs no filler; a gap of 2 * 2^bits + 1 needs two
    assert relative_indices([7], 3) == [(8, False)]
    assert relative_indices([0, 17], 3) == [(1, False), (8, True), (8, True), (1, False)]


def test_layer_streams_on_a_hand_made_sparse_row() -> None:
    row = torch.zeros(16, dtype=torch.long)
    row[1], row[4], row[15] = 3, 1, 2  # cluster codes of the three surviving weights
    s = layer_streams(row.view(1, 16), index_bits=3)
    assert s.gap_symbols == [1, 2, 7, 2]  # gaps 2, 3, 8, 3 stored as gap - 1 in 3 bits
    assert s.weight_symbols == [3, 1, 0, 2]  # the filler carries the zero code
    assert s.fillers == 1


# ------------------------------------------------------------------------------------ k-means
def test_kmeans_linear_init_spans_min_to_max() -> None:
    values = torch.tensor([0.5, -1.0, 3.0, 2.0])
    assert torch.allclose(linear_init(values, 5), torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0]))


def test_kmeans_finds_separated_groups() -> None:
    values = torch.tensor([-1.1, -1.0, -0.9, 0.9, 1.0, 1.1, 5.0])
    centroids, labels = kmeans_1d(values, 3)
    assert torch.allclose(centroids, torch.tensor([-1.0, 1.0, 5.0]), atol=1e-6)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2]


def test_shared_centroid_gradient_is_the_sum_of_its_weights_gradients() -> None:
    codes = torch.tensor([[1, 0, 2], [1, 1, 2]])
    layer = SharedLayer("w", bits=2, index_bits=3, codes=codes, centroids=nn.Parameter(torch.tensor([0.5, -2.0, 0.0])))
    upstream = torch.tensor([[1.0, 10.0, 2.0], [3.0, 4.0, 5.0]])
    (layer.weight() * upstream).sum().backward()
    assert layer.centroids.grad.tolist() == [1.0 + 3.0 + 4.0, 2.0 + 5.0, 0.0]
    assert layer.weight()[0, 1] == 0  # code 0 is the pruned zero


# ------------------------------------------------------------------------------------ pruning
def test_prune_to_keep_ten_percent() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10))
    name = prunable_layers(model)["fc1"]
    masks = prune_by_magnitude(model, {name: 0.1})
    w = dict(model.named_parameters())[name].detach()
    assert abs(int(torch.count_nonzero(w)) - 500) <= 1  # 10% of 5000, +-1
    assert int(masks[name].sum()) == int(torch.count_nonzero(w))
    assert w[masks[name]].abs().min() >= w[~masks[name]].abs().max()  # the largest magnitudes stay
    # the other layer and the biases are untouched
    assert int(torch.count_nonzero(model[2].weight)) == 500 and int(torch.count_nonzero(model[0].bias)) == 50


def test_iterative_pruning_never_revives_a_connection() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(20, 20))
    name = prunable_layers(model)["fc1"]
    first = prune_by_magnitude(model, {name: 0.5})
    with torch.no_grad():
        model[0].weight.add_(torch.randn_like(model[0].weight))  # "retraining" moves every weight
    apply_masks(model, first)
    second = prune_by_magnitude(model, {name: 0.25}, first)
    assert not (second[name] & ~first[name]).any()
    assert int(second[name].sum()) == 100


def test_magnitude_mask_keeps_at_least_one() -> None:
    assert int(magnitude_mask(torch.randn(3, 3), 0.0).sum()) == 1


# ------------------------------------------------------------------------------------ budgets
def _walk(obj: object):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _walk(v)


@pytest.mark.parametrize("module", [han2015, han2016])
def test_profiles_count_steps_and_quick_has_seeds(module) -> None:
    for profile in module.PROFILES.values():
        assert "epochs" not in set(_walk(profile))
    assert module.PROFILES["quick"]["seeds"] >= 3


def _smoke_run(tmp_path: Path, seed: int, train_size: int | None = None) -> Run:
    cfg = copy.deepcopy(han2015.PROFILES["smoke"])
    return Run("han2015", "smoke", cfg, seed, cache_dir=tmp_path, progress=False, train_size=train_size)


@pytest.mark.parametrize("train_size", [None, 300])
def test_pruning_and_its_baseline_get_the_same_steps_on_any_data_size(tmp_path: Path, train_size) -> None:
    run = _smoke_run(tmp_path, 0, train_size)
    cfg = han2015.PROFILES["smoke"]["archs"]["lenet-300-100"]
    han2015.train_pruned(run, "lenet-300-100")
    han2015.train_control(run, "lenet-300-100")
    trained = [b for b in run.budgets if not b.get("from_cache")]
    steps = {kind: [b["steps"] for b in trained if kind in b["stage"]] for kind in ("dense", "prune", "control")}
    assert steps["dense"] and set(steps["dense"]) == {cfg["dense"]["steps"]}
    assert steps["prune"] == steps["control"] == [cfg["retrain"]["steps"]] * cfg["rounds"]


def test_a_shared_dense_model_is_the_same_for_every_seed_but_pruning_is_per_seed(tmp_path: Path) -> None:
    arch = "lenet-5"
    assert han2015.PROFILES["smoke"]["archs"][arch]["dense_per_seed"] is False
    runs = [_smoke_run(tmp_path, seed) for seed in (0, 1)]
    dense = [han2015.train_dense(r, arch).state_dict() for r in runs]
    assert all(torch.equal(dense[0][k], dense[1][k]) for k in dense[0])
    assert [hit["model"] for hit in runs[1].cache_hits] == [f"han2015-{arch}-dense"]  # seed 1 loaded seed 0's
    pruned = [han2015.train_pruned(r, arch)[0].state_dict() for r in runs]
    assert not all(torch.equal(pruned[0][k], pruned[1][k]) for k in pruned[0])
