"""Understanding the Impact of Precision Quantization on the Accuracy and Energy of Neural Networks
(Hashemi, Anthony, Tann, Bahar & Reda, DATE 2017; arXiv:1612.03940).

Method (an empirical study; as stated in its abstract, the body not read here): the weights and the
inputs of every layer of a trained network are represented at reduced precision (the paper studies
floating point, fixed point, powers of two and binary), the accuracy is measured together with the
memory footprint, power, energy and area of hardware built for each representation, and
"training-time methodologies" compensate for the accuracy lost at low precision. A second point: part
of what the lower precision saves can be spent on a larger network, whose accuracy is higher.

Here, the fixed-point representation (:func:`to_fixed_point`): every fully-connected layer rounds its
input and its weight to ``B``-bit fixed point ``<IL, FL>`` (the atlas's fixed-point kernel,
``atlas_kernels.round_fixed_point``, round to nearest, saturating), each tensor with its own integer
length ``IL`` (the sign included): the fewest bits that hold its largest magnitude, for a weight at
every forward pass, for a layer input on a calibration batch of training examples, fixed thereafter
(:func:`integer_bits`), and ``FL = B - IL`` (a dynamic fixed point, one format per tensor). The
training-time compensation (:func:`finetune`): the quantized network is trained on from the float
network's weights, the forward pass in fixed point, the gradient straight through the rounding (zero
where an input saturates), the update applied to float weights that are rounded again at the next
pass. The larger network (:func:`reproduce`): the same MLP with every hidden layer ``widen`` times
wider, trained in float for the same steps, then quantized and fine-tuned the same way.

Claims (the abstract of arXiv:1612.03940v1; the paper's tables of accuracy per representation for
its three networks (MNIST, CIFAR-10, ImageNet) and its hardware numbers could not be read here, so no
number of the paper is checked): (1) ``precision-accuracy``: "precision scaling can deliver
significant benefits in design metrics at the cost of very modest decreases in network accuracy":
checked as ``accuracy_change_pp`` of the 8-bit fixed-point network (weights and layer inputs,
fine-tuned) against the float network trained for the same total steps, above -1 pp, with its
``storage_compression`` recorded (8-bit codes, ``atlas_kernels.encode_fixed_point``); (2)
``training-compensation``: the training-time methodologies "compensate for the reduction in accuracy
due to limited bit precision": ``retraining_gain_pp`` (the fine-tuned 4-bit network's test accuracy
minus the same float network quantized directly to 4 bits) above 0; (3) ``larger-network``: "a small
portion of the benefits achieved when using lower precisions can be forfeited to increase the network
size and therefore the accuracy": ``widening_gain_pp`` (the widened 4-bit network minus the 4-bit
network at the base width, both fine-tuned) above 0, its storage still below the float network's
(``storage_compression`` recorded); (4) ``energy``: the power, energy and area of the hardware for
each representation: not measurable on this harness (no hardware model), no check.

Recorded: ``baseline_accuracy``, ``accuracy``, ``accuracy_change_pp``, ``params``, ``storage_bits``,
``storage_compression`` (claim 1); ``direct_accuracy``, ``retraining_gain_pp`` (claim 2);
``wide_accuracy``, ``wide_accuracy_change_pp``, ``widening_gain_pp``, ``wide_storage_compression``
(claim 3). The curve (claim 1): the fine-tuned fixed-point network at each ``B``, the same networks
quantized directly, beside the float network's weights uniformly quantized and fine-tuned with the
straight-through estimator for the same steps (``controls.quantization_curve``, weights only).

Quick result (3 seeds): 8-bit fixed point, fine-tuned, is within 0.3 pp of float (claim 1
reproduced) at 4x less storage; at 4 bits the fine-tuned network loses 0.6-0.7 pp and fine-tuning gains
0.1-1.0 pp over direct quantization, positive on every seed but with an interval that reaches below 0
(claim 2 inconclusive: on this MLP 4-bit dynamic fixed point loses only about 1 pp directly, leaving
little to compensate); the 2x wider 4-bit network gains 0.7-1.3 pp over the base 4-bit one and beats
the float network while stored 3.5x smaller (claim 3 reproduced). The control (weights only, float
inputs, fine-tuned) keeps float accuracy at 4 bits: the inputs' rounding costs the fixed-point
network most of its loss.

Harness differs: Fashion-MNIST and the harness MLP 784-128-128-10 with ReLU (the paper: LeNet on
MNIST, a CIFAR-10 ConvNet and AlexNet on ImageNet, not read here); only the fixed-point
representation is reproduced (the powers-of-two and binary ones are the subject of other atlas
papers); Adam for training and fine-tuning (the paper's recipe was not read); the per-tensor integer
length and the straight-through fine-tuning are this file's choices; the biases stay fp32; the float
baseline is trained on for the fine-tuning steps, so that every compared network has the same budget.
"""

from __future__ import annotations

import math

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Precision(Section):
    claim_bits: int = Field(ge=2, le=16)  # the precision of claim 1 (8 bits)
    low_bits: int = Field(ge=2, le=16)  # the low precision of claims 2 and 3 (4 bits)
    curve_bits: list[PositiveInt]  # the curve's precisions (>= 3, both claims' among them)
    widen: float = Field(gt=1)  # claim 3: the larger network's hidden widths over the base's
    calibration_examples: PositiveInt  # training examples that fix each layer input's integer length


class Config(Profile):
    hidden: list[PositiveInt]  # the MLP's hidden widths
    precision: Precision
    train: TrainConfig  # each float network
    finetune: TrainConfig  # each fixed-point network's training-time compensation (and the float baseline's extra steps)


PRECISION = {"claim_bits": 8, "low_bits": 4, "curve_bits": [4, 6, 8], "widen": 2.0, "calibration_examples": 2000}

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "hidden": [32, 32], "precision": PRECISION,
        "train": {"steps": 150, "batch_size": 64, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine"},
        "finetune": {"steps": 40, "batch_size": 64, "optimizer": "adam", "lr": 5e-4, "schedule": "cosine"},
    },
    "quick": {
        # 800 Adam steps of batch 100 for each float network (base and widened), then 200 steps for each
        # fine-tuned network (3 precisions, the widened 4-bit one, the float baseline's continuation and
        # the control's 3 precisions).
        "dataset": "fashion-mnist", "seeds": 3, "hidden": [128, 128], "precision": PRECISION,
        "train": {"steps": 800, "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
        "finetune": {"steps": 200, "batch_size": 100, "optimizer": "adam", "lr": 5e-4, "schedule": "cosine"},
    },
    "paper": {
        # MNIST; the paper's LeNet and its schedule were not read: an MLP, 50 epochs and 10 of fine-tuning.
        "dataset": "mnist", "seeds": 3, "hidden": [500, 500], "precision": PRECISION,
        "train": {"steps": 30000, "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
        "finetune": {"steps": 6000, "batch_size": 100, "optimizer": "adam", "lr": 1e-4, "schedule": "cosine"},
    },
}


# ------------------------------------------------------------------------------- the format
def integer_bits(largest: float) -> int:
    """``IL`` (the sign included): the fewest integer bits whose range ``[-2^(IL-1), 2^(IL-1))`` holds
    ``largest``; 0 or negative for a range below 1/2."""
    if largest <= 0:
        return 1
    return math.floor(math.log2(largest)) + 2


class _RoundThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int, frac_length: int) -> torch.Tensor:  # type: ignore[override]
        low, high = ak.fixed_point_range(bits, frac_length)
        half = 2.0 ** -frac_length / 2
        ctx.save_for_backward((x >= low - half) & (x <= high + half))
        return ak.round_fixed_point(x, bits, frac_length)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None, None


def to_format(x: torch.Tensor, bits: int, int_length: int) -> torch.Tensor:
    """``x`` rounded to nearest in ``<IL, B - IL>`` and saturated; the gradient straight through inside
    the range, zero where ``x`` saturates."""
    return _RoundThrough.apply(x, bits, bits - int_length)


class FixedPointLinear(nn.Linear):
    """``nn.Linear`` whose input and weight are ``bits``-bit fixed point: the input's integer length
    fixed at conversion, the weight's from its largest magnitude at every pass."""

    bits: int = 8
    input_int_length: int = 1

    def weight_int_length(self) -> int:
        return integer_bits(float(self.weight.detach().abs().max()))

    def quantized_weight(self) -> torch.Tensor:
        return ak.round_fixed_point(self.weight.detach(), self.bits, self.bits - self.weight_int_length())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(to_format(x, self.bits, self.input_int_length),
                        to_format(self.weight, self.bits, self.weight_int_length()), self.bias)


@torch.no_grad()
def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda _m, args, n=n: found.__setitem__(n, args[0].detach()))
               for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return found


def to_fixed_point(model: nn.Module, bits: int, calibration: torch.Tensor) -> nn.Module:
    """A copy of the float ``model`` with every ``nn.Linear`` a :class:`FixedPointLinear` at ``bits``,
    each input's integer length from its largest magnitude on ``calibration``."""
    clone = controls.trainable_copy(model)
    ranges = {n: integer_bits(float(a.abs().max())) for n, a in layer_inputs(clone, calibration).items()}

    def swap(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.Linear) and not isinstance(child, FixedPointLinear):
                new = FixedPointLinear(child.in_features, child.out_features, bias=child.bias is not None)
                new.load_state_dict(child.state_dict())
                new.bits, new.input_int_length = bits, ranges[full]
                setattr(parent, name, new.to(child.weight.device))
            else:
                swap(child, f"{full}.")

    swap(clone, "")
    return clone.eval()


def finetune(run: Run, fixed: nn.Module, tag: str) -> nn.Module:
    """The training-time compensation: the fixed-point network trained on, straight through the rounding."""
    run.reseed(f"fine-tune {tag}")
    model = controls.trainable_copy(fixed)
    return run.train(model, run.dataset().train, run.train_config("finetune"), desc=f"fine-tune {tag}").eval()


# ------------------------------------------------------------------------------------- storage
def encode_weights(model: nn.Module) -> dict[str, ak.FixedPointWeight]:
    """Each fixed-point layer's weight as its ``B``-bit codes in ``<IL, B - IL>``, packed in int32 words."""
    out = {}
    for name, layer in model.named_modules():
        if isinstance(layer, FixedPointLinear):
            out[f"{name}.weight"] = ak.encode_fixed_point(layer.weight.detach(), layer.bits,
                                                          layer.bits - layer.weight_int_length())
    return out


def fixed_point_storage(model: nn.Module) -> list[measure.Encoded]:
    """The deployed network: each layer's packed weight codes (its format is metadata); biases in fp32."""
    encoded = encode_weights(model)
    parts = [measure.encoded(n, q, f"{q.word_length}-bit fixed point") for n, q in encoded.items()]
    return parts + measure.fp32_parts(model, skip=sorted(encoded))


@reproduction("hashemi2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    p = cfg.precision
    data = run.dataset()
    calibration = data.train.x[: p.calibration_examples]

    def float_network(hidden: list[int], tag: str) -> nn.Module:
        run.reseed(f"float network {tag}")
        return run.train(run.model("mlp", hidden=hidden), data.train, run.train_config("train"),
                         desc=f"float network {tag}").eval()

    dense = float_network(list(cfg.hidden), "base")
    run.reseed("float baseline, fine-tuning steps")
    baseline = run.train(controls.trainable_copy(dense), data.train, run.train_config("finetune"),
                         desc="float baseline, fine-tuning steps").eval()
    base_acc = run.accuracy(baseline, data.test)

    bits = sorted({*p.curve_bits, p.claim_bits, p.low_bits})
    direct = {b: to_fixed_point(dense, b, calibration) for b in bits}
    direct_acc = {b: run.accuracy(m, data.test) for b, m in direct.items()}
    tuned = {b: finetune(run, direct[b], f"{b}-bit") for b in bits}
    tuned_acc = {b: run.accuracy(m, data.test) for b, m in tuned.items()}

    wide_hidden = [max(1, round(h * p.widen)) for h in cfg.hidden]
    wide = finetune(run, to_fixed_point(float_network(wide_hidden, "widened"), p.low_bits, calibration),
                    f"{p.low_bits}-bit widened")
    wide_acc = run.accuracy(wide, data.test)

    curves = [controls.Series("fixed point, weights and layer inputs, fine-tuned", controls.BITS, controls.ACCURACY,
                              {float(b): a for b, a in tuned_acc.items()}),
              controls.Series("fixed point, weights and layer inputs, no fine-tuning", controls.BITS,
                              controls.ACCURACY, {float(b): a for b, a in direct_acc.items()}),
              controls.quantization_curve(run, dense, p.curve_bits, run.train_config("finetune"))]

    def arch(hidden: list[int]) -> str:
        return "-".join(map(str, [math.prod(data.input_shape), *hidden, data.num_classes]))

    differs = (f"MLP {arch(list(cfg.hidden))} (ReLU), {cfg.train.steps} Adam steps of batch {cfg.train.batch_size}, "
               f"then {cfg.finetune.steps} fine-tuning steps in fixed point (the float baseline trains on in float "
               "for the same steps); per-tensor integer lengths; biases fp32; only the fixed-point representation")
    spec = {"hidden": list(cfg.hidden)}
    dense_bits = measure.dense_bits(baseline)

    def storage(model: nn.Module) -> tuple[int, float]:
        total = measure.storage_bits(fixed_point_storage(model))
        return total, dense_bits / total

    cb, lb = p.claim_bits, p.low_bits
    total, ratio = storage(tuned[cb])
    run.record("precision-accuracy", model=f"MLP {arch(list(cfg.hidden))}, {cb}-bit fixed-point weights and layer "
               "inputs, fine-tuned",
               metrics={**measure.accuracy_change(base_acc, tuned_acc[cb]), "params": measure.count_params(tuned[cb]),
                        "storage_bits": total, "storage_compression": ratio},
               differs=differs, baseline=("mlp", "baseline_accuracy"), baseline_spec=spec, curves=curves)
    run.record("training-compensation", model=f"MLP {arch(list(cfg.hidden))}, {lb}-bit fixed point: fine-tuned vs "
               "quantized directly",
               metrics={"baseline_accuracy": base_acc, "accuracy": tuned_acc[lb], "direct_accuracy": direct_acc[lb],
                        "accuracy_change_pp": tuned_acc[lb] - base_acc,
                        "retraining_gain_pp": tuned_acc[lb] - direct_acc[lb]},
               differs=differs, baseline=("mlp", "baseline_accuracy"), baseline_spec=spec)
    wide_total, wide_ratio = storage(wide)
    run.record("larger-network", model=f"MLP {arch(wide_hidden)} against {arch(list(cfg.hidden))}, both {lb}-bit "
               "fixed point, fine-tuned",
               metrics={"baseline_accuracy": base_acc, "accuracy": tuned_acc[lb], "wide_accuracy": wide_acc,
                        "wide_accuracy_change_pp": wide_acc - base_acc, "widening_gain_pp": wide_acc - tuned_acc[lb],
                        "wide_storage_bits": wide_total, "wide_storage_compression": wide_ratio},
               differs=differs + f"; widened {p.widen:g}x", baseline=("mlp", "baseline_accuracy"), baseline_spec=spec)
