"""Sparsely-Connected Neural Networks: Towards Efficient VLSI Implementation of Deep Neural Networks
(Ardakani, Condo & Gross, ICLR 2017; arXiv:1611.01427).

Method (as the abstract and its figures' summaries state it; the paper's body could not be read where
this file was written): a *sparsely-connected* network replaces each fully-connected layer by one in
which most connections never exist. Which connections exist is fixed before training by
linear-feedback shift registers (LFSRs): a pseudo-random sequence decides, connection by connection,
whether it is enabled, and the network is trained from scratch with the disabled connections held at
zero. Because an LFSR regenerates the same sequence from its seed, the hardware stores only the
enabled weights, with no index per weight, and the disabled connections cost neither memory nor
energy. The paper's sparsely-connected layer is a regulariser as well as a compression: it reports
better accuracy than the fully-connected network.

Here each output neuron ``i`` of a sparsely-connected layer has its own 16-bit Galois LFSR (feedback
polynomial ``x^16 + x^14 + x^13 + x^11 + 1``, taps ``0xB400``, maximal length), seeded from the
layer's seed and ``i`` and clocked 16 times per connection; its ``j``-th 16-bit word ``s_ij`` enables
connection ``(i, j)`` when

.. math:: s_{ij} < \\lfloor p \\cdot 2^{16} \\rfloor ,

so that a fraction ``p`` (the density) of the connections exists. (The paper's LFSR width, taps and
comparison rule were not read; these are this file's choices.) Every fully-connected layer but the
classifier is sparsely connected; the network is trained from scratch with the mask re-applied
after every step.

Claims (Abstract, arXiv:1611.01427v3): "the number of connections in fully-connected networks can be
reduced by up to 90% while improving the accuracy performance on three popular datasets (MNIST,
CIFAR10 and SVHN)" (claim ``abstract-connections``, checked: at 90% of the hidden layers' connections
removed, the sparsely-connected network's accuracy change against the fully-connected network trained
for the same steps is above 0), and the LFSR architecture "can save up to 90% of memory" with "up to
84% reduction in the energy consumption of a single neuron" (claim ``abstract-vlsi``, not checked: the
energy of a custom circuit is not measurable here; the memory is recorded as ``storage_compression``).

Measured (claim ``abstract-connections``): ``accuracy`` (the sparsely-connected network at 90% sparsity),
``baseline_accuracy`` (the fully-connected network, the same steps), ``accuracy_change_pp``,
``control_accuracy`` / ``gain_over_control_pp`` (the fully-connected network pruned by global
magnitude to the same ratio, without retraining: the method trains no longer than its baseline),
``param_compression``, ``flop_reduction``, ``storage_bits`` / ``storage_compression`` (the LFSR
encoding: the enabled weights in fp32 in the order the LFSRs visit them, each layer's 32-bit seed and
32-bit threshold; no indices) and, for comparison, ``csr_storage_compression`` (the same weights with a
CSR index per weight). The curve: the method at 50%, 75% and 90% sparsity of the hidden layers (x:
the compression ratio of all weights) beside the shared control without retraining
(:func:`atlas.harness.controls.pruning_curve`).

Harness differs: Fashion-MNIST (quick), the 8x8 digits (smoke), MNIST (paper profile) with the
harness LeNet-300-100 instead of the paper's fully-connected and convolutional networks on MNIST,
CIFAR10 and SVHN; SGD with momentum and a cosine schedule for a few thousand steps (the paper's
schedules were not read). The quick profile trains the fully-connected network once (seed 0) for its
three seeds, as han2015's quick profile does, so the seeds' spread is that of the sparse networks
(each seed has its own LFSR seeds, hence its own connections, and its own initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import atlas_kernels as ak
import torch
from pydantic import Field, model_validator
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction

Masks = dict[str, torch.Tensor]

LFSR_TAPS = 0xB400  # x^16 + x^14 + x^13 + x^11 + 1, a maximal-length 16-bit Galois LFSR
LFSR_BITS = 16


class Config(Profile):
    model: Literal["lenet-300-100"]  # a fully-connected harness network
    train: TrainConfig  # every network, fully- or sparsely-connected, from scratch
    sparsity: float = Field(gt=0, lt=1)  # the claim's fraction of hidden-layer connections removed (0.9)
    curve_sparsities: list[float] = Field(min_length=3)  # the curve (the claim's among them)
    dense_per_seed: bool = True  # False: one fully-connected network (from seed 0) for every seed

    @model_validator(mode="after")
    def _claim_on_the_curve(self) -> Config:
        if self.sparsity not in self.curve_sparsities:
            raise ValueError("the claim's sparsity must be one of the curve's")
        return self


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    """A training stage: SGD with momentum 0.9, weight decay 5e-4, cosine learning rate."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": "cosine"}



# Budgets are optimizer steps: every network (the fully-connected one and each sparsely-connected one)
# gets the same. quick: one fully-connected network (seed 0) and, per seed, three sparsely-connected
# ones, 3,000 SGD steps of batch 64 each (3.2 passes; 1,500 steps of batch 128 left the fully-connected
# network 1.8 pp below the harness's reference with SGD at lr 0.05 and with Adam at lr 0.001).
PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "model": "lenet-300-100", "train": _sgd(150, 0.05, 64),
              "sparsity": 0.9, "curve_sparsities": [0.5, 0.75, 0.9]},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100", "train": _sgd(3000, 0.05, 64),
              "sparsity": 0.9, "curve_sparsities": [0.5, 0.75, 0.9], "dense_per_seed": False},
    # MNIST (one of the paper's data sets); 20 passes of batch 100
    "paper": {"dataset": "mnist", "seeds": 3, "model": "lenet-300-100", "train": _sgd(12000, 0.05, 100),
              "sparsity": 0.9, "curve_sparsities": [0.5, 0.75, 0.9]},
}

CLAIM = "abstract-connections"


# ------------------------------------------------------------------------------------- the LFSR
def lfsr_step(s: torch.Tensor) -> torch.Tensor:
    """One clock of the 16-bit Galois LFSR: shift right, feed the output bit back through the taps."""
    return (s >> 1) ^ ((s & 1) * LFSR_TAPS)


def lfsr_states(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` words of one 16-bit Galois LFSR per seed (``seeds``: non-zero, shape [rows]), the register
    clocked 16 times between words so that successive words share no bits (one clock per word would
    make a small word's successor about half of it, and enabled connections would come in runs): a
    [rows, n] tensor of integers in [1, 2^16)."""
    s = seeds.to(torch.int64).clone()
    out = torch.empty(len(s), n, dtype=torch.int64)
    for j in range(n):
        for _ in range(LFSR_BITS):
            s = lfsr_step(s)
        out[:, j] = s
    return out


def row_seeds(layer_seed: int, rows: int) -> torch.Tensor:
    """Each output neuron's LFSR seed, from the layer's: distinct and non-zero."""
    i = torch.arange(rows, dtype=torch.int64)
    return (layer_seed * 40503 + i * 7919) % (2**LFSR_BITS - 1) + 1


def threshold(density: float) -> int:
    """The comparison value: a state below it enables its connection."""
    return int(density * 2**LFSR_BITS)


def lfsr_mask(shape: tuple[int, int], layer_seed: int, density: float) -> torch.Tensor:
    """The connections of an ``[out, in]`` layer that exist: ``s_ij < floor(p 2^16)``."""
    rows, cols = shape
    return lfsr_states(row_seeds(layer_seed, rows), cols) < threshold(density)


@dataclass(frozen=True)
class LfsrSparseWeight:
    """A sparsely-connected layer as the LFSR hardware stores it: the enabled weights' fp32 values in
    the order the LFSRs enable them (row by row), the layer's seed and threshold (32 bits each); the
    mask is regenerated, never stored."""

    values: torch.Tensor
    layer_seed: int
    density: float
    shape: tuple[int, int]

    def storage_bytes(self) -> int:
        return 4 * self.values.numel() + 4 + 4

    def to_dense(self) -> torch.Tensor:
        mask = lfsr_mask(self.shape, self.layer_seed, self.density)
        out = torch.zeros(self.shape, dtype=self.values.dtype)
        out[mask] = self.values
        return out


def encode_lfsr(weight: torch.Tensor, layer_seed: int, density: float) -> LfsrSparseWeight:
    """A sparsely-connected layer's weights as stored: the values where its LFSR mask enables them."""
    mask = lfsr_mask(tuple(weight.shape), layer_seed, density)
    return LfsrSparseWeight(weight.detach()[mask].clone(), layer_seed, density, tuple(weight.shape))


# ------------------------------------------------------------------------------------ networks
def sparse_layers(model: nn.Module) -> list[str]:
    """The weights made sparsely connected: every fully-connected layer's but the classifier's."""
    return controls.weight_names(model)[:-1]


def layer_seeds(run: Run, model: nn.Module) -> dict[str, int]:
    """Each sparsely-connected layer's LFSR seed, drawn from the run's seed (so each seed has its own
    connections)."""
    gen = torch.Generator().manual_seed(1_000_003 * (run.seed + 1))
    return {name: int(torch.randint(1, 2**31 - 1, (), generator=gen)) for name in sparse_layers(model)}


@torch.no_grad()
def apply(model: nn.Module, masks: Masks) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


def train_sparse(run: Run, sparsity: float) -> tuple[nn.Module, Masks, dict[str, int]]:
    """A sparsely-connected network trained from scratch: its LFSR masks fixed first, the disabled
    connections zero from the start and after every step."""
    cfg = Config.model_validate(run.config)
    run.reseed(f"ardakani2017 sparse init {sparsity:g}")
    model = run.model(cfg.model)
    seeds = layer_seeds(run, model)
    params = dict(model.named_parameters())
    masks = {n: lfsr_mask(tuple(params[n].shape), s, 1.0 - sparsity) for n, s in seeds.items()}
    apply(model, masks)
    run.reseed("ardakani2017 training data")
    run.train(model, run.dataset().train, cfg.train, desc=f"sparsely-connected {sparsity:.0%}",
              after_step=lambda m: apply(m, masks))
    return model.eval(), masks, seeds


def train_dense(run: Run) -> nn.Module:
    """The fully-connected network with the same steps (cached; per seed or once from seed 0)."""
    cfg = Config.model_validate(run.config)
    per_seed = cfg.dense_per_seed

    def fit(model: nn.Module) -> None:
        run.reseed("ardakani2017 training data", seed=None if per_seed else 0)
        run.train(model, run.dataset().train, cfg.train, desc="fully-connected")

    spec = {"model": cfg.model, "train": cfg.train.model_dump(), "dense_per_seed": per_seed}
    return run.cached_model(f"ardakani2017-{cfg.model}-dense", spec, build=lambda: run.model(cfg.model), fit=fit,
                            per_seed=per_seed)


def lfsr_parts(model: nn.Module, seeds: dict[str, int], density: float) -> list[measure.Encoded]:
    """The sparsely-connected network's memory: each sparse layer's LFSR encoding, the rest fp32."""
    params = dict(model.named_parameters())
    parts = [measure.encoded(n, encode_lfsr(params[n], s, density), "LFSR: enabled fp32 values, seed, threshold")
             for n, s in seeds.items()]
    return parts + measure.fp32_parts(model, skip=list(seeds))


def csr_parts(model: nn.Module, names: list[str]) -> list[measure.Encoded]:
    """The same weights with an index per weight (CSR, ``atlas_kernels.to_csr``), for comparison."""
    params = dict(model.named_parameters())
    parts = [measure.encoded(n, ak.to_csr(params[n].detach()), "CSR") for n in names]
    return parts + measure.fp32_parts(model, skip=names)


def nominal_ratio(model: nn.Module, masks: Masks, sparsity: float) -> float:
    """The compression ratio of all weights when the sparse layers keep exactly ``1 - sparsity`` of
    theirs (the LFSRs' expected density; the seeds' actual counts differ by a fraction of a percent,
    ``param_compression`` records them): the curve's x, the same on every seed."""
    params = dict(model.named_parameters())
    names = controls.weight_names(model)
    total = sum(params[n].numel() for n in names)
    kept = sum((1.0 - sparsity) * params[n].numel() if n in masks else params[n].numel() for n in names)
    return round(total / kept, 2)


@reproduction("ardakani2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    data = run.dataset()
    dense = train_dense(run)
    base = run.accuracy(dense, data.test)
    curve: dict[float, float] = {}
    for s in cfg.curve_sparsities:
        model, masks, seeds = train_sparse(run, s)
        ratio = nominal_ratio(model, masks, s)
        curve[ratio] = run.accuracy(model, data.test)
        if s == cfg.sparsity:
            chosen, chosen_seeds, claim_ratio = model, seeds, ratio
    control = controls.pruning_curve(run, dense, sorted(curve), None)
    acc = curve[claim_ratio]
    csr_bits = measure.storage_bits(csr_parts(chosen, list(chosen_seeds)))
    run.record(
        CLAIM, model=cfg.model,
        metrics={"baseline_accuracy": base, "accuracy": acc, "accuracy_change_pp": acc - base,
                 "control_accuracy": control.points[claim_ratio],
                 "gain_over_control_pp": acc - control.points[claim_ratio],
                 **measure.compression_metrics(dense, chosen, data.input_shape,
                                               lfsr_parts(chosen, chosen_seeds, 1.0 - cfg.sparsity)),
                 "csr_storage_compression": measure.dense_bits(dense) / csr_bits},
        baseline=(cfg.model, "baseline_accuracy"), baseline_spec={},
        differs=f"harness {cfg.model}; every network trained from scratch for {cfg.train.steps} {cfg.train.optimizer} steps (lr "
                f"{cfg.train.lr:g}, batch {cfg.train.batch_size}); hidden layers {cfg.sparsity:.0%} sparse by one "
                "16-bit Galois LFSR per neuron (this file's choice of LFSR), the classifier fully connected; "
                + ("one fully-connected network for every seed; " if not cfg.dense_per_seed else "")
                + "control = the fully-connected network pruned by global magnitude, no retraining",
        curves=[controls.Series("sparsely-connected (LFSR masks, trained from scratch)", controls.RATIO,
                                controls.ACCURACY, curve), control],
    )
