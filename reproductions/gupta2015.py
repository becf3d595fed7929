"""Deep Learning with Limited Numerical Precision (Gupta, Agrawal, Gopalakrishnan & Narayanan, ICML 2015;
arXiv:1502.02551).

Method (Sec. 3): a network is trained with every number in a fixed-point format ``<IL, FL>``: a word
of ``WL = IL + FL`` bits, ``IL`` integer bits (the sign included) and ``FL`` fractional bits, step
``eps = 2^-FL``, range ``[-2^(IL-1), 2^(IL-1) - 2^-FL]``. A value is converted to the format by
saturating it to that range and rounding it to a multiple of ``eps``, with one of two rules
(``floor(x)``: the largest multiple of ``eps`` not above ``x``):

- round-to-nearest (Eq. 1): ``floor(x)`` if ``x <= floor(x) + eps/2``, else ``floor(x) + eps``;
- stochastic rounding (Eq. 2): ``floor(x) + eps`` with probability ``(x - floor(x)) / eps``, else
  ``floor(x)``; unbiased, ``E[Round(x)] = x``.

Dot products are accumulated in high precision and their result rounded once. Trained by SGD, the
weights live in the format, so an update ``-lr * dL/dw`` below ``eps/2`` is lost to round-to-nearest
(``w + Delta`` rounds back to ``w``), while stochastic rounding keeps it in expectation: the paper's
argument that the rounding rule decides whether a low-precision network trains at all.

Here (:func:`to_fixed_point`, :func:`train_fixed_point`): every fully-connected layer computes
``Round(W x + b)`` (its output, accumulated in fp32, rounded into ``<IL, FL>``), and in the backward
pass the error of each example it propagates is rounded the same way (:class:`RoundThrough`); its
weights and biases are rounded into the format at initialisation and after every SGD step (plain SGD
without momentum, so the stored weights are the optimiser's whole state). One format and one rounding rule
for all three. The trained network is evaluated with its stored fixed-point parameters and its layer
outputs rounded to nearest (the rule only matters while training). The quantizer is the atlas's one
fixed-point encoding (``atlas_kernels.round_fixed_point``; Eq. 1-2 and saturation as above).

Claims (read from the abstract of arXiv:1502.02551v1; the paper's body, Sec. 4 and Figs. 2-3, could not
be read here): (1) ``mnist-fc-16bit-stochastic``: "deep networks can be trained using only 16-bit wide
fixed-point number representation when using stochastic rounding, and incur little to no degradation
in the classification accuracy": checked as the accuracy change of the 16-bit stochastically rounded
network against the same MLP trained in fp32 (same initial weights and steps), within 1 pp; and
``storage_compression`` of its actual encoding (16-bit codes packed two per int32 word,
``atlas_kernels.encode_fixed_point``): 2x. (2) ``mnist-fc-rounding``: "the rounding scheme plays a
crucial role": at a low-precision format where updates fall below ``eps/2``, stochastic rounding
trains where round-to-nearest does not; checked as ``rounding_gain_pp`` (stochastic minus nearest,
the same format, initial weights and steps) above 0. The format of that claim is ``FL = 8``
(``eps = 2^-8``); the word lengths and FL values of the paper's figures are not confirmed here.

Recorded: ``baseline_accuracy``, ``accuracy``, ``accuracy_change_pp``, ``storage_bits``,
``storage_compression`` (16-bit claim); ``stochastic_accuracy``, ``nearest_accuracy``,
``rounding_gain_pp``, ``nearest_accuracy_change_pp`` (rounding claim). The curve (16-bit claim): test
accuracy against word length (``IL`` fixed, ``FL = WL - IL``) with stochastic rounding at 8, 12 and 16
bits and round-to-nearest at 12 and 16 (at 8 bits, ``eps = 1/16``, nearest rounds most initial
weights to 0), beside the fp32 MLP's weights uniformly quantized after training to 8, 12 and 16 bits
(``controls.quantization_curve``, post-training: the fixed-point networks train no longer than the
fp32 baseline; the control quantizes the weights of a network trained in fp32, while the method
also computes its activations, errors and updates in fixed point).

Quick result (3 seeds): 16-bit stochastic rounding within 0.2 pp of fp32; at ``<4, 8>`` stochastic
rounding still trains (about fp32's accuracy) while round-to-nearest loses 20-31 pp; at ``<4, 12>``
both train. The quick budget (500 plain-SGD steps) leaves the fp32 baseline about 6.6 pp below its
long-schedule reference, so the accuracy checks can pass but not fail there.

Harness differs: Fashion-MNIST (MNIST cannot be downloaded here), the harness MLP 784-256-256-10
(the paper: 784-1000-1000-10), plain SGD for the quick budget below, cosine schedule; one ``<IL, FL>``
with ``IL = 4`` for weights, activations and errors (the paper's choice of IL per figure is not read
here); the input pixels are the harness's normalised fp32 values (not rounded).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

Rounding = Literal["nearest", "stochastic"]


class FixedPoint(Section):
    int_length: int = Field(ge=1, le=8)  # IL, sign bit included: the range [-2^(IL-1), 2^(IL-1))
    word_length: int = Field(ge=2, le=16)  # WL of the 16-bit claim (Abstract: 16)
    rounding_frac_length: int = Field(ge=1, le=15)  # FL of the rounding claim (eps = 2^-FL)
    curve_word_lengths: list[PositiveInt]  # the stochastic-rounding curve's word lengths (FL = WL - IL), >= 3
    nearest_word_lengths: list[PositiveInt]  # round-to-nearest at these word lengths (the rounding claim's among them)


class Config(Profile):
    hidden: list[PositiveInt]  # the MLP's hidden widths (the paper: 1000-1000)
    fixed_point: FixedPoint
    train: TrainConfig  # every network: the fp32 baseline and each fixed-point one (same steps)


#: The same formats in every profile: IL = 4; the 16-bit claim at <4, 12>, the rounding claim at <4, 8>.
FORMATS = {"int_length": 4, "word_length": 16, "rounding_frac_length": 8, "curve_word_lengths": [8, 12, 16],
           "nearest_word_lengths": [12, 16]}

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "hidden": [64, 64],
        "fixed_point": FORMATS,
        "train": {"steps": 60, "batch_size": 64, "optimizer": "sgd", "momentum": 0.0, "lr": 0.1,
                  "schedule": "cosine"},
    },
    "quick": {
        # 500 plain-SGD steps of batch 100 (0.8 passes over Fashion-MNIST) per network; 6 networks per
        # seed (fp32; stochastic rounding at 3 word lengths, round-to-nearest at 2), 3 seeds.
        "dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256],
        "fixed_point": FORMATS,
        "train": {"steps": 500, "batch_size": 100, "optimizer": "sgd", "momentum": 0.0, "lr": 0.1,
                  "schedule": "cosine"},
    },
    "paper": {
        # Sec. 4 (not read here): MNIST, 784-1000-1000-10 ReLU, softmax, SGD, batch 100; the
        # learning rate and the number of epochs (here 100 epochs = 60000 steps) are this file's.
        "dataset": "mnist", "seeds": 3, "hidden": [1000, 1000],
        "fixed_point": FORMATS,
        "train": {"steps": 60000, "batch_size": 100, "optimizer": "sgd", "momentum": 0.0, "lr": 0.01,
                  "schedule": "cosine"},
    },
}


# ---------------------------------------------------------------------------------- the format
class RoundThrough(torch.autograd.Function):
    """``Round(x)`` into ``<IL, FL>`` in the forward pass (``x``: ``[batch, ...]``), and the incoming
    error rounded into the same format in the backward pass. The error rounded is each example's own,
    ``dL_i/dy_i``: the gradient of the batch-mean loss times the batch size (as the paper's per-example
    back-propagation computes it; the mean over the batch is taken later, inside the high-precision
    accumulation of the weight gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, word_length: int, frac_length: int, forward_rounding: str,  # type: ignore[override]
                backward_rounding: str) -> torch.Tensor:
        ctx.fmt = (word_length, frac_length, backward_rounding)
        return ak.round_fixed_point(x, word_length, frac_length, forward_rounding)  # type: ignore[arg-type]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        wl, fl, rounding = ctx.fmt
        batch = grad.shape[0]
        return ak.round_fixed_point(grad * batch, wl, fl, rounding) / batch, None, None, None, None


class FixedPointLinear(nn.Linear):
    """``nn.Linear`` computing ``Round(W x + b)``: the dot products accumulated in fp32 and rounded once
    into ``<IL, FL>`` (``rounding`` while training, to nearest at test time); its backward pass rounds
    the propagated error with ``rounding``."""

    word_length: int = 16
    frac_length: int = 8
    rounding: Rounding = "stochastic"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.rounding if self.training else "nearest"
        return RoundThrough.apply(F.linear(x, self.weight, self.bias), self.word_length, self.frac_length,
                                  mode, self.rounding)


def fixed_point_layers(model: nn.Module) -> list[FixedPointLinear]:
    return [m for m in model.modules() if isinstance(m, FixedPointLinear)]


@torch.no_grad()
def round_parameters(model: nn.Module) -> None:
    """Every fixed-point layer's weights and bias rounded into its format with its rule (the SGD
    update ``w - lr * g`` computed in fp32 and stored back in ``<IL, FL>``): the ``after_step`` hook."""
    for layer in fixed_point_layers(model):
        for p in (layer.weight, layer.bias):
            if p is not None:
                p.copy_(ak.round_fixed_point(p, layer.word_length, layer.frac_length, layer.rounding))


def to_fixed_point(model: nn.Module, word_length: int, frac_length: int, rounding: Rounding) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers compute in ``<WL - FL, FL>`` with ``rounding``,
    their parameters rounded into the format."""
    clone = controls.trainable_copy(model)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear) and not isinstance(child, FixedPointLinear):
                new = FixedPointLinear(child.in_features, child.out_features, bias=child.bias is not None)
                new.load_state_dict(child.state_dict())
                new.word_length, new.frac_length, new.rounding = word_length, frac_length, rounding
                setattr(parent, name, new.to(child.weight.device))
            else:
                swap(child)

    swap(clone)
    round_parameters(clone)
    return clone


def train_fixed_point(run: Run, initial: nn.Module, word_length: int, frac_length: int,
                      rounding: Rounding) -> nn.Module:
    """Sec. 3-4: the initial network converted to ``<WL - FL, FL>`` and trained by SGD in the format."""
    run.reseed(f"fixed point <{word_length - frac_length},{frac_length}> {rounding}")
    model = to_fixed_point(initial, word_length, frac_length, rounding)
    return run.train(model, run.dataset().train, run.train_config("train"),
                     desc=f"<{word_length - frac_length},{frac_length}> {rounding}", after_step=round_parameters)


# ------------------------------------------------------------------------------------- storage
def encode_parameters(model: nn.Module) -> dict[str, ak.FixedPointWeight]:
    """The trained network's parameters as stored: each weight ``[N, K]`` and bias (as ``[1, n]``) in
    its layer's format, ``WL``-bit codes packed in int32 words (``atlas_kernels.encode_fixed_point``);
    exact, since training left them on the grid."""
    out: dict[str, ak.FixedPointWeight] = {}
    for name, layer in model.named_modules():
        if isinstance(layer, FixedPointLinear):
            for pname, p in (("weight", layer.weight), ("bias", layer.bias)):
                if p is not None:
                    out[f"{name}.{pname}"] = ak.encode_fixed_point(p.detach().reshape(p.shape[0] if p.dim() == 2
                                                                                      else 1, -1),
                                                                   layer.word_length, layer.frac_length)
    return out


def fixed_point_storage(model: nn.Module) -> list[measure.Encoded]:
    """The bytes of every encoded parameter; anything else (none in the MLP) in fp32."""
    encoded = encode_parameters(model)
    parts = [measure.encoded(n, q, f"{q.word_length}-bit fixed point <{q.int_length},{q.frac_length}>")
             for n, q in encoded.items()]
    return parts + measure.fp32_parts(model, skip=sorted(encoded))


def word_length_curve(run: Run, initial: nn.Module, int_length: int, word_lengths: Sequence[int],
                      rounding: Rounding) -> tuple[controls.Series, dict[int, nn.Module]]:
    """The network trained at each word length (``FL = WL - IL``) with ``rounding``: its test
    accuracies as a curve, and the trained networks."""
    data = run.dataset()
    trained = {wl: train_fixed_point(run, initial, wl, wl - int_length, rounding) for wl in word_lengths}
    label = f"fixed-point training, {'stochastic rounding' if rounding == 'stochastic' else 'round-to-nearest'}"
    points = {float(wl): run.accuracy(m, data.test) for wl, m in trained.items()}
    return controls.Series(label, controls.BITS, controls.ACCURACY, points), trained


@reproduction("gupta2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    fp = cfg.fixed_point
    data = run.dataset()
    initial = run.model("mlp", hidden=cfg.hidden)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32 baseline")
    base_acc = run.accuracy(baseline, data.test)

    low = fp.rounding_frac_length + fp.int_length  # the rounding claim's word length
    sr_curve, sr_models = word_length_curve(run, initial, fp.int_length,
                                            sorted({*fp.curve_word_lengths, fp.word_length, low}), "stochastic")
    rn_curve, _ = word_length_curve(run, initial, fp.int_length, sorted({*fp.nearest_word_lengths, low}), "nearest")
    curves = [sr_curve, rn_curve, controls.quantization_curve(run, baseline, fp.curve_word_lengths, None)]

    arch = "-".join(map(str, [math.prod(data.input_shape), *cfg.hidden, data.num_classes]))
    differs = (f"MLP {arch} (paper: 784-1000-1000-10), {cfg.train.steps} plain-SGD steps of batch "
               f"{cfg.train.batch_size} (lr {cfg.train.lr}, cosine) for every network from the same initial "
               f"weights; IL = {fp.int_length} for weights, layer outputs and errors; inputs not rounded")
    spec = {"hidden": list(cfg.hidden)}

    wl = fp.word_length
    model16 = sr_models[wl]
    parts = fixed_point_storage(model16)
    bits = measure.storage_bits(parts)
    acc16 = sr_curve.points[float(wl)]
    run.record("mnist-fc-16bit-stochastic", model=f"MLP {arch}, <{fp.int_length},{wl - fp.int_length}> "
               "fixed point, stochastic rounding",
               metrics={**measure.accuracy_change(base_acc, acc16), "params": measure.count_params(model16),
                        "storage_bits": bits, "storage_compression": measure.dense_bits(baseline) / bits},
               differs=differs, baseline=("mlp", "baseline_accuracy"), baseline_spec=spec, curves=curves)

    sr, rn = sr_curve.points[float(low)], rn_curve.points[float(low)]
    run.record("mnist-fc-rounding", model=f"MLP {arch}, <{fp.int_length},{fp.rounding_frac_length}> fixed point, "
               "stochastic rounding vs round-to-nearest",
               metrics={"baseline_accuracy": base_acc, "stochastic_accuracy": sr, "nearest_accuracy": rn,
                        "rounding_gain_pp": sr - rn, "nearest_accuracy_change_pp": rn - base_acc,
                        "accuracy_change_pp": sr - base_acc},
               differs=differs, baseline=("mlp", "baseline_accuracy"), baseline_spec=spec)
