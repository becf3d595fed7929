"""Energy-Efficient ConvNets Through Approximate Computing (Moons, De Brabandere, Van Gool & Verhelst,
WACV 2016; arXiv:1603.06777).

Method (as stated in its abstract; the paper's body could not be read here): the energy of a ConvNet
accelerator's arithmetic is reduced by approximate computing at two levels: at the system level, the
network runs at reduced precision, each layer at the lowest precision it tolerates, instead of the
commonly used 16-bit fixed point; at the circuit level, the arithmetic circuits exploit the reduced
precision (voltage and accuracy scaling of the multipliers). The circuit level is hardware and is
not emulated here; the system level is (:func:`search_precisions`, :func:`retrain`):

- every convolution and fully-connected layer rounds its input and its weight to fixed point
  ``<IL, B - IL>`` with its own word lengths ``B_in`` and ``B_w`` (the atlas's fixed-point kernel,
  ``atlas_kernels.round_fixed_point``, round to nearest, saturating; ``IL``, the sign included, the
  fewest integer bits that hold the tensor's largest magnitude: a weight's at every pass, an input's
  on a calibration batch of training examples);
- the reference is the network at 16 bits everywhere; a greedy search then lowers, layer after layer
  from the input, first the weight's then the input's word length to the lowest at which the
  network's accuracy on a search set of training examples (not the test set) stays within a
  tolerance (0.5 pp) of the 16-bit network's (found by bisection, the accuracy taken as monotone in
  the word length);
- the network at the precisions found is retrained: the forward pass in fixed point, the gradient
  straight through the rounding (zero where an input saturates), the update applied to float weights.

Claims (the abstract of arXiv:1603.06777v1, the only part read; its tables of per-layer precisions,
accuracies and energies could not be read, so no number of the paper is checked): (1)
``no-accuracy-loss``: the per-layer reduced precision that gains "up to 30x [energy] without losing
classification accuracy ... compared to the commonly used 16-bit fixed point number format": checked
as ``accuracy_change_pp`` of the network at the per-layer precisions found, retrained, against the 16-bit network trained for the same steps, above -1 pp; the average
word lengths, the weights' storage and a bit-operation count (``bitop_reduction``: the sum over layers
of multiply-accumulates times ``B_w * B_in`` at 16 bits over that at the precisions found, a proxy for
the multipliers' work, not an energy) are recorded, not checked; (2) ``energy``: the 30x (no accuracy
loss) and more than 100x (at 99% accuracy) energy gains of the arithmetic: hardware, not measurable
here, no check.

Recorded: ``baseline_accuracy`` (the 16-bit network), ``accuracy``, ``accuracy_change_pp``,
``float_accuracy`` (the float network the others start from), ``mean_weight_bits``,
``mean_input_bits`` (over layers), ``storage_bits`` / ``storage_compression`` (the actual encoding:
each layer's weight codes at its word length, ``atlas_kernels.encode_fixed_point``, packed in int32
words; the biases fp32; against the float network), ``bitop_reduction``. The curve (claim 1): the
network with one word length for every layer's weight and input (4, 6 and 8 bits), retrained for the
same steps (the per-layer precisions differ between seeds, and a curve needs the same levels on
every seed), beside the float network's weights uniformly quantized and fine-tuned with the
straight-through estimator for the same steps (``controls.quantization_curve``, weights only).

Quick result (3 seeds): the search ends at 3-5 bits for most weights and inputs (mean 3.5-4.8 weight
bits, 4-5.5 input bits; the bit-products of the multipliers 15-20x fewer than at 16 bits, storage
6-9x below fp32), and after retraining the network is 0.6-1.6 pp below the 16-bit one: the interval
(-2.2 to 0.05 pp) straddles the -1 pp threshold, inconclusive. A first quick profile with 500 and 100
steps of batch 64, the whole test set and 2,000 search examples gave -0.06 to -0.74 pp (interval
-1.3 to 0.4 pp), also inconclusive. The greedy search spends the tolerance on the first layers it
visits, measured on 1,000 training examples whose accuracy is itself uncertain by about 1 pp, so
the precisions it finds vary between seeds (the last layer kept 9 bits on one seed); uniform 6 and 8
bits, retrained, stay within 0.7 pp of the 16-bit network.

Harness differs: Fashion-MNIST and the harness LeNet-5 at half width (10-25-250; the paper's networks
and data sets were not read here); Adam for training and retraining; the first 5,000 test examples
in the quick profile (time); the search (greedy, by bisection, first layer first, weights before inputs), its tolerance and its search set are this file's
choices, as are the per-tensor integer lengths; the biases stay fp32; the 16-bit reference trains on
for the retraining steps, so that the compared networks have the same budget.
"""

from __future__ import annotations

import math

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Search(Section):
    reference_bits: int = Field(ge=2, le=16)  # the reference format (Abstract: 16-bit fixed point)
    min_bits: int = Field(ge=2, le=16)  # the search's floor
    tolerance_pp: PositiveFloat  # the accuracy drop allowed on the search set
    search_examples: PositiveInt  # training examples the search measures accuracy on
    calibration_examples: PositiveInt  # training examples that fix each layer input's integer length
    uniform_bits: list[PositiveInt]  # the curve: one word length for every layer, retrained (>= 3)
    curve_bits: list[PositiveInt]  # the control's bit-widths


class Config(Profile):
    lenet5_width: PositiveFloat  # the harness LeNet-5's width multiplier
    search: Search
    train: TrainConfig  # the float network
    retrain: TrainConfig  # each reduced-precision network (and the references' extra steps)


SEARCH = {"reference_bits": 16, "min_bits": 2, "tolerance_pp": 0.5, "search_examples": 1000,
          "calibration_examples": 1000, "uniform_bits": [4, 6, 8], "curve_bits": [2, 4, 8]}

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "lenet5_width": 0.5,
        "search": {**SEARCH, "search_examples": 300, "calibration_examples": 300},
        "train": {"steps": 80, "batch_size": 64, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine"},
        "retrain": {"steps": 15, "batch_size": 64, "optimizer": "adam", "lr": 5e-4, "schedule": "cosine"},
    },
    "quick": {
        # 400 Adam steps of batch 64 for the float LeNet-5 at half width, then 80 steps for each of the
        # per-layer network, the 16-bit reference, the three uniform word lengths and the control's three;
        # the first 5,000 test examples (the search's and the nine networks' evaluations are much of the
        # time; batch 100, 2,000 search examples and the whole test set took 3 minutes of CPU for 3 seeds,
        # 500 and 100 steps of batch 64 75 s).
        "dataset": "fashion-mnist", "seeds": 3, "lenet5_width": 0.5, "search": SEARCH, "test_limit": 5000,
        "train": {"steps": 400, "batch_size": 64, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine"},
        "retrain": {"steps": 80, "batch_size": 64, "optimizer": "adam", "lr": 5e-4, "schedule": "cosine"},
    },
    "paper": {
        # MNIST and the full-width LeNet-5 (the paper's networks and schedules were not read).
        "dataset": "mnist", "seeds": 3, "lenet5_width": 1.0, "search": SEARCH,
        "train": {"steps": 30000, "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
        "retrain": {"steps": 6000, "batch_size": 100, "optimizer": "adam", "lr": 1e-4, "schedule": "cosine"},
    },
}


# ------------------------------------------------------------------------------- the format
def integer_bits(largest: float) -> int:
    """``IL`` (the sign included): the fewest integer bits whose range ``[-2^(IL-1), 2^(IL-1))`` holds
    ``largest``."""
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
    return _RoundThrough.apply(x, bits, bits - int_length)


class PrecisionLayer(nn.Module):
    """A convolution or fully-connected ``layer`` whose input and weight are fixed point at their own
    word lengths (``input_bits``, ``weight_bits``)."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, input_int_length: int, bits: int) -> None:
        super().__init__()
        self.layer = layer
        self.input_int_length = input_int_length
        self.input_bits = bits
        self.weight_bits = bits

    def weight_int_length(self) -> int:
        return integer_bits(float(self.layer.weight.detach().abs().max()))

    def quantized_weight(self) -> torch.Tensor:
        return ak.round_fixed_point(self.layer.weight.detach(), self.weight_bits,
                                    self.weight_bits - self.weight_int_length())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_format(x, self.input_bits, self.input_int_length)
        w = to_format(self.layer.weight, self.weight_bits, self.weight_int_length())
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)


def precision_layers(model: nn.Module) -> list[PrecisionLayer]:
    return [m for m in model.modules() if isinstance(m, PrecisionLayer)]


@torch.no_grad()
def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda _m, args, n=n: found.__setitem__(n, args[0].detach()))
               for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return found


def to_fixed_point(model: nn.Module, bits: int, calibration: torch.Tensor) -> nn.Module:
    """A copy of the float ``model`` with every convolution and fully-connected layer a
    :class:`PrecisionLayer` at ``bits`` for its input and its weight."""
    clone = controls.trainable_copy(model)
    ranges = {n: integer_bits(float(a.abs().max())) for n, a in layer_inputs(clone, calibration).items()}

    def swap(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.Conv2d | nn.Linear):
                setattr(parent, name, PrecisionLayer(child, ranges[full], bits))
            elif not isinstance(child, PrecisionLayer):
                swap(child, f"{full}.")

    swap(clone, "")
    return clone.eval()


def precisions(model: nn.Module) -> list[tuple[int, int]]:
    """``(weight_bits, input_bits)`` of every layer, input first."""
    return [(p.weight_bits, p.input_bits) for p in precision_layers(model)]


def set_precisions(model: nn.Module, values: list[tuple[int, int]]) -> None:
    for layer, (wb, ib) in zip(precision_layers(model), values, strict=True):
        layer.weight_bits, layer.input_bits = wb, ib


@torch.no_grad()
def accuracy_on(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((model.eval()(x).argmax(1) == y).float().mean())


def search_precisions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, floor_accuracy: float,
                      min_bits: int) -> list[tuple[int, int]]:
    """The greedy search, from the model's current precisions: for each layer from the input, its
    weight's word length, then its input's, set to the lowest (down to ``min_bits``) at which the
    accuracy on ``(x, y)`` is at least ``floor_accuracy``, the layers before it at their word lengths
    found and those after it unchanged; found by bisection (the accuracy taken as non-decreasing in the
    word length); returns the precisions found (and leaves them set)."""
    for layer in precision_layers(model):
        for attr in ("weight_bits", "input_bits"):
            low, high = min_bits, getattr(layer, attr)  # high holds the floor; is low - 1 .. high - 1 worse?
            while low < high:
                mid = (low + high) // 2
                setattr(layer, attr, mid)
                if accuracy_on(model, x, y) >= floor_accuracy:
                    high = mid
                else:
                    low = mid + 1
            setattr(layer, attr, high)
    return precisions(model)


def retrain(run: Run, model: nn.Module, tag: str) -> nn.Module:
    run.reseed(f"retrain {tag}")
    clone = controls.trainable_copy(model)
    return run.train(clone, run.dataset().train, run.train_config("retrain"), desc=f"retrain {tag}").eval()


# -------------------------------------------------------------------------- storage and work
def encode_weights(model: nn.Module) -> dict[str, ak.FixedPointWeight]:
    """Each layer's weight (a convolution as its out x (in * k * k) matrix) as its ``B_w``-bit codes."""
    out = {}
    for name, layer in model.named_modules():
        if isinstance(layer, PrecisionLayer):
            w = layer.layer.weight.detach()
            out[f"{name}.layer.weight"] = ak.encode_fixed_point(w.reshape(w.shape[0], -1), layer.weight_bits,
                                                                layer.weight_bits - layer.weight_int_length())
    return out


def fixed_point_storage(model: nn.Module) -> list[measure.Encoded]:
    encoded = encode_weights(model)
    parts = [measure.encoded(n, q, f"{q.word_length}-bit fixed point") for n, q in encoded.items()]
    return parts + measure.fp32_parts(model, skip=sorted(encoded))


@torch.no_grad()
def layer_macs(model: nn.Module, example: torch.Tensor) -> list[int]:
    """Multiply-accumulates of each :class:`PrecisionLayer` for one input: output elements times the
    weights each one sums over."""
    macs: list[int] = []
    handles = [m.register_forward_hook(lambda m, _i, out: macs.append(out[0].numel() * m.layer.weight[0].numel()))
               for m in precision_layers(model)]
    try:
        model.eval()(example[:1])
    finally:
        for h in handles:
            h.remove()
    return macs


def bitop_reduction(macs: list[int], found: list[tuple[int, int]], reference_bits: int) -> float:
    """``sum MACs * B_ref^2 / sum MACs * B_w * B_in``: the multipliers' bit-products at the reference
    precision over those at the precisions found."""
    return sum(m * reference_bits**2 for m in macs) / sum(m * wb * ib for m, (wb, ib) in zip(macs, found, strict=True))


@reproduction("moons2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    s = cfg.search
    data = run.dataset()
    width = cfg.lenet5_width
    dense = run.train(run.model("lenet-5", width=width), data.train, run.train_config("train"),
                      desc="float network").eval()
    calibration = data.train.x[: s.calibration_examples]
    x_search, y_search = data.train.x[: s.search_examples], data.train.y[: s.search_examples]

    reference = to_fixed_point(dense, s.reference_bits, calibration)
    reference_search_acc = accuracy_on(reference, x_search, y_search)
    ref_trained = retrain(run, reference, f"{s.reference_bits}-bit reference")
    base_acc = run.accuracy(ref_trained, data.test)

    searching = to_fixed_point(dense, s.reference_bits, calibration)
    found = search_precisions(searching, x_search, y_search, reference_search_acc - s.tolerance_pp, s.min_bits)
    model = retrain(run, searching, "per-layer precisions")
    acc = run.accuracy(model, data.test)

    uniform = {}
    for b in sorted(s.uniform_bits):
        uniform[b] = run.accuracy(retrain(run, to_fixed_point(dense, b, calibration), f"uniform {b}-bit"), data.test)
    curves = [controls.Series("one word length for every layer's weights and inputs, retrained", controls.BITS,
                              controls.ACCURACY, {float(b): a for b, a in uniform.items()}),
              controls.quantization_curve(run, dense, s.curve_bits, run.train_config("retrain"))]

    def mean_bits(which: int) -> float:
        return sum(v[which] for v in found) / len(found)

    total = measure.storage_bits(fixed_point_storage(model))
    macs = layer_macs(model, data.test.x)
    per_layer = ", ".join(f"{wb}/{ib}" for wb, ib in found)
    run.record("no-accuracy-loss",
               model=f"LeNet-5 at width {width:g}, per-layer fixed point (weight/input bits: {per_layer}), retrained",
               metrics={**measure.accuracy_change(base_acc, acc), "float_accuracy": run.accuracy(dense, data.test),
                        "mean_weight_bits": mean_bits(0), "mean_input_bits": mean_bits(1),
                        "storage_bits": total, "storage_compression": measure.dense_bits(dense) / total,
                        "bitop_reduction": bitop_reduction(macs, found, s.reference_bits)},
               baseline=("lenet-5", "float_accuracy"), baseline_spec={} if width == 1.0 else {"width": width},
               differs=(f"harness LeNet-5 (20-50-500) at width {width:g}; {cfg.train.steps} Adam steps, then "
                        f"{cfg.retrain.steps} retraining steps for each network (the 16-bit reference trains on for "
                        f"as many); greedy per-layer search on {s.search_examples} training examples, tolerance "
                        f"{s.tolerance_pp:g} pp; per-tensor integer lengths; biases fp32; circuit-level "
                        "approximation not emulated"),
               curves=curves)
