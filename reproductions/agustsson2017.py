"""Soft-to-Hard Vector Quantization for End-to-End Learning Compressible Representations (Agustsson,
Mentzer, Tschannen, Cavigelli, Timofte, Benini & Van Gool, NIPS 2017; arXiv:1704.00648).

Method: a set of parameters (here every fully-connected weight of a trained network) is cut into
vectors ``z`` of ``d`` consecutive weights, and each vector is to be replaced by the nearest of ``L``
learned centers ``C = {c_1, ..., c_L}`` (hard quantization ``Q(z) = c_{argmin_j ||z - c_j||}``), whose
index is then entropy-coded. Neither the argmin nor the entropy of the indices has a gradient, so both
are relaxed: the *soft assignment*

.. math:: \\phi_j(z) = \\frac{\\exp(-\\sigma \\|z - c_j\\|^2)}{\\sum_l \\exp(-\\sigma \\|z - c_l\\|^2)},
          \\qquad \\tilde Q(z) = \\sum_j \\phi_j(z)\\, c_j,

which tends to the hard assignment as ``sigma -> infinity``, and the *soft histogram* of the indices,
``q_j = mean_z phi_j(z)``, whose entropy ``H(q) = -sum_j q_j log2 q_j`` is a differentiable estimate of the
rate (bits per vector). The network is trained end to end on its task loss plus ``beta`` times that
rate, the centers learned with the weights, while ``sigma`` is annealed from a soft to an almost hard
assignment; at the end every vector takes its hard center and the indices are stored. ``beta`` trades
accuracy for rate.

Claims (the Abstract, read in the NIPS 2017 proceedings' abstract and its arXiv listing; the body's
DNN-compression table could not be read where this file was written): "We present a new approach to
learn compressible representations in deep architectures with an end-to-end training strategy. Our
method is based on a soft (continuous) relaxation of quantization and entropy, which we anneal to their
discrete counterparts throughout training. We showcase this method for two challenging applications:
Image compression and neural network compression. [...] our soft-to-hard quantization approach gives
results competitive with the state-of-the-art for both." ``abstract-dnn-compression`` checks the
neural-network half on the harness, read as: the network compressed by the method loses at most 1 pp
of test accuracy against the same network before compression. ``resnet32-cifar10`` (a 32-layer ResNet on
CIFAR-10 at 92.1% after compression, as third-party summaries report it; unconfirmed, unchecked) gets
the measured compression for the reader.

Measured: ``baseline_accuracy`` (the trained network), ``accuracy`` / ``accuracy_change_pp`` of the
network after soft-to-hard fine-tuning and hard quantization at the claim's ``beta``;
``storage_bits`` / ``storage_compression`` of its actual encoding (each layer's center indices packed at
``log2 L`` bits with the centers in fp32, ``atlas_kernels.encode_codebook``; biases fp32), checked to
decode to the weights evaluated; ``entropy_bits_per_weight`` (the empirical entropy of the hard indices
per weight: the rate an entropy coder approaches, what the method minimises) and
``entropy_compression`` (``32 * params`` over that rate times the weights, plus the centers and the
fp32 biases); ``centers_used``. The curve: the method at each ``beta`` of ``curve_betas`` (x: the
entropy rate in bits per weight) beside the shared control, per-layer uniform quantization of the same
network fine-tuned with the straight-through estimator for the same number of steps
(:func:`atlas.harness.controls.quantization_curve`, x: its bits per weight).

Harness differs: Fashion-MNIST and LeNet-300-100 (its three fully-connected layers quantized, one set
of centers for the whole network) instead of the paper's ResNet on CIFAR-10; the network is trained
with SGD (the quick profile) or Adam (the paper profile), then fine-tuned with the soft-to-hard objective
for ``finetune.steps`` Adam steps (100 in the quick profile: the time budget). Chosen
here, not read in the paper: ``L = 16`` scalar centers (``d = 1``) initialised at the quantiles of the
weights; ``sigma`` annealed geometrically from ``sigma_start`` to ``sigma_end`` (in units of one over the
squared mean gap between the initial centers); the forward pass uses the soft quantization ``Q~`` until
the end of training; ``beta``; the rate term is the entropy estimate per vector, not scaled by the
number of weights. The rate counted as ``entropy_bits_per_weight`` is the empirical entropy, not the
output of a particular entropy coder.

Quick verdict (3 seeds; 68 s of one core, run at load 13): ``abstract-dnn-compression`` not
reproduced. With 16 centers and beta 0.05 the network keeps 86.2% against 89.0% before compression
(-2.80 pp, 95% interval -3.21 to -2.39; the baseline within 0.6 pp of its reference) at an entropy rate of
2.88 bits per weight (10.9x for the whole network with an ideal entropy coder; 7.9x in the fixed-length
4-bit encoding stored here). At 4 and 8 centers it keeps 84.0% (1.75 bits per weight, 17.8x) and 85.4%
(2.51 bits, 12.5x). The shared control does better at the same fixed-length bits with the same 100
fine-tuning steps: per-layer uniform quantization fine-tuned with the straight-through estimator keeps
87.1, 88.3 and 88.3% at 2, 3 and 4 bits. What was tried is in ``DIAGNOSIS``.
"""

from __future__ import annotations

import math
from typing import Literal

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from torch import nn
from torch.nn.utils import parametrize

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

DIAGNOSIS = """The soft assignment, the soft histogram's entropy, the annealing and the encoding are
checked by unit tests (the soft assignment becomes the hard one as sigma grows; decode of the encoding is
the hard-quantized weight). The gap is the quick profile's short fine-tuning more than the method: on seed
100 (not the published 0-2) the loss at 16 centers shrinks from -2.8 pp after 100 soft-to-hard steps to
-1.65 pp after 300 (LeNet-300-100, trained 3,000 SGD steps to 89.0%), and a 784-128-10 network loses -1.5
pp after 300 steps. Without the rate term (beta 0) the loss after 100 steps is still -2.5 pp, so
the entropy penalty is not the cause. The annealing needs steps: the forward pass uses the soft quantization, which at the
start averages each weight over its neighbouring centers, and the network has to re-learn under an
assignment that hardens over the run. With a network that had not converged (2,000 Adam steps, 1.3 pp
below its reference) and 150 steps the loss was -0.75 pp. The paper fine-tunes a ResNet for many epochs;
its schedule, its sigma and beta, and its initialisation of the centers were not read here (only the
abstract), so the values used are the atlas's choices, not the paper's. Left open: whether a longer
soft-to-hard schedule (the paper profile's 3,000 steps) meets the 1 pp."""


class SoftToHard(Section):
    dim: PositiveInt = 1  # d, weights per vector
    centers: PositiveInt  # L
    beta: float = Field(ge=0)  # the claim's weight of the rate term (bits per vector)
    sigma_start: PositiveFloat  # the soft assignment's sigma at the start, times the squared center gap
    sigma_end: PositiveFloat  # ... at the end of the fine-tuning
    finetune: TrainConfig  # the soft-to-hard fine-tuning of the trained network


class Config(Profile):
    model: Literal["lenet-300-100", "lenet-5"]  # the harness network (its fully-connected layers are quantized)
    dense: TrainConfig  # the trained network
    shvq: SoftToHard
    curve_centers: list[PositiveInt] = Field(min_length=3)  # the method's curve: L (the claim's among them)
    control_bits: list[PositiveInt] = Field(min_length=3)  # the uniform control's bit-widths

    @model_validator(mode="after")
    def _claim_centers(self) -> Config:
        if self.shvq.centers not in self.curve_centers:
            raise ValueError("the claim's number of centers must be one of curve_centers")
        return self


_ADAM = {"optimizer": "adam", "lr": 1e-3, "schedule": "cosine"}
_SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"}
_SHVQ = {"dim": 1, "centers": 16, "beta": 0.05, "sigma_start": 0.5, "sigma_end": 200.0}
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100", "dense": {"steps": 150, "batch_size": 64, **_ADAM},
        "shvq": {**_SHVQ, "finetune": {"steps": 60, "batch_size": 64, **_ADAM}},
        "curve_centers": [4, 8, 16], "control_bits": [2, 3, 4],
    },
    "quick": {
        # The network: 3,000 SGD steps (gong2014's schedule for LeNet-300-100, within 1 pp of the
        # reference); then 100 soft-to-hard steps per number of centers (each step computes the soft
        # assignment of all 266,200 weights to the L centers: about 30 ms of one core) and 100 STE steps
        # per point of the control.
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100",
        "dense": {"steps": 3000, "batch_size": 128, **_SGD},
        "shvq": {**_SHVQ, "finetune": {"steps": 100, "batch_size": 128, **_ADAM}},
        "curve_centers": [4, 8, 16], "control_bits": [2, 3, 4],
    },
    "paper": {
        # No CIFAR-10 ResNet here: LeNet-5 on MNIST, its two fully-connected layers quantized (94% of its
        # weights; the convolutions stay fp32).
        "dataset": "mnist", "seeds": 3, "model": "lenet-5", "dense": {"steps": 10000, "batch_size": 64, **_ADAM},
        "shvq": {**_SHVQ, "finetune": {"steps": 3000, "batch_size": 64, "optimizer": "adam", "lr": 1e-4,
                                       "schedule": "cosine"}},
        "curve_centers": [4, 8, 16, 32], "control_bits": [2, 3, 4, 5],
    },
}


# ------------------------------------------------------------------------------------ the quantizer
def vectors(w: torch.Tensor, dim: int) -> torch.Tensor:
    """``w`` ``[N, K]`` as ``[N K / d, d]`` vectors of ``d`` consecutive weights of a row."""
    if w.shape[-1] % dim:
        raise ValueError(f"{w.shape[-1]} inputs are not a multiple of d = {dim}")
    return w.reshape(-1, dim)


def squared_distances(z: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``||z_i - c_j||^2`` for ``z`` ``[n, d]`` and ``centers`` ``[L, d]``: ``[n, L]``."""
    if z.shape[1] == 1:
        return (z - centers.T).square()
    return (z[:, None, :] - centers[None]).square().sum(-1)


def soft_assignment(z: torch.Tensor, centers: torch.Tensor, sigma: float) -> torch.Tensor:
    """``phi(z)``: the softmax over centers of ``-sigma ||z - c_j||^2``, ``[n, L]``."""
    return torch.softmax(-sigma * squared_distances(z, centers), dim=1)


def hard_assignment(z: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """The index of each vector's nearest center, ``[n]``."""
    return squared_distances(z, centers).argmin(1)


def soft_entropy(histogram: torch.Tensor) -> torch.Tensor:
    """``H(q) = -sum_j q_j log2 q_j`` of the (soft) histogram ``q`` (normalised here), bits per vector."""
    q = histogram / histogram.sum()
    return -(q * torch.log2(q.clamp_min(1e-12))).sum()


def initial_centers(weights: list[torch.Tensor], count: int, dim: int) -> torch.Tensor:
    """``L`` centers at evenly spaced quantiles of the vectors' coordinates (chosen here), ``[L, d]``."""
    z = torch.cat([vectors(w.detach(), dim) for w in weights])
    probs = (torch.arange(count, dtype=z.dtype) + 0.5) / count
    sample = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(0))[:100000]]
    return torch.quantile(sample, probs, dim=0)  # [L, d]


def center_gap(centers: torch.Tensor) -> float:
    """The mean distance from each center to its nearest other center (sigma's unit is its inverse
    square)."""
    d2 = squared_distances(centers, centers).fill_diagonal_(float("inf"))
    return float(d2.min(1).values.sqrt().mean())


class Quantizer(nn.Module):
    """The shared soft-to-hard quantizer: the learned ``centers``, the current ``sigma`` and the soft
    histogram accumulated over the forward pass (reset before each step)."""

    def __init__(self, centers: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(centers.clone())
        self.dim = dim
        self.sigma = 1.0
        self.histogram: torch.Tensor | None = None

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        if self.dim == 1:  # the same, laid out [L, n] (softmax over the first axis: 1.5x as fast on a CPU)
            phi = torch.softmax(-self.sigma * (w.reshape(1, -1) - self.centers).square(), dim=0)
            counts = phi.sum(1)
            soft = self.centers.T @ phi
        else:
            phi = soft_assignment(vectors(w, self.dim), self.centers, self.sigma)
            counts = phi.sum(0)
            soft = phi @ self.centers
        self.histogram = counts if self.histogram is None else self.histogram + counts
        return soft.reshape(w.shape)

    def hard(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The hard quantized weight and its indices ``[N, K / d]``."""
        idx = hard_assignment(vectors(w, self.dim), self.centers.detach())
        return self.centers.detach()[idx].reshape(w.shape), idx.reshape(w.shape[0], -1)


class _SoftQuantized(nn.Module):
    """The parametrization ``W -> Q~(W)`` of one layer's weight through the shared quantizer."""

    def __init__(self, quantizer: Quantizer) -> None:
        super().__init__()
        self.quantizer = quantizer

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.quantizer.quantize(w)


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def sigma_at(step: int, total: int, start: float, end: float) -> float:
    """Geometric annealing from ``start`` (step 0) to ``end`` (the last step)."""
    return start * (end / start) ** (step / max(1, total - 1))


def soft_to_hard(run: Run, dense: nn.Module, cfg: SoftToHard, centers: int) -> tuple[nn.Module, Quantizer]:
    """Fine-tune a copy of ``dense`` with every Linear weight soft-quantized through one set of learned
    set of ``centers`` learned centers, on ``cross entropy + beta * H(q)``, ``sigma`` annealed; then each
    weight takes its hard center. Returns the hard-quantized network and its quantizer."""
    model = controls.trainable_copy(dense)
    layers = linear_layers(model)
    quantizer = Quantizer(initial_centers([m.weight for m in layers], centers, cfg.dim), cfg.dim).to(run.device)
    unit = 1.0 / center_gap(quantizer.centers.detach()) ** 2
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", _SoftQuantized(quantizer))
    step = 0

    def before(_: nn.Module) -> None:
        quantizer.sigma = unit * sigma_at(step, cfg.finetune.steps, cfg.sigma_start, cfg.sigma_end)
        quantizer.histogram = None

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor, _index: torch.Tensor) -> torch.Tensor:
        nonlocal step
        loss = F.cross_entropy(m(x), y)
        assert quantizer.histogram is not None
        step += 1
        return loss + cfg.beta * soft_entropy(quantizer.histogram)

    run.reseed(f"agustsson2017 soft-to-hard {centers}")
    run.train(model, run.dataset().train, cfg.finetune, desc=f"soft-to-hard, L = {centers}",
              before_step=before, loss_fn=loss_fn)
    with torch.no_grad():
        for layer in layers:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
            layer.weight.copy_(quantizer.hard(layer.weight)[0])
    return model.eval(), quantizer


# ----------------------------------------------------------------------------------- the storage
def encode(model: nn.Module, quantizer: Quantizer) -> tuple[list[measure.Encoded], torch.Tensor]:
    """Each Linear weight's indices packed at ``log2 L`` bits with the centers (fp32), through
    ``atlas_kernels.encode_codebook``, checked to decode to the weight; every other parameter fp32.
    Returns the parts and all the indices (for the entropy)."""
    parts: list[measure.Encoded] = []
    names = []
    every = []
    table = quantizer.centers.detach().reshape(1, -1, quantizer.dim)
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        w = module.weight.detach()
        q, idx = quantizer.hard(w)
        enc = ak.encode_codebook(idx, table, k=w.shape[1])
        if not torch.equal(enc.dequantize(), w) or not torch.equal(q, w):
            raise RuntimeError(f"agustsson2017: the encoding of {name} does not decode to its weight")
        parts.append(measure.encoded(f"{name}.weight", enc, f"{enc.bits}-bit center indices, fp32 centers"))
        names.append(f"{name}.weight")
        every.append(idx.flatten())
    return parts + measure.fp32_parts(model, skip=names), torch.cat(every)


def empirical_entropy(indices: torch.Tensor) -> float:
    """Bits per symbol of the indices' empirical distribution."""
    return float(soft_entropy(torch.bincount(indices).to(torch.float64)))


def rate_metrics(dense: nn.Module, model: nn.Module, quantizer: Quantizer,
                 input_shape: tuple[int, ...]) -> dict[str, float]:
    """The storage of the actual encoding (``compression_metrics``) and the entropy-coded rate: the
    indices at their empirical entropy, the centers once and every other parameter in fp32."""
    parts, indices = encode(model, quantizer)
    weight_names = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    weights = sum(m.weight.numel() for m in linear_layers(model))
    others = sum(p.numel() for n, p in model.named_parameters() if n not in weight_names)
    h = empirical_entropy(indices)
    entropy_bits = h * len(indices) + measure.FP32_BITS * (quantizer.centers.numel() + others)
    return {
        **measure.compression_metrics(dense, model, input_shape, parts),
        "entropy_bits_per_weight": h * len(indices) / weights,
        "entropy_compression": measure.dense_bits(dense) / entropy_bits,
        "centers_used": float(len(torch.unique(indices))),
    }


# ----------------------------------------------------------------------------------------- the run
def train_dense(run: Run, cfg: Config) -> nn.Module:
    def fit(model: nn.Module) -> None:
        run.reseed("agustsson2017 dense data")
        run.train(model, run.dataset().train, cfg.dense, desc=f"{cfg.model} dense")

    spec = {"model": cfg.model, "dense": cfg.dense.model_dump()}
    return run.cached_model(f"agustsson2017-{cfg.model}-dense", spec, build=lambda: run.model(cfg.model), fit=fit)


@reproduction("agustsson2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    data = run.dataset()
    dense = train_dense(run, cfg)
    base = run.accuracy(dense, data.test)

    results: dict[int, dict[str, float]] = {}
    for count in cfg.curve_centers:
        model, quantizer = soft_to_hard(run, dense, cfg.shvq, count)
        results[count] = {"accuracy": run.accuracy(model, data.test), **rate_metrics(dense, model, quantizer, tuple(data.input_shape))}
    claim = results[cfg.shvq.centers]
    s = cfg.shvq
    differs = (f"{cfg.model} on {cfg.dataset}, {cfg.dense.steps} {cfg.dense.optimizer} steps, then {s.finetune.steps} soft-to-hard "
               f"steps (L = {s.centers} centers of d = {s.dim}, sigma {s.sigma_start:g} to {s.sigma_end:g} per "
               f"squared center gap, beta {s.beta:g}) on its fully-connected weights; the paper: a ResNet on CIFAR-10")
    metrics = {**measure.accuracy_change(base, claim["accuracy"]), **{k: v for k, v in claim.items() if k != "accuracy"}}
    curves = [
        controls.Series("soft-to-hard VQ (x: log2 L, its fixed-length index bits)", controls.BITS, controls.ACCURACY,
                        {float(math.log2(count)): r["accuracy"] for count, r in results.items()}),
        controls.quantization_curve(run, dense, cfg.control_bits, s.finetune),
    ]
    record = {"model": cfg.model, "baseline": (cfg.model, "baseline_accuracy"), "baseline_spec": {}}
    run.record("abstract-dnn-compression", metrics=metrics, curves=curves, differs=differs, **record,
               diagnosis=DIAGNOSIS,
               notes=f"beta {s.beta:g}; curve at L = {', '.join(map(str, cfg.curve_centers))}; control "
                     f"fine-tuned {s.finetune.steps} STE steps per bit-width")
    run.record("resnet32-cifar10", differs=differs, **record, metrics={
        "baseline_accuracy": base, **{f"accuracy_l{c}": r["accuracy"] for c, r in results.items()},
        **{f"entropy_bits_per_weight_l{c}": r["entropy_bits_per_weight"] for c, r in results.items()},
        **{f"entropy_compression_l{c}": r["entropy_compression"] for c, r in results.items()}},
        notes="the paper's ResNet-32 on CIFAR-10 is beyond the harness: the method's rate and accuracy at each "
              "number of centers L, for orientation")
