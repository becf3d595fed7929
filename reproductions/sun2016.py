"""Intra-layer Nonuniform Quantization of Convolutional Neural Network (Fangxuan Sun, Jun Lin & Zhongfeng
Wang, WCSP 2016; arXiv:1607.02720).

Method: the weights of each layer (convolution or fully-connected) of a trained network are quantized
with their own, nonuniform set of ``2^b`` levels ("intra-layer": one codebook per layer), and each
weight stores the ``b``-bit index of its level. Two ways of choosing a layer's levels:

- **ENQ, equal-distance nonuniform quantization**: the layer's range ``[min W, max W]`` is cut into
  ``2^b`` intervals of equal width ``(max W - min W) / 2^b``; each weight falls into one interval and is
  replaced by the interval's representative, the mean of the layer's weights in that interval (an
  empty interval keeps its midpoint). The partition is uniform, the levels are not: they follow where
  the weights are. (Reading of the abstract's "equal distance nonuniform quantization"; the body, which
  defines ENQ, could not be read where this file was written.)
- **KNQ, k-means clustering nonuniform quantization**: the layer's weights, as scalars, are clustered
  into ``k = 2^b`` centroids, ``min sum_i min_j (w_i - c_j)^2``, by Lloyd's iterations from levels
  spread evenly over ``[min W, max W]``; each weight is replaced by its centroid. ENQ is exactly the
  first Lloyd step of KNQ from that start (equal-distance boundaries, centroid levels); KNQ moves the
  boundaries to the midpoints between levels and iterates until no level moves.

The 1-D k-means is written here: the abstract cites no earlier weight-clustering paper as the method
it builds on, so the atlas's k-means of gong2014 and han2016 is not imported.

Claims (the Abstract, arXiv:1607.02720v2; the tables and the named "state-of-the-art quantization
method" could not be read): "For the VGG-16 and the AlexNet, the proposed nonuniform quantization
schemes reduce the number of required memory storage by approximately 50% while achieving almost the
same or even better classification accuracy compared to the state-of-the-art quantization method.
Compared to the ENQ scheme, the proposed KNQ scheme provides a better tradeoff when higher accuracy is
required." Read here: ``knq-memory`` and ``enq-memory`` are recorded but not checked, because the abstract
does not name the method the 50% is measured against and no harness quantizer can stand for an
unnamed one. For orientation each records, at the smallest bit-width whose test accuracy is within 1 pp
of the same harness's float network ("almost the same accuracy"), the scheme's encoded weights against
those of uniform quantization (the shared control, per-layer symmetric grid with least-squares
clipping) at ITS smallest bit-width within 1 pp; ``knq-vs-enq`` (checked): KNQ's accuracy above ENQ's
at the same bit-width.

Measured here (per seed, from the same trained network): ``baseline_accuracy``; for each scheme at its
smallest bit-width within 1 pp (searched over ``search_bits``): ``bits``, ``accuracy``,
``accuracy_change_pp``, ``storage_bits`` and ``storage_compression`` (the actual encoding: each layer's
packed indices and fp32 codebook from ``atlas_kernels.encode_codebook``, checked to decode bit for bit
to the weights evaluated; biases fp32), ``control_bits`` and ``control_storage_bits`` (the uniform
control's quantized weights encoded the same way, its grid values as the codebook) and
``storage_saving_vs_uniform`` = 1 - storage_bits / control_storage_bits (0.5: half the memory).
``knq-vs-enq`` records ``knq_gain_over_enq_pp`` at ``compare_bits``. Each memory claim records the
scheme's accuracy-bits curve at ``curve_bits`` beside the post-training uniform-quantization control
(``controls.quantization_curve``, ``finetune=None``: neither side is retrained).

Harness differs: Fashion-MNIST and LeNet-300-100 (three fully-connected layers, each its own codebook)
for the quick profile instead of ImageNet with VGG-16 and AlexNet; the paper profile uses LeNet-5 on
MNIST (convolutions and dense layers each quantized per layer). Whether the paper fine-tunes after
quantizing could not be read: the harness quantizes post-training, and so does the control. The bits
compared are those the harness finds within 1 pp, not the paper's bit-widths (not read).

Quick result (3 seeds, Fashion-MNIST, LeNet-300-100, baseline 89.1%, 0.5 pp below its reference):
knq-vs-enq reproduced: at 3 bits KNQ keeps 0.94 pp more accuracy than ENQ (95% interval 0.11 to 1.76).
The memory claims, unchecked: KNQ is within 1 pp at 3 bits (-0.43 to -0.62 pp), the uniform control
first at 4 bits, so KNQ's encoded weights are 19.6% smaller than the control's, not about 50%; ENQ is
first within 1 pp at 4 bits, like the control (saving 0). The curves: at 2 bits KNQ 83.5-86.9%, the
control 80.0-85.2%, ENQ 60.8-81.1%; at 3 bits 88.5-88.8%, 87.2-87.6%, 87.3-87.9%. See DIAGNOSIS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import atlas_kernels as ak
import torch
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction

DIAGNOSIS = """The memory claims are not checked (the abstract does not name the method compared with);
this explains why the saving measured against the atlas's uniform control is about 20%, not 50%.
Re-checked against the abstract (the body, its tables and the state-of-the-art method it
compares with could not be read) and on seeds 10 and 11 as well as the published 0-2. The pieces are
right (unit tests: ENQ's interval means, KNQ converging to separated clusters and never above ENQ's
squared error, every encoding decoding bit for bit to the weights evaluated). The baseline converged
(0.5 pp below its reference). The gap comes from the comparator and the bit-width grid, not from the
schemes: a saving is taken at whole bit-widths, and the stand-in for the unnamed state-of-the-art
method is the atlas's uniform control with least-squares clipping, which already holds the float
accuracy within 1 pp at 4 bits. KNQ needs 3 bits (10 codes per 32-bit word, 3.2 bits per weight
stored), so it saves 20%; a 50% saving would need KNQ within 1 pp at 2 bits, where it loses 2.2 to 5.6
pp after post-training quantization. Seeds 10 and 11 say the same: KNQ within 1 pp at 3 and at 4 bits
(savings 0.20 and 0), losing 3.6 and 4.6 pp at 2 bits, the control within 1 pp at 4 bits on both. ENQ, whose equal-width intervals spend levels on the sparse
tails, needs 4 bits like the control. If the paper's comparator is a plain fixed-point format that
needs 8 bits on VGG-16 or AlexNet (not read), its 50% would be 4 against 8 bits, a comparison this
control does not make; whether the paper retrains after quantizing could not be read either."""


class Config(Profile):
    model: Literal["lenet-300-100", "lenet-5"]  # the trained harness network quantized layer by layer
    dense: TrainConfig  # the float network
    kmeans_iters: PositiveInt  # KNQ: Lloyd iterations at most (stops earlier when no level moves)
    search_bits: list[PositiveInt]  # bit-widths searched for the smallest within 1 pp (both schemes and control)
    curve_bits: list[PositiveInt]  # the accuracy-bits curve of each scheme and of the control
    compare_bits: PositiveInt  # knq-vs-enq: the bit-width they are compared at
    tolerance_pp: float  # "almost the same accuracy": at most this loss against the float network


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": "cosine"}


_METHOD = {"kmeans_iters": 50, "search_bits": [2, 3, 4, 5, 6, 8], "curve_bits": [2, 3, 4], "compare_bits": 3,
           "tolerance_pp": 1.0}
PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "model": "lenet-300-100", "dense": _sgd(150, 0.05, 64), **_METHOD},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100", "dense": _sgd(3000, 0.05, 128),
              **_METHOD},
    "paper": {"dataset": "mnist", "seeds": 3, "model": "lenet-5", "dense": _sgd(10000, 0.01, 64), **_METHOD},
}


# ------------------------------------------------------------------------------ the two schemes
def assign(w: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level of every weight (levels sorted ascending): binary search between the
    midpoints of consecutive levels."""
    mids = (levels[1:] + levels[:-1]) / 2
    return torch.searchsorted(mids.contiguous(), w.reshape(-1).contiguous()).view_as(w)


def _interval_means(w: torch.Tensor, codes: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """The mean weight of each code's interval; an empty interval keeps its ``fallback`` level."""
    k = fallback.numel()
    flat, idx = w.reshape(-1), codes.reshape(-1)
    sums = torch.zeros(k, dtype=w.dtype).index_add_(0, idx, flat)
    counts = torch.bincount(idx, minlength=k).to(w.dtype)
    return torch.where(counts > 0, sums / counts.clamp_min(1), fallback)


def enq(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ENQ: ``2^bits`` equal-width intervals over ``[min W, max W]``, each weight replaced by the mean of
    its interval's weights. Returns the codebook ``[2^bits]`` and each weight's code."""
    k = 2**bits
    lo, hi = w.min(), w.max()
    width = (hi - lo) / k
    codes = ((w - lo) / width).floor().clamp(0, k - 1).long() if width > 0 else torch.zeros_like(w, dtype=torch.long)
    midpoints = lo + width * (torch.arange(k, dtype=w.dtype) + 0.5)
    return _interval_means(w, codes, midpoints), codes


def knq(w: torch.Tensor, bits: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """KNQ: 1-D k-means of the layer's weights into ``2^bits`` levels (Lloyd, from levels spread evenly
    over the range; at most ``iters`` iterations, stopping when no level moves)."""
    k = 2**bits
    levels = torch.linspace(float(w.min()), float(w.max()), k, dtype=w.dtype)
    for _ in range(iters):
        new = _interval_means(w, assign(w, levels), levels)
        new, _ = new.sort()
        moved = not torch.equal(new, levels)
        levels = new
        if not moved:
            break
    return levels, assign(w, levels)


# ------------------------------------------------------------------------------ the network
@dataclass
class Quantized:
    model: nn.Module
    storage_bits: int  # the whole network: encoded weights plus fp32 biases
    weight_bits: int  # the encoded weights alone


def encode_layer(weight: torch.Tensor, codebook: torch.Tensor, codes: torch.Tensor) -> ak.CodebookWeight:
    """The layer as stored: packed indices ``[N, K]`` (a convolution flattened to ``[out, in*kh*kw]``)
    into its fp32 codebook."""
    return ak.encode_codebook(codes.reshape(weight.shape[0], -1), codebook)


@torch.no_grad()
def quantize_network(model: nn.Module, scheme: str, bits: int, iters: int) -> Quantized:
    """A copy of ``model`` with every convolution and fully-connected weight replaced by its layer's
    nonuniform quantization (``scheme`` "enq" or "knq"), and its storage from the actual encoding."""
    clone = controls.trainable_copy(model)
    params = dict(clone.named_parameters())
    parts, names = [], controls.weight_names(clone)
    for name in names:
        w = params[name].detach()
        codebook, codes = enq(w, bits) if scheme == "enq" else knq(w, bits, iters)
        q = codebook[codes]
        enc = encode_layer(w, codebook, codes)
        if not torch.equal(enc.dequantize().view_as(w), q):
            raise RuntimeError(f"{scheme}: the encoding of {name} does not decode to its quantized weight")
        params[name].copy_(q)
        parts.append(measure.encoded(name, enc, f"{bits}-bit {scheme.upper()} indices and fp32 codebook"))
    weight_bits = measure.storage_bits(parts)
    return Quantized(clone.eval(), measure.storage_bits(parts + measure.fp32_parts(clone, skip=names)), weight_bits)


@torch.no_grad()
def encoded_weight_bits(model: nn.Module) -> int:
    """Bits of the convolution and fully-connected weights of an already quantized model, each layer
    encoded as packed indices into the codebook of its distinct values (the fewest bits that hold them)."""
    params = dict(model.named_parameters())
    total = 0
    for name in controls.weight_names(model):
        w = params[name].detach()
        codebook, codes = torch.unique(w, return_inverse=True)
        enc = encode_layer(w, codebook, codes)
        if not torch.equal(enc.dequantize().view_as(w), w):
            raise RuntimeError(f"the encoding of {name} does not decode to its weight")
        total += 8 * int(enc.storage_bytes())
    return total


def smallest_within(accuracy: dict[int, float], base: float, tolerance: float) -> int:
    """The smallest bit-width whose accuracy is within ``tolerance`` pp of ``base`` (the largest searched
    if none is)."""
    ok = [b for b in sorted(accuracy) if accuracy[b] >= base - tolerance]
    return ok[0] if ok else max(accuracy)


# ------------------------------------------------------------------------------ the run
def train_dense(run: Run) -> nn.Module:
    cfg = Config.model_validate(run.config)

    def fit(model: nn.Module) -> None:
        run.reseed("sun2016 dense data")
        run.train(model, run.dataset().train, cfg.dense, desc=f"{cfg.model} dense")

    spec = {"model": cfg.model, "dense": cfg.dense.model_dump()}
    return run.cached_model(f"sun2016-{cfg.model}-dense", spec, build=lambda: run.model(cfg.model), fit=fit)


@reproduction("sun2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    dense = train_dense(run)
    test = run.dataset().test
    base = run.accuracy(dense, test)
    all_bits = sorted({*cfg.search_bits, *cfg.curve_bits, cfg.compare_bits})

    schemes: dict[str, dict[int, Quantized]] = {
        s: {b: quantize_network(dense, s, b, cfg.kmeans_iters) for b in all_bits} for s in ("enq", "knq")}
    acc = {s: {b: run.accuracy(q.model, test) for b, q in qs.items()} for s, qs in schemes.items()}
    control_models = {b: controls.uniform_quantization(run, dense, b, None) for b in cfg.search_bits}
    control_acc = {b: run.accuracy(m, test) for b, m in control_models.items()}
    c_bits = smallest_within(control_acc, base, cfg.tolerance_pp)
    c_storage = encoded_weight_bits(control_models[c_bits])
    control_curve = controls.quantization_curve(run, dense, cfg.curve_bits, finetune=None)

    differs = (f"{cfg.model} on {cfg.dataset}, {cfg.dense.steps} SGD steps per seed, then post-training "
               f"per-layer quantization of every weight layer (no retraining); the 'state-of-the-art "
               f"quantization method' is stood for by the shared uniform control")
    record = {"model": cfg.model, "baseline": (cfg.model, "baseline_accuracy"), "baseline_spec": {}, "differs": differs}
    for s, name in (("knq", "KNQ (k-means nonuniform)"), ("enq", "ENQ (equal-distance nonuniform)")):
        b = smallest_within({k: acc[s][k] for k in cfg.search_bits}, base, cfg.tolerance_pp)
        q = schemes[s][b]
        curve = controls.Series(name, controls.BITS, controls.ACCURACY, {float(k): acc[s][k] for k in cfg.curve_bits})
        run.record(f"{s}-memory", metrics={
            **measure.accuracy_change(base, acc[s][b]),
            "bits": float(b), "storage_bits": float(q.storage_bits),
            "storage_compression": measure.dense_bits(dense) / q.storage_bits,
            "control_bits": float(c_bits), "control_accuracy": control_acc[c_bits],
            "control_storage_bits": float(c_storage),
            "storage_saving_vs_uniform": 1.0 - q.weight_bits / c_storage,
        }, diagnosis=DIAGNOSIS, notes=(f"{s.upper()} at its smallest bit-width within {cfg.tolerance_pp} pp against the uniform "
                  f"control at its own (weights' encodings compared)"),
            curves=[curve, control_curve], **record)
    cb = cfg.compare_bits
    run.record("knq-vs-enq", metrics={
        "baseline_accuracy": base, "knq_accuracy": acc["knq"][cb], "enq_accuracy": acc["enq"][cb],
        "knq_gain_over_enq_pp": acc["knq"][cb] - acc["enq"][cb],
    }, notes=f"both at {cb} bits per weight, per-layer codebooks", **record)
