"""Unit tests of the pure parts of han2015 (magnitude pruning, CSR storage) and han2016 (Deep
Compression's k-means weight sharing, relative sparse indices and Huffman coding), including that every
encoding whose bytes are counted decodes back to the weights it stores."""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from pathlib import Path

import pytest
import torch
from atlas_reproductions import han2015
from atlas_reproductions.han2015 import (
    apply_masks,
    encode_csr,
    magnitude_mask,
    prunable_layers,
    prune_by_magnitude,
)
from atlas_reproductions.han2016 import (
    SharedLayer,
    encode_codebook_layers,
    encode_stages,
    huffman_code,
    huffman_decode,
    huffman_encode,
    kmeans_1d,
    layer_streams,
    linear_init,
    relative_indices,
    share_weights,
    stage_parts,
    write_shared,
)
from torch import nn

from atlas.harness import measure, registry
from atlas.harness.run import Run


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
    assert huffman_code({"only": 7}) == {"only": "0"}


def test_huffman_stream_round_trips_and_counts_its_bytes() -> None:
    # x:2, y:1, z:1 as symbols 0, 1, 2 of a 4-symbol alphabet: 6 payload bits, lengths 1, 2, 2, 0
    stream = huffman_encode([0, 0, 1, 2], alphabet=4)
    assert stream.nbits == 6 and stream.width == 2
    assert huffman_decode(stream) == [0, 0, 1, 2]
    assert stream.storage_bytes() == 4 + 4  # one word of code bits, one word of 2-bit lengths
    gen = torch.Generator().manual_seed(0)
    symbols = torch.multinomial(torch.tensor([50.0, 20, 10, 5, 5, 4, 3, 2, 1]), 3000, True, generator=gen).tolist()
    stream = huffman_encode(symbols, alphabet=16)
    assert huffman_decode(stream) == symbols
    code = huffman_code(Counter(symbols))
    assert stream.nbits == sum(len(code[s]) for s in symbols) < 3 * len(symbols)  # below fixed 4-bit codes
    assert stream.storage_bytes() == 4 * -(-stream.nbits // 32) + 4 * -(-16 // (32 // stream.width))
    assert huffman_decode(huffman_encode([], alphabet=4)) == []


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


# ---------------------------------------------------------------------------------- encodings
def _pruned_and_shared(index_bits: int = 3) -> tuple[nn.Module, nn.Module, list[SharedLayer]]:
    """A small pruned MLP and a copy of it with Deep Compression's weight sharing (4 and 3 bits;
    ``index_bits``-bit relative indices, so that gaps overflow into filler entries)."""
    torch.manual_seed(2)
    pruned = nn.Sequential(nn.Linear(60, 40), nn.ReLU(), nn.Linear(40, 10))
    layers = prunable_layers(pruned)
    masks = prune_by_magnitude(pruned, {layers["fc1"]: 0.05, layers["fc2"]: 0.3})
    model = copy.deepcopy(pruned)
    shared = share_weights(model, masks, {"fc1": 4, "fc2": 3}, {"conv": 8, "fc": index_bits})
    write_shared(model, shared)
    return pruned, model, shared


def test_csr_encoding_decodes_to_the_pruned_weights() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(16, 5))
    layers = prunable_layers(model)
    masks = prune_by_magnitude(model, {layers["conv1"]: 0.3, layers["fc1"]: 0.2})
    params = dict(model.named_parameters())
    for name, q in encode_csr(model, masks).items():
        assert torch.equal(q.to_dense().view_as(params[name]), params[name].detach())
        nnz = int(masks[name].sum())
        assert q.storage_bytes() == 4 * (params[name].shape[0] + 1) + 8 * nnz  # int32 rows/cols, fp32 values


def test_deep_compression_stages_decode_to_the_weights_they_store() -> None:
    pruned, model, shared = _pruned_and_shared()
    stages = encode_stages(pruned, shared)
    before, after = dict(pruned.named_parameters()), dict(model.named_parameters())
    for layer in shared:
        assert torch.equal(stages.pruned[layer.param].decode(), before[layer.param].detach())
        assert torch.equal(stages.quantized[layer.param].decode(), after[layer.param].detach())
        assert torch.equal(stages.huffman[layer.param].decode(), after[layer.param].detach())
        assert torch.equal(encode_codebook_layers(shared)[layer.param].dequantize(), after[layer.param].detach())
    q = stages.quantized["0.weight"]
    assert q.entries > int(torch.count_nonzero(after["0.weight"]))  # 3-bit gaps: filler entries
    # 4-bit codes 8 to a word, 3-bit gaps 10 to a word, 15 fp32 centroids
    assert q.storage_bytes() == 4 * -(-q.entries // 8) + 4 * -(-q.entries // 10) + 4 * 15
    parts = {p.name: p.bits for p in stage_parts(model, stages)["huffman"]}
    assert parts["0.weight"] == 8 * stages.huffman["0.weight"].storage_bytes()
    assert parts["0.bias"] == 32 * 40 and parts["2.bias"] == 32 * 10


def test_codebook_latency_runs_the_shared_layers_through_the_kernel() -> None:
    from atlas_reproductions.han2016 import codebook_latency

    _, model, shared = _pruned_and_shared(index_bits=5)
    m = codebook_latency(model, shared)
    assert m["dense_latency_us"] > 0 and m["encoded_latency_us"] > 0
    assert m["speedup"] == pytest.approx(m["dense_latency_us"] / m["encoded_latency_us"])
    assert "atlas_kernels.codebook_matmul" in measure.latency_note("atlas_kernels.codebook_matmul", model[0].weight)


# ------------------------------------------------------------------------------------ budgets
@pytest.mark.parametrize("key", ["han2015", "han2016"])
def test_profiles_are_complete_step_budgets_and_quick_has_seeds(key: str) -> None:
    profiles = registry.get(key).profiles  # validated against the paper's Config
    for profile in profiles.values():
        for arch in profile["archs"].values():
            for stage in ("dense", "retrain"):
                assert set(arch[stage]) >= {"steps", "lr", "batch_size", "optimizer", "weight_decay"}
    assert profiles["quick"]["seeds"] >= 3
    # the settings the published smoke records were made with
    smoke = profiles["smoke"]["archs"]["lenet-300-100"]
    assert (smoke["dense"]["steps"], smoke["dense"]["lr"], smoke["dense"]["batch_size"]) == (90, 0.05, 64)
    assert (smoke["retrain"]["steps"], smoke["retrain"]["lr"], smoke["retrain"]["weight_decay"]) == (22, 0.01, 5e-4)
    if key == "han2016":
        ft = profiles["smoke"]["quantize"]["finetune"]
        assert (ft["steps"], ft["batch_size"], ft["lr"], ft["centroid_lr"]) == (22, 64, 0.01, 0.0001)


def _smoke_run(tmp_path: Path, seed: int, train_size: int | None = None) -> Run:
    cfg = copy.deepcopy(registry.get("han2015").profiles["smoke"])
    return Run("han2015", "smoke", cfg, seed, cache_dir=tmp_path, progress=False, train_size=train_size)


@pytest.mark.parametrize("train_size", [None, 300])
def test_pruning_and_its_baseline_get_the_same_steps_on_any_data_size(tmp_path: Path, train_size) -> None:
    run = _smoke_run(tmp_path, 0, train_size)
    cfg = run.config["archs"]["lenet-300-100"]
    han2015.train_pruned(run, "lenet-300-100")
    han2015.train_control(run, "lenet-300-100")
    trained = [b for b in run.budgets if not b.get("from_cache")]
    steps = {kind: [b["steps"] for b in trained if kind in b["stage"]] for kind in ("dense", "prune", "control")}
    assert steps["dense"] and set(steps["dense"]) == {cfg["dense"]["steps"]}
    assert steps["prune"] == steps["control"] == [cfg["retrain"]["steps"]] * cfg["rounds"]


def test_a_shared_dense_model_is_the_same_for_every_seed_but_pruning_is_per_seed(tmp_path: Path) -> None:
    arch = "lenet-5"
    runs = [_smoke_run(tmp_path, seed) for seed in (0, 1)]
    assert runs[0].config["archs"][arch]["dense_per_seed"] is False
    dense = [han2015.train_dense(r, arch).state_dict() for r in runs]
    assert all(torch.equal(dense[0][k], dense[1][k]) for k in dense[0])
    assert [hit["model"] for hit in runs[1].cache_hits] == [f"han2015-{arch}-dense"]  # seed 1 loaded seed 0's
    pruned = [han2015.train_pruned(r, arch)[0].state_dict() for r in runs]
    assert not all(torch.equal(pruned[0][k], pruned[1][k]) for k in pruned[0])


def test_sharing_curve_quantizes_a_copy_at_each_bit_width_and_keeps_pruned_zeros(tmp_path: Path) -> None:
    from atlas_reproductions.han2016 import CURVE_BITS, sharing_curve

    run = _smoke_run(tmp_path, 0)
    torch.manual_seed(4)
    pruned = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    layers = prunable_layers(pruned)
    masks = prune_by_magnitude(pruned, {layers["fc1"]: 0.2, layers["fc2"]: 0.5})
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    curve = sharing_curve(run, pruned, masks, {"conv": 8, "fc": 5}, iters=10)
    assert sorted(curve.points) == [float(b) for b in CURVE_BITS] and not curve.control
    assert all(0.0 <= acc <= 100.0 for acc in curve.points.values())
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())  # shared a copy
    model = copy.deepcopy(pruned)
    write_shared(model, share_weights(model, masks, dict.fromkeys(layers, 2), {"conv": 8, "fc": 5}, 10))
    w = model[1].weight.detach()
    assert torch.all(w[~masks[layers["fc1"]]] == 0) and w[masks[layers["fc1"]]].unique().numel() <= 3
