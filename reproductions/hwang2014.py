"""Fixed-point feedforward deep neural network design using weights +1, 0, and -1 (Hwang & Sung, IEEE
Workshop on Signal Processing Systems (SiPS) 2014; doi:10.1109/SiPS.2014.6986082; no arXiv version).

Method (as stated in the abstract; the paper's body could not be read here): a trained floating-point
feedforward network is made fixed-point by quantizing its weights to a few levels (ternary: ``+1, 0,
-1`` times a step per layer) and its signals (the hidden units' outputs) to a few bits. Quantizing a
trained network directly "does not yield good results", so the fixed-point design is optimised by
back-propagation based retraining: the forward pass computes the output with the quantized weights
and the fixed-point signals, the backward pass propagates the error through them, and the update is
applied to high-precision copies of the weights, which are quantized again for the next forward pass.

Here (:func:`to_fixed_point`, :func:`retrain`), every fully-connected layer ``l`` keeps a float weight
``W_l`` and propagates with ``Q(W_l) = Delta_l * clip(round(W_l / Delta_l), -L, L)``: ``M = 2L + 1``
levels (ternary: ``L = 1``; a ``b``-bit weight: ``L = 2^(b-1) - 1``), the step ``Delta_l`` chosen once,
from the trained float weights, to minimise the squared error ``||W_l - Q(W_l)||^2`` (the alternating
least-squares rule of :func:`optimal_step`: assign each weight its nearest level, then ``Delta =
sum(w k) / sum(k^2)`` over the assigned integers ``k``, to convergence). Each hidden ReLU's output is a
``B``-bit unsigned fixed-point signal, ``x -> round(x / eps) * eps`` saturated to ``[0, (2^B - 1) eps]``
with ``eps = 2^-FL``: the atlas's fixed-point kernel (``atlas_kernels.round_fixed_point`` at word
length ``B + 1``, the sign bit unused after the ReLU), its fractional length ``FL`` per layer chosen on
a calibration batch of training examples to minimise the squared error of the float network's signals
(:func:`signal_frac_length`). Retraining back-propagates straight through both roundings (the
gradient of a saturated signal is 0) and updates the float weights; the deployed network stores only
the integer levels ``k`` and one step per layer.

Claims (abstract, read from a copy of the abstract; the paper's tables of character-recognition
(MNIST) and phoneme-recognition (TIMIT) error rates could not be read, so none of its numbers is
checked): (1) ``ternary-3bit-retrained``: "fixed-point networks with ternary weights (+1, 0, and -1)
and 3-bit signal show only negligible performance loss when compared to the floating-point
counterparts": checked as ``accuracy_change_pp`` (the retrained ternary / 3-bit network against the
float network trained for the same total steps, the same initial weights) above -1 pp; (2)
``direct-quantization``: "direct quantization for fixed-point network design does not yield good
results", which retraining repairs: checked as ``retraining_gain_pp`` (the retrained network's
accuracy minus the same trained float network quantized directly to the same format, same step sizes
and signal formats) above 0.

Recorded: ``baseline_accuracy``, ``accuracy``, ``accuracy_change_pp``, ``direct_accuracy``,
``direct_accuracy_change_pp``, ``retraining_gain_pp``, ``params``, ``storage_bits`` /
``storage_compression`` (the actual encoding: each layer's integer levels ``k`` as ``b``-bit
fixed-point codes with ``FL = 0``, ``atlas_kernels.encode_fixed_point``, packed in int32 words, one
fp32 step per layer, the biases in fp32), ``weight_storage_compression`` (32 bits per weight against
the weights' codes and steps). The curve (claim 1): the retrained network with 3-bit signals at 2
(ternary), 3 and 4 weight bits, the same networks quantized directly (no retraining), beside the
float network's weights uniformly quantized and fine-tuned with the straight-through estimator for the
same retraining steps (``controls.quantization_curve``: weights only, float signals).

Quick result (3 seeds; seeds 10-12 alike): retraining gains 1.4-4 pp over direct quantization at
ternary weights and 3-bit signals (direct: about -3 pp against float), so claim 2 reproduces; the
retrained ternary / 3-bit network stays about 1 pp below the float network (-0.8 to -1.1 pp per seed),
on the threshold of claim 1, so that check is inconclusive. The control (ternary weights, float
signals, the same retraining) loses about 0.6 pp: the 3-bit signals cost the other half point. At 3 and
4 weight bits the retrained network is within 0.5 pp of float. The quick budget leaves the float
baseline about 3 pp below its long-schedule reference, so the accuracy checks can pass but not fail.

Harness differs: Fashion-MNIST in the quick profile (the paper: MNIST character recognition and TIMIT
phoneme recognition), the harness MLP 784-256-256-10 with ReLU units (the paper's network sizes and
unit nonlinearity were not read here); Adam with a cosine schedule for training and retraining (the
paper's optimiser and schedules were not read); the step-size rule and the per-layer signal format
are this file's choices (the abstract names neither); the input pixels are the harness's normalised
fp32 values and the output layer's logits are not quantized; the biases stay fp32. The float baseline
is trained for the dense steps and then for the retraining steps in float, so that it has the same
budget as the retrained fixed-point network.
"""

from __future__ import annotations

import copy
import math

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class FixedPointDesign(Section):
    weight_bits: int = Field(ge=2, le=8)  # the claim's weights (Abstract: ternary, 2 bits for 3 levels)
    signal_bits: int = Field(ge=1, le=15)  # the claim's signal word length (Abstract: 3 bits)
    curve_weight_bits: list[PositiveInt]  # the curve's weight word lengths (>= 3, the claim's among them)
    calibration_examples: PositiveInt  # training examples that choose each layer's signal format


class Config(Profile):
    hidden: list[PositiveInt]  # the MLP's hidden widths
    design: FixedPointDesign
    dense: TrainConfig  # the floating-point network that is quantized
    retrain: TrainConfig  # retraining of the fixed-point network (and the float baseline's extra steps)


DESIGN = {"weight_bits": 2, "signal_bits": 3, "curve_weight_bits": [2, 3, 4], "calibration_examples": 1000}

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "hidden": [64, 64], "design": DESIGN,
        "dense": {"steps": 150, "batch_size": 64, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine"},
        "retrain": {"steps": 60, "batch_size": 64, "optimizer": "adam", "lr": 5e-4, "schedule": "cosine"},
    },
    "quick": {
        # 800 Adam steps of batch 100 for the float network (1.3 passes over Fashion-MNIST), then 250
        # retraining steps for each of the three weight word lengths, for the float baseline's
        # continuation and for each control point (2,550 steps per seed; 1,000 + 7 x 300 was over time).
        "dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256], "design": DESIGN,
        "dense": {"steps": 800, "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
        "retrain": {"steps": 250, "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
    },
    "paper": {
        # MNIST character recognition; the paper's network sizes and schedules were not read: three
        # hidden layers of 1024 units, 50 epochs of training and 20 of retraining at batch 100.
        "dataset": "mnist", "seeds": 3, "hidden": [1024, 1024, 1024], "design": DESIGN,
        "dense": {"steps": 30000, "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
        "retrain": {"steps": 12000, "batch_size": 100, "optimizer": "adam", "lr": 1e-4, "schedule": "cosine"},
    },
}


# ------------------------------------------------------------------------------------- weights
def weight_levels(bits: int) -> int:
    """``L``: the largest integer level of a ``bits``-bit symmetric weight, ``2^(bits-1) - 1`` (2 bits:
    ternary, ``L = 1``)."""
    if bits < 2:
        raise ValueError(f"a symmetric weight with a zero level needs at least 2 bits, got {bits}")
    return (1 << (bits - 1)) - 1


def weight_integers(w: torch.Tensor, step: float, levels: int) -> torch.Tensor:
    """The integer levels ``k = clip(round(w / Delta), -L, L)`` (a tie rounds to even)."""
    return torch.round(w / step).clamp_(-levels, levels)


@torch.no_grad()
def optimal_step(w: torch.Tensor, levels: int, iterations: int = 50) -> float:
    """The step ``Delta`` minimising ``||w - Delta k(w)||^2`` over the ``2L + 1`` levels: alternating
    least squares (nearest levels for a step, then the best step for those levels, ``sum(w k) /
    sum(k^2)``), started from ``max|w| / L`` and from ``mean|w|`` (ternary's usual scale); the better
    of the two fixed points."""
    w = w.detach().flatten().double()
    best, best_err = 1.0, math.inf
    top = float(w.abs().max())
    if top == 0.0:
        return 1.0
    for start in (top / levels, float(w.abs().mean())):
        step = start
        for _ in range(iterations):
            k = weight_integers(w, step, levels)
            denom = float((k * k).sum())
            if denom == 0.0:
                break
            new = float((w * k).sum()) / denom
            if abs(new - step) <= 1e-12 * step:
                step = new
                break
            step = new
        err = float((w - step * weight_integers(w, step, levels)).pow(2).sum())
        if err < best_err:
            best, best_err = step, err
    return best


class TernaryLinear(nn.Linear):
    """``nn.Linear`` propagating with ``Q(W) = Delta * k(W)`` (``2L + 1`` levels, ``Delta`` fixed at
    conversion); the gradient reaches the float ``W`` straight through the rounding."""

    levels: int = 1
    step: float = 1.0

    def quantized_weight(self) -> torch.Tensor:
        return self.step * weight_integers(self.weight.detach(), self.step, self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight + (self.quantized_weight() - self.weight).detach()
        return F.linear(x, w, self.bias)


# ------------------------------------------------------------------------------------- signals
class _SignalRound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int, frac_length: int) -> torch.Tensor:  # type: ignore[override]
        top = ((1 << bits) - 1) * 2.0 ** -frac_length
        ctx.save_for_backward((x <= top + 2.0 ** -frac_length / 2) & (x >= 0))
        return ak.round_fixed_point(x, bits + 1, frac_length)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None, None


def quantize_signal(x: torch.Tensor, bits: int, frac_length: int) -> torch.Tensor:
    """A non-negative signal as a ``bits``-bit unsigned fixed-point number: ``round(x / eps) * eps``,
    ``eps = 2^-FL``, saturated to ``(2^bits - 1) eps`` (``atlas_kernels.round_fixed_point`` at word length
    ``bits + 1``; negative values, none after a ReLU, would go to 0). Backward: straight through where
    the signal is inside the range, 0 where it saturates."""
    return _SignalRound.apply(x.clamp_min(0), bits, frac_length)


class FixedPointReLU(nn.ReLU):
    """A hidden unit's output ``relu(x)`` as a ``bits``-bit fixed-point signal with ``FL`` fractional bits."""

    bits: int = 3
    frac_length: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_signal(F.relu(x), self.bits, self.frac_length)


@torch.no_grad()
def signal_frac_length(signals: torch.Tensor, bits: int) -> int:
    """The fractional length whose ``bits``-bit signal format gives the float signals the least squared
    error (searched over every FL that puts the range between 2^-16 and 2^16)."""
    def error(fl: int) -> float:
        return float((ak.round_fixed_point(signals, bits + 1, fl) - signals).pow(2).sum())

    return min(range(-16 + bits, 17), key=error)


@torch.no_grad()
def hidden_signals(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every ReLU's output on ``x`` (the float network's signals), by module name."""
    found: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: found.__setitem__(n, out.detach()))
               for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    try:
        model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return found


def to_fixed_point(model: nn.Module, weight_bits: int, signal_bits: int, calibration: torch.Tensor) -> nn.Module:
    """A copy of the trained float ``model``: every ``nn.Linear`` a :class:`TernaryLinear` at
    ``weight_bits`` (its step from its trained weights, :func:`optimal_step`), every ReLU a
    :class:`FixedPointReLU` at ``signal_bits`` (its format from the float signals on ``calibration``)."""
    clone = controls.trainable_copy(model)
    formats = {n: signal_frac_length(s, signal_bits) for n, s in hidden_signals(clone, calibration).items()}
    levels = weight_levels(weight_bits)

    def swap(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.Linear) and not isinstance(child, TernaryLinear):
                new = TernaryLinear(child.in_features, child.out_features, bias=child.bias is not None)
                new.load_state_dict(child.state_dict())
                new.levels, new.step = levels, optimal_step(child.weight, levels)
                setattr(parent, name, new.to(child.weight.device))
            elif isinstance(child, nn.ReLU) and not isinstance(child, FixedPointReLU):
                relu = FixedPointReLU()
                relu.bits, relu.frac_length = signal_bits, formats[full]
                setattr(parent, name, relu)
            else:
                swap(child, f"{full}.")

    swap(clone, "")
    return clone.eval()


def fixed_point_layers(model: nn.Module) -> list[tuple[str, TernaryLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, TernaryLinear)]


def retrain(run: Run, fixed: nn.Module, weight_bits: int) -> nn.Module:
    """Back-propagation retraining of the fixed-point network (its float weights updated, the steps and
    signal formats kept)."""
    run.reseed(f"retrain {weight_bits}-bit weights")
    model = controls.trainable_copy(fixed)
    return run.train(model, run.dataset().train, run.train_config("retrain"),
                     desc=f"retrain {weight_bits}-bit weights").eval()


# ------------------------------------------------------------------------------------- storage
def encode_weights(model: nn.Module) -> dict[str, ak.FixedPointWeight]:
    """Each layer's integer levels ``k`` as ``b``-bit fixed-point codes with ``FL = 0`` (``b`` the
    smallest word holding ``-L..L``), packed in int32 words (``atlas_kernels.encode_fixed_point``)."""
    out = {}
    for name, layer in fixed_point_layers(model):
        k = weight_integers(layer.weight.detach(), layer.step, layer.levels)
        out[f"{name}.weight"] = ak.encode_fixed_point(k, int(math.log2(layer.levels + 1)) + 1, 0)
    return out


def decode_weight(q: ak.FixedPointWeight, step: float) -> torch.Tensor:
    return q.dequantize() * step


def fixed_point_storage(model: nn.Module) -> list[measure.Encoded]:
    """The deployed network: each layer's packed level codes and its fp32 step; the biases in fp32."""
    encoded = encode_weights(model)
    parts = []
    for name, q in encoded.items():
        parts.append(measure.encoded(name, q, f"{q.word_length}-bit weight levels"))
        parts.append(measure.Encoded(f"{name}.step", measure.FP32_BITS, "fp32 step"))
    return parts + measure.fp32_parts(model, skip=sorted(encoded))


@reproduction("hwang2014", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    design = cfg.design
    data = run.dataset()
    initial = run.model("mlp", hidden=cfg.hidden)
    dense = run.train(copy.deepcopy(initial), data.train, run.train_config("dense"), desc="float network")
    calibration = data.train.x[: design.calibration_examples]

    run.reseed("float baseline, retraining steps")
    baseline = run.train(controls.trainable_copy(dense), data.train, run.train_config("retrain"),
                         desc="float baseline, retraining steps")
    base_acc = run.accuracy(baseline, data.test)

    bits = sorted({*design.curve_weight_bits, design.weight_bits})
    direct = {b: to_fixed_point(dense, b, design.signal_bits, calibration) for b in bits}
    direct_acc = {b: run.accuracy(m, data.test) for b, m in direct.items()}
    retrained = {b: retrain(run, direct[b], b) for b in bits}
    retrained_acc = {b: run.accuracy(m, data.test) for b, m in retrained.items()}
    sig = design.signal_bits
    curves = [
        controls.Series(f"retrained fixed point, {sig}-bit signals", controls.BITS, controls.ACCURACY,
                        {float(b): a for b, a in retrained_acc.items()}),
        controls.Series(f"direct quantization, {sig}-bit signals (no retraining)", controls.BITS,
                        controls.ACCURACY, {float(b): a for b, a in direct_acc.items()}),
        controls.quantization_curve(run, dense, design.curve_weight_bits, run.train_config("retrain")),
    ]

    arch = "-".join(map(str, [math.prod(data.input_shape), *cfg.hidden, data.num_classes]))
    differs = (f"MLP {arch} with ReLU units; {cfg.dense.steps} Adam steps of batch {cfg.dense.batch_size} for the "
               f"float network, then {cfg.retrain.steps} retraining steps (the float baseline continues in float "
               "for the same steps); least-squares step per layer; per-layer signal format chosen on "
               f"{design.calibration_examples} training examples; inputs and logits not quantized, biases fp32")
    spec = {"hidden": list(cfg.hidden)}
    wb = design.weight_bits
    model = retrained[wb]
    parts = fixed_point_storage(model)
    total = measure.storage_bits(parts)
    n_weights = sum(layer.weight.numel() for _, layer in fixed_point_layers(model))
    weight_bits_stored = sum(p.bits for p in parts if p.what.endswith("weight levels") or p.what == "fp32 step")
    name = "ternary" if wb == 2 else f"{wb}-bit"
    run.record("ternary-3bit-retrained", model=f"MLP {arch}, {name} weights, {sig}-bit signals, retrained",
               metrics={**measure.accuracy_change(base_acc, retrained_acc[wb]),
                        "params": measure.count_params(model), "storage_bits": total,
                        "storage_compression": measure.dense_bits(baseline) / total,
                        "weight_storage_compression": 32 * n_weights / weight_bits_stored},
               differs=differs, baseline=("mlp", "baseline_accuracy"), baseline_spec=spec, curves=curves)
    run.record("direct-quantization", model=f"MLP {arch}, {name} weights, {sig}-bit signals: direct vs retrained",
               metrics={"baseline_accuracy": base_acc, "accuracy": retrained_acc[wb],
                        "direct_accuracy": direct_acc[wb], "direct_accuracy_change_pp": direct_acc[wb] - base_acc,
                        "retraining_gain_pp": retrained_acc[wb] - direct_acc[wb]},
               differs=differs, baseline=("mlp", "baseline_accuracy"), baseline_spec=spec)
