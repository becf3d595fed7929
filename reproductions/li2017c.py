"""Training Quantized Nets: A Deeper Understanding (Li, De, Xu, Studer, Samet & Goldstein, NIPS 2017;
arXiv:1706.02379).

Method (an analysis paper; as stated in its abstract, the body not read here): it compares two ways
of training a network whose weights live on a low-precision grid ``Q`` (binary ``{-Delta, +Delta}`` or a uniform ``k``-bit grid of step ``Delta``):

- **BinaryConnect (BC)** keeps a full-precision buffer ``w_r``; the forward and backward passes use
  ``w_b = Q(w_r)`` (rounded to nearest) and the update is applied to the buffer,
  ``w_r <- w_r - lr * grad f(Q(w_r))`` (Courbariaux et al. 2015; here the ancestor's
  :class:`~reproductions.courbariaux2015.QuantizedLinear` with its straight-through estimator, and its
  clipping of the buffer, generalised from ``[-1, 1]`` to the grid's range);
- **Stochastic Rounding (SR)** keeps only the quantized weights and rounds each update back onto the
  grid stochastically, ``w_b <- Q_s(w_b - lr * grad f(w_b))``, where ``Q_s`` rounds up with probability
  equal to the distance to the lower grid point divided by the grid spacing (Gupta et al. 2015, Eq. 2;
  here the atlas's fixed-point kernel ``atlas_kernels.round_fixed_point`` on the grid's integer index).

The paper's argument (its abstract): an algorithm that exploits a high-precision representation (BC)
has a greedy search phase that a purely quantized one (SR) lacks, which explains the difficulty of
training with low-precision arithmetic: an update smaller than the grid spacing moves BC's buffer a
little every step, so BC settles, while SR's weights keep jumping between grid points at random with a
probability that does not shrink as training settles (only through the learning rate's decay; the
paper's experiments on learning-rate decay and batch size are not read here).

Claims (the abstract of arXiv:1706.02379, read from a copy of the abstract; the paper's body, its
Table 1 of CIFAR-10 / ImageNet BC and SR numbers and its figures could not be read here, so no number
of the paper is checked): (1) ``binary-bc-vs-sr``: training with the high-precision buffer (BC) beats
purely quantized training (SR) with binary weights: checked as ``bc_sr_gap_pp`` (BC's test accuracy
minus SR's, the same initial weights, grid, optimizer and steps, paired per seed) above 0;
(2) ``low-bit-bc-vs-sr``: the same at 2 bits (``bc_sr_gap_2bit_pp`` above 0); the 4-bit gap is
recorded, not checked (the paper's statement is about low precision).

Recorded: ``baseline_accuracy`` (the fp32 network, same initial weights and steps), ``accuracy`` /
``accuracy_change_pp`` (BC), ``sr_accuracy`` / ``sr_accuracy_change_pp``, ``bc_sr_gap_pp`` (claim 1);
``bc_accuracy_{k}bit``, ``sr_accuracy_{k}bit``, ``bc_sr_gap_{k}bit_pp`` for k = 2, 4 (claim 2);
``storage_bits`` / ``storage_compression`` of the deployed BC network's actual encoding at the claim's
bit-width (binary: 1-bit sign codes, ``atlas_kernels.encode_binary``; k bits: the grid's integer index
as ``k``-bit fixed-point codes, ``atlas_kernels.encode_fixed_point``; one fp32 step per layer; biases
in fp32). The curve (claim 1): BC and SR at 1, 2 and 4 bits beside the fp32 network's weights
uniformly quantized after training (``controls.quantization_curve``, post-training: BC and SR train
no longer than the fp32 network).

Quick result (3 seeds; the same on seeds 10-12): BC beats SR by about 2 pp at 1 bit, 1 pp at 2 bits
and 0.2 pp at 4 bits, the gap shrinking with the precision as the paper argues; at 1 bit SR is also
below the fp32 network binarised after training (the control), BC above it. The quick budget (400 Adam
steps) leaves the fp32 baseline about 5 pp below its long-schedule reference, so the checks can pass but
not fail there ("baseline not converged").

Harness differs: Fashion-MNIST and the harness MLP 784-256-256-10 in the quick profile (the paper:
CIFAR-10 VGG / wide ResNets and ImageNet); Adam with a cosine schedule for all three networks (the
same optimizer so that the buffer is the only difference; Adam's moment estimates are a float state
SR keeps too); only the weights of the linear / convolution layers are quantized, biases (and BN)
stay fp32; each layer's grid step ``Delta`` is fixed from its initial weights (binary: ``mean|w_0|``,
the least-squares scale of the signs; k bits: ``max|w_0| / (2^(k-1) - 1)``), the same for BC and SR
(the paper's scaling of the grid is not read here); SR starts from the initial weights stochastically
rounded onto the grid; nearest rounding sends a tie (a buffer weight exactly between two grid points)
down.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import atlas_kernels as ak
import torch
from atlas_reproductions.courbariaux2015 import (
    QuantizedConv2d,
    QuantizedLinear,
    quantize_layers,
    quantized_layers,
)
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction

Rounding = Literal["nearest", "stochastic"]


class Config(Profile):
    model: Literal["mlp", "vgg-small"]  # the harness network (quick: an MLP; paper: a VGG-style CIFAR net)
    hidden: list[PositiveInt] = [256, 256]  # the MLP's hidden widths
    width: PositiveFloat = 1.0  # vgg-small's width multiplier
    bits: list[PositiveInt] = Field(min_length=3)  # the grids' bit-widths (1 = binary); 1 and 2 are the claims'
    train: TrainConfig  # every network: the fp32 baseline, BC and SR at each bit-width (same steps)


PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "mlp", "hidden": [64, 64], "bits": [1, 2, 4],
        "train": {"steps": 60, "batch_size": 64, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
    "quick": {
        # 400 Adam steps of batch 100 (0.67 passes over Fashion-MNIST) per network; 7 networks per seed
        # (fp32; BC and SR at 1, 2 and 4 bits), 3 seeds.
        "dataset": "fashion-mnist", "seeds": 3, "model": "mlp", "hidden": [256, 256], "bits": [1, 2, 4],
        "train": {"steps": 400, "batch_size": 100, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
    "paper": {
        # CIFAR-10 with the harness's VGG-style net (the paper: VGG-9, VGG-BC, WRN-56-2 and ResNet-18;
        # its schedules not read here): 200 epochs of batch 128 = 78,000 steps.
        "dataset": "cifar10", "seeds": 3, "model": "vgg-small", "width": 1.0, "bits": [1, 2, 4],
        "train": {"steps": 78000, "batch_size": 128, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
}


# ---------------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Grid:
    """A layer's low-precision grid: binary ``{-step, +step}`` (``bits == 1``) or the ``2^bits - 1``
    symmetric points ``j * step``, ``|j| <= 2^(bits-1) - 1``."""

    bits: int
    step: float

    @property
    def points(self) -> int:
        return 2 if self.bits == 1 else 2**self.bits - 1

    @property
    def spacing(self) -> float:
        """The distance between neighbouring grid points."""
        return 2 * self.step if self.bits == 1 else self.step

    @property
    def bound(self) -> float:
        """The largest grid value (the BC buffer is clipped to ``[-bound, bound]``)."""
        return self.step * (1 if self.bits == 1 else 2 ** (self.bits - 1) - 1)

    def index(self, w: torch.Tensor, rounding: Rounding) -> torch.Tensor:
        """The grid index ``0 .. points - 1`` of ``w`` rounded (Gupta et al.'s Eq. 1 / Eq. 2 on the
        integer lattice: ``atlas_kernels.round_fixed_point`` with ``FL = 0``) and saturated."""
        pos = (w + self.bound) / self.spacing
        return ak.round_fixed_point(pos, 16, 0, rounding).clamp_(0, self.points - 1)

    def value(self, index: torch.Tensor) -> torch.Tensor:
        """The grid value of an index: ``(index - (points - 1) / 2) * spacing`` (exact)."""
        return (index - (self.points - 1) / 2) * self.spacing

    def round(self, w: torch.Tensor, rounding: Rounding) -> torch.Tensor:
        return self.value(self.index(w, rounding))


def grid_for(w: torch.Tensor, bits: int) -> Grid:
    """A layer's grid, fixed from its initial weights: binary step ``mean|w|`` (the signs'
    least-squares scale), k bits ``max|w| / (2^(k-1) - 1)`` (the grid spans the initial weights)."""
    w = w.detach().abs()
    step = float(w.mean()) if bits == 1 else float(w.max()) / (2 ** (bits - 1) - 1)
    return Grid(bits, step)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose weights are quantized: every ``nn.Linear`` and ``nn.Conv2d``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def layer_grids(model: nn.Module, bits: int) -> dict[str, Grid]:
    return {name: grid_for(m.weight, bits) for name, m in weight_layers(model)}


# -------------------------------------------------------------------------- BC: the float buffer
class _GridQuantizer:
    """BC's forward quantizer: the float buffer rounded to the nearest grid point."""

    grid: Grid

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return self.grid.round(w, "nearest")


class GridLinear(_GridQuantizer, QuantizedLinear):
    """A BC fully-connected layer on a fixed grid."""


class GridConv2d(_GridQuantizer, QuantizedConv2d):
    """A BC convolution on a fixed grid."""


@torch.no_grad()
def clip_buffer(model: nn.Module) -> None:
    """BC's clipping of the float buffer to the grid's range (Courbariaux et al.'s ``[-1, 1]``)."""
    for _, layer in quantized_layers(model):
        layer.weight.clamp_(-layer.grid.bound, layer.grid.bound)


def to_binaryconnect(initial: nn.Module, grids: dict[str, Grid]) -> nn.Module:
    """A copy of ``initial`` whose weight layers propagate with ``Q(w_r)`` (``w_r``: the float buffer,
    starting at the initial weights)."""
    model = quantize_layers(copy.deepcopy(initial), GridLinear, GridConv2d)
    for name, layer in quantized_layers(model):
        layer.grid = grids[name]
    clip_buffer(model)
    return model


# ------------------------------------------------------------------- SR: purely quantized weights
def round_weights(grids: dict[str, Grid], rounding: Rounding = "stochastic"):
    """The ``after_step`` hook of SR: every quantized weight (the SGD/Adam step applied to it in fp32)
    stored back on its grid with ``rounding`` (``Q_s``), so no float copy survives the step."""

    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        for name, layer in weight_layers(model):
            layer.weight.copy_(grids[name].round(layer.weight, rounding))

    return hook


def to_stochastic_rounding(initial: nn.Module, grids: dict[str, Grid]) -> nn.Module:
    """A copy of ``initial`` with its weights stochastically rounded onto the grids."""
    model = controls.trainable_copy(initial)
    round_weights(grids)(model)
    return model


def train_bc(run: Run, initial: nn.Module, bits: int) -> nn.Module:
    run.reseed(f"BC {bits}-bit")
    model = to_binaryconnect(initial, layer_grids(initial, bits))
    return run.train(model, run.dataset().train, run.train_config("train"), desc=f"BC {bits}-bit",
                     after_step=clip_buffer)


def train_sr(run: Run, initial: nn.Module, bits: int) -> nn.Module:
    run.reseed(f"SR {bits}-bit")
    grids = layer_grids(initial, bits)
    model = to_stochastic_rounding(initial, grids)
    return run.train(model, run.dataset().train, run.train_config("train"), desc=f"SR {bits}-bit",
                     after_step=round_weights(grids))


# ------------------------------------------------------------------------------------ storage
def deployed_weights(model: nn.Module) -> dict[str, tuple[torch.Tensor, Grid]]:
    """The weights a trained BC or SR network runs with, on their grids: ``name -> (weight, grid)``."""
    out = {}
    for name, layer in weight_layers(model):
        if isinstance(layer, _GridQuantizer):
            w = layer.quantize(layer.weight.detach())
            grid = layer.grid
        else:
            raise TypeError(f"{name} is not a grid layer")
        out[f"{name}.weight"] = (w, grid)
    return out


def encode_weight(w: torch.Tensor, grid: Grid) -> ak.LowBitWeight | ak.FixedPointWeight:
    """A grid weight as stored: binary signs as 1-bit codes with the step as scale; k bits the
    integer ``j = w / step`` as a ``k``-bit fixed-point code (``FL = 0``)."""
    w2 = w.reshape(w.shape[0], -1)
    if grid.bits == 1:
        return ak.encode_binary(torch.where(w2 > 0, 1.0, -1.0), grid.step)
    return ak.encode_fixed_point(w2 / grid.step, grid.bits, 0)


def decode_weight(q: ak.LowBitWeight | ak.FixedPointWeight, grid: Grid) -> torch.Tensor:
    d = q.dequantize()
    return d if grid.bits == 1 else d * grid.step


def grid_storage(model: nn.Module) -> list[measure.Encoded]:
    """Every quantized weight's encoding plus its fp32 step; every other parameter in fp32."""
    weights = deployed_weights(model)
    parts = []
    for name, (w, grid) in weights.items():
        parts.append(measure.encoded(name, encode_weight(w, grid), f"{grid.bits}-bit grid codes"))
        parts.append(measure.Encoded(f"{name}.step", measure.FP32_BITS, "fp32 grid step"))
    return parts + measure.fp32_parts(model, skip=sorted(weights))


#: Why a claim may come out not reproduced; passed to every record (empty when it passes).
DIAGNOSIS = ""


@reproduction("li2017c", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    data = run.dataset()
    kw: dict = ({"hidden": list(cfg.hidden)} if cfg.model == "mlp"
                else {} if cfg.width == 1.0 else {"width": cfg.width})
    initial = run.model(cfg.model, **kw)
    run.reseed("fp32 baseline")
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32 baseline")
    base_acc = run.accuracy(baseline, data.test)
    base_bits = measure.dense_bits(baseline)

    bc = {b: train_bc(run, initial, b) for b in cfg.bits}
    sr = {b: train_sr(run, initial, b) for b in cfg.bits}
    bc_acc = {b: run.accuracy(m, data.test) for b, m in bc.items()}
    sr_acc = {b: run.accuracy(m, data.test) for b, m in sr.items()}
    curves = [controls.Series("BinaryConnect (float buffer)", controls.BITS, controls.ACCURACY,
                              {float(b): a for b, a in bc_acc.items()}),
              controls.Series("stochastic rounding (quantized weights only)", controls.BITS, controls.ACCURACY,
                              {float(b): a for b, a in sr_acc.items()}),
              controls.quantization_curve(run, baseline, cfg.bits, None)]

    arch = (f"MLP {'-'.join(map(str, [math.prod(data.input_shape), *cfg.hidden, data.num_classes]))}"
            if cfg.model == "mlp" else f"vgg-small (width {cfg.width:g})")
    differs = (f"{arch}; {cfg.train.steps} Adam steps of batch {cfg.train.batch_size} (lr {cfg.train.lr}, cosine) "
               "for the fp32, BC and SR networks from the same initial weights; per-layer grid step fixed "
               "from the initial weights; biases fp32")
    base = {"baseline": (cfg.model, "baseline_accuracy"), "baseline_spec": kw}

    def storage(bits: int) -> dict[str, float]:
        sbits = measure.storage_bits(grid_storage(bc[bits]))
        return {"storage_bits": float(sbits), "storage_compression": base_bits / sbits}

    if 1 in cfg.bits:
        run.record("binary-bc-vs-sr", model=f"{arch}, binary weights: BC vs SR",
                   metrics={**measure.accuracy_change(base_acc, bc_acc[1]), "sr_accuracy": sr_acc[1],
                            "sr_accuracy_change_pp": sr_acc[1] - base_acc, "bc_sr_gap_pp": bc_acc[1] - sr_acc[1],
                            "params": measure.count_params(bc[1]), **storage(1)},
                   differs=differs, curves=curves, diagnosis=DIAGNOSIS, **base)
    low = [b for b in cfg.bits if b > 1]
    if low:
        metrics: dict[str, float] = {**measure.accuracy_change(base_acc, bc_acc[low[0]]), **storage(low[0])}
        for b in low:
            metrics |= {f"bc_accuracy_{b}bit": bc_acc[b], f"sr_accuracy_{b}bit": sr_acc[b],
                        f"bc_sr_gap_{b}bit_pp": bc_acc[b] - sr_acc[b]}
        run.record("low-bit-bc-vs-sr", model=f"{arch}, {'/'.join(map(str, low))}-bit uniform grids: BC vs SR",
                   metrics=metrics, differs=differs, diagnosis=DIAGNOSIS, **base)
