"""Wang & Liang's scalable (layered) quantization: 1-D k-means, the residual levels, their packed
encodings (decode(encode) is the quantized weight, bit for bit), the backward greedy bit allocation and
the centroid fine-tuning that leaves the lower levels unchanged."""

from __future__ import annotations

import torch
from atlas_reproductions.wang2016b import (
    ScalableNetwork,
    Stage,
    allocate_bits,
    decode,
    finetune_level,
    nearest,
    quantize_residual,
    scalar_kmeans,
)
from torch import nn

from atlas.harness import TrainConfig, training
from atlas.harness.data import Split


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_nearest_is_the_closest_centre() -> None:
    x = torch.randn(500, generator=_gen(1))
    c = torch.tensor([-1.0, -0.2, 0.3, 2.0])
    assert torch.equal(nearest(x, c), (x[:, None] - c).abs().argmin(1))


def test_kmeans_recovers_separated_clusters_and_their_means() -> None:
    truth = torch.tensor([-1.0, 0.5, 3.0])
    labels = torch.arange(3).repeat_interleave(40)
    x = truth[labels] + 0.01 * torch.randn(120, generator=_gen(2))
    c, idx = scalar_kmeans(x.reshape(12, 10), 3, iters=20)
    assert idx.shape == (12, 10)
    assert torch.equal(idx.flatten(), labels)
    torch.testing.assert_close(c, torch.stack([x[labels == j].mean() for j in range(3)]))


def test_each_enhancement_level_lowers_the_error_and_decodes_bit_for_bit() -> None:
    w = 0.1 * torch.randn(30, 40, generator=_gen(3))
    approx = torch.zeros_like(w)
    errors, encodings = [], []
    for bits in (2, 1, 2):
        stage = quantize_residual(w - approx, bits, iters=30)
        approx = approx + stage.values()
        encodings.append(stage.encode())
        assert torch.equal(decode(encodings, w.shape), approx)  # the packed stream decodes exactly
        errors.append(float((w - approx).square().sum()))
    assert errors[0] > errors[1] > errors[2]
    assert encodings[1].bits == 1 and encodings[1].storage_bytes() == 4 * 30 * 2 + 2 * 4  # 40 codes in 2 words


def test_a_zero_bit_stage_stores_nothing_and_adds_nothing() -> None:
    stage = quantize_residual(torch.randn(4, 5, generator=_gen(4)), 0, iters=5)
    assert stage.encode() is None and torch.equal(stage.values(), torch.zeros(4, 5))


def test_backward_greedy_takes_bits_where_they_cost_least_and_fills_the_budget() -> None:
    # layer "a" is cheap to coarsen, "b" is expensive: the budget is met from "a" first
    def loss_of(bits: dict[str, int]) -> float:
        return 0.1 * 2.0 ** -bits["a"] + 10.0 * 2.0 ** -bits["b"]

    sizes = {"a": 100, "b": 100}
    assert allocate_bits(sizes, 500, 1, 4, loss_of) == {"a": 1, "b": 4}
    # the small layer is coarsened first (down to 1 bit), then the big one until the budget is met,
    # which leaves 10 bits unspent: one bit is given back to the small layer
    sizes = {"big": 1000, "small": 10}

    def loss2(bits: dict[str, int]) -> float:
        return 2.0 ** -bits["big"] + 0.001 * 2.0 ** -bits["small"]

    bits = allocate_bits(sizes, 2 * 1010, 1, 4, loss2)
    assert bits["big"] * 1000 + bits["small"] * 10 == 2 * 1010
    assert bits == {"big": 2, "small": 2}


def test_fine_tuning_a_level_leaves_the_levels_below_unchanged() -> None:
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    net = ScalableNetwork(dense, [])
    names = ["1.weight", "3.weight"]
    params = dict(dense.named_parameters())
    net.levels.append({n: quantize_residual(params[n].detach(), 1, 10) for n in names})
    below = net.weights(1)
    net.levels.append({n: quantize_residual(params[n].detach() - below[n], 1, 10) for n in names})
    before = {n: s.codebook.clone() for n, s in net.levels[1].items()}

    class _Run:
        def reseed(self, stage: str) -> None:
            pass

        def dataset(self) -> object:
            x = torch.randn(64, 1, 2, 3, generator=_gen(5))
            return type("D", (), {"train": Split(x, torch.randint(3, (64,), generator=_gen(6)))})()

        def train(self, model: nn.Module, split: Split, cfg: object, desc: str = "", **hooks: object) -> nn.Module:
            return training.train(model, split, cfg, generator=_gen(7), progress=False, **hooks)

    finetune_level(_Run(), net, TrainConfig(steps=5, lr=1e-2, batch_size=16, optimizer="adam"))  # type: ignore[arg-type]
    assert torch.equal(net.weights(1)["1.weight"], below["1.weight"])  # level 1 is bit for bit the same
    assert any(not torch.equal(before[n], net.levels[1][n].codebook) for n in names)  # level 2 trained
    model, parts = net.decoded_model(2)
    assert torch.equal(dict(model.named_parameters())["1.weight"], net.weights(2)["1.weight"])
    assert all(p.requires_grad for p in dense.parameters())
    assert isinstance(net.levels[0]["1.weight"], Stage) and len(parts) == 2 * 2 + 2  # 4 codes + 2 biases
