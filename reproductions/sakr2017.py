"""Analytical Guarantees on Numerical Precision of Deep Neural Networks (Sakr, Kim & Shanbhag, ICML 2017,
PMLR 70:3007-3016; no arXiv version).

Method: a trained floating-point network is run in fixed point, every weight and every activation
(the input of every layer) rounded to ``B`` bits. The question is the *mismatch probability* ``p_m``:
the probability that the fixed-point network's decision differs from the floating-point network's.
Model each rounding as an independent error uniform on ``[-Delta/2, Delta/2]`` (variance
``Delta^2 / 12``), small enough that the outputs respond linearly. For an input with floating-point
decision ``y`` and any other class ``i``, the margin ``D_i = Z_i - Z_y < 0`` of the outputs ``Z`` moves
by a zero-mean error whose variance is ``sum_h (Delta_h^2 / 12) |dD_i/dh|^2`` over every quantized
quantity ``h``; the decision flips to ``i`` only if that error exceeds ``|D_i|``, which for a
symmetric error has probability at most half its variance over ``D_i^2`` (Chebyshev). A union bound
over the classes and the expectation over the inputs give

``p_m <= sum_layers Delta_A^2 E_A + Delta_W^2 E_W``, ``E_A = E[ sum_{i != y} ||dD_i/dA||^2 / (24 D_i^2) ]``

(``E_W`` the same over the weights): noise gains that one back-propagation of each margin ``D_i``
computes (:func:`noise_gains`), with no fixed-point simulation. The paper states it with one step
``Delta_A = 2^-(B_A - 1)`` for all activations and ``Delta_W = 2^-(B_W - 1)`` for all weights (numbers
in ``[-1, 1)``); here each tensor keeps its own range (``IL`` integer bits, the sign included, the
fewest that hold its largest magnitude) and ``B`` bits, step ``Delta = 2^(IL - B)``, and the bound sums
each tensor's term (it reduces to the paper's when every range is ``[-1, 1)``). The gradient of a
weight of a fully-connected layer for one input is the outer product of the layer's back-propagated
error and its input, so ``||dD/dW||^2 = ||dD/dz||^2 ||a||^2``. The fixed-point network rounds each
weight and each layer input to nearest with the atlas's fixed-point kernel
(``atlas_kernels.round_fixed_point`` at word length ``B``, fractional length ``B - IL``).

Claims (the abstract, read on the PMLR page; the paper's body, its theorems' exact statement, its
figures and its comparison with binarized networks could not be read here, so no number of the paper
is checked; the bound above is derived from the stated model): (1) ``mismatch-bound``: "we present
theoretical bounds on the accuracy in presence of limited precision ... these bounds can be computed
via the back-propagation algorithm": checked as ``bound_violations``, the number of precisions of
the curve at which the measured mismatch probability (the fixed-point network against the same
floating-point network on the test set) exceeds the bound: 0; (2) ``minimum-precision``: "we are
able to readily determine the minimum precision needed to preserve accuracy without having to resort
to time-consuming fixed-point simulations": the smallest ``B`` whose bound is at most the target
mismatch (1%, chosen here) is chosen from the bound alone; checked as ``accuracy_change_pp`` of the
fixed-point network at that ``B`` (searched from 2 to 16 bits) against the floating-point network,
above -1 pp.

Recorded: per precision ``B``, ``bound_pct_{B}bit`` and ``mismatch_pct_{B}bit`` (percent of test
inputs), ``bound_violations``, ``bound_slack_pp`` (the bound minus the measured mismatch, the smallest
over the precisions, percentage points) (claim 1); ``chosen_bits`` (from the bound), ``simulated_bits`` (the
smallest ``B`` whose measured mismatch is within the target, found by simulation),
``precision_overhead_bits`` (their difference: what the bound's guarantee costs), ``mismatch_pct`` at
the chosen ``B``, ``baseline_accuracy``, ``accuracy``, ``accuracy_change_pp`` (claim 2). The curve
(claim 2): the fixed-point network's test accuracy at each ``B`` (weights and activations) beside the
floating-point network's weights uniformly quantized after training (``controls.quantization_curve``,
weights only; neither trains after the floating-point network).

Quick result (3 seeds): the bound holds at every precision from 4 to 12 bits on every seed (claim 1
reproduced), but it is loose: 20 to 60,000 times the measured mismatch (at 8 bits it bounds the
mismatch by 167-1113% where 0.2-0.4% is measured; at 12 bits by 0.7-4.3% for 0.02-0.03%). The
expectation of ``1 / D_i^2`` is dominated by the few test inputs whose margin is nearly zero. So the
precision the bound chooses for 1% (12-14 bits) keeps the accuracy (claim 2 reproduced: within 0.02 pp)
but is 5-7 bits above the 7 bits that simulation finds (``precision_overhead_bits``): the guarantee
holds, at a cost the abstract does not state and that the paper's figures (not read) may show
smaller on its networks. The quick budget leaves the float network about 1.6 pp below its
long-schedule reference, so the accuracy check can pass but not fail.

Harness differs: Fashion-MNIST and the harness MLP 784-256-256-10 with ReLU in the quick profile (the
paper: MNIST and CIFAR-10 networks, not read here); one ``B`` for weights and activations (the paper
also chooses ``B_A`` and ``B_W`` apart); each tensor's integer bits from its largest magnitude (weights)
or from its largest value on the first training examples (activations), not the paper's ``[-1, 1)``;
the biases stay fp32; the expectation is the mean over the test set, on which the mismatch is measured.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, reproduction


class Precision(Section):
    curve_bits: list[PositiveInt]  # the precisions B at which the bound and the mismatch are compared (>= 3)
    target_mismatch: float = Field(gt=0, lt=1)  # the mismatch probability the chosen precision must guarantee
    calibration_examples: PositiveInt  # training examples that fix each activation's range


class Config(Profile):
    hidden: list[PositiveInt]  # the MLP's hidden widths
    precision: Precision
    train: TrainConfig  # the floating-point network


PRECISION = {"curve_bits": [4, 5, 6, 7, 8, 10, 12], "target_mismatch": 0.01, "calibration_examples": 2000}

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "hidden": [64, 64], "precision": PRECISION,
        "train": {"steps": 200, "batch_size": 64, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine"},
    },
    "quick": {
        # 2,000 Adam steps of batch 100 (3.3 passes over Fashion-MNIST); the bound and the fixed-point
        # networks need no training.
        "dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256], "precision": PRECISION,
        "train": {"steps": 2000, "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
    },
    "paper": {
        # MNIST, a fully-connected network (the paper's sizes and schedule were not read here).
        "dataset": "mnist", "seeds": 3, "hidden": [512, 512], "precision": PRECISION,
        "train": {"steps": 30000, "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
    },
}


# ---------------------------------------------------------------------------------- the network
def linear_layers(model: nn.Module) -> list[nn.Linear]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not isinstance(model, nn.Sequential) or any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise TypeError("the analysis here runs a fully-connected nn.Sequential (the harness MLP)")
    return layers


def forward(model: nn.Sequential, x: torch.Tensor, formats: dict[int, tuple[int, int]] | None = None,
            bits: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The network's logits, every fully-connected layer's input ``a_l`` and output ``z_l``; with
    ``formats`` (layer index -> integer bits of its input and of its weight) and ``bits``, each input and
    weight rounded to ``bits``-bit fixed point first."""
    inputs, outputs, index = [], [], 0
    for module in model:
        if isinstance(module, nn.Linear):
            w = module.weight
            if formats is not None and bits is not None:
                il_a, il_w = formats[index]
                x = ak.round_fixed_point(x, bits, bits - il_a)
                w = ak.round_fixed_point(w, bits, bits - il_w)
            inputs.append(x)
            x = F.linear(x, w, module.bias)
            outputs.append(x)
            index += 1
        else:
            x = module(x)
    return x, inputs, outputs


def integer_bits(largest: float) -> int:
    """``IL``, the sign included: the fewest integer bits whose range ``[-2^(IL-1), 2^(IL-1))`` holds
    ``largest`` (``IL`` may be 0 or negative for a range below 1/2)."""
    if largest <= 0:
        return 1
    return math.floor(math.log2(largest)) + 2


@torch.no_grad()
def formats_of(model: nn.Sequential, calibration: torch.Tensor) -> dict[int, tuple[int, int]]:
    """Each layer's integer bits: of its input (the largest magnitude on ``calibration``) and of its
    weight (the largest weight magnitude)."""
    _, inputs, _ = forward(model, calibration)
    return {i: (integer_bits(float(a.abs().max())), integer_bits(float(layer.weight.abs().max())))
            for i, (a, layer) in enumerate(zip(inputs, linear_layers(model), strict=True))}


# ------------------------------------------------------------------------------ the noise gains
def noise_gains(model: nn.Sequential, x: torch.Tensor, batch: int = 1000) -> tuple[list[float], list[float]]:
    """Per layer, ``E_A`` (its input) and ``E_W`` (its weight): the mean over ``x`` of
    ``sum_{i != y} ||dD_i/dh||^2 / (24 D_i^2)``, ``D_i = Z_i - Z_y`` the margin of class ``i`` to the
    floating-point decision ``y``; ``||dD_i/dW||^2 = ||dD_i/dz||^2 ||a||^2`` per input."""
    model.eval()
    n_layers = len(linear_layers(model))
    e_a, e_w = [0.0] * n_layers, [0.0] * n_layers
    for start in range(0, len(x), batch):
        xb = x[start : start + batch].detach().clone().requires_grad_(True)
        logits, inputs, outputs = forward(model, xb)
        y = logits.argmax(1)
        classes = logits.shape[1]
        rows = torch.arange(len(xb))
        for shift in range(1, classes):
            other = (y + shift) % classes
            d = logits[rows, other] - logits[rows, y]
            grads = torch.autograd.grad(d.sum(), [*inputs, *outputs], retain_graph=True)
            scale = 1.0 / (24.0 * d.detach().pow(2).clamp_min(1e-30))
            for layer in range(n_layers):
                g_a = grads[layer].flatten(1).pow(2).sum(1)
                g_z = grads[n_layers + layer].pow(2).sum(1)
                a2 = inputs[layer].detach().flatten(1).pow(2).sum(1)
                e_a[layer] += float((g_a * scale).sum())
                e_w[layer] += float((g_z * a2 * scale).sum())
    return [v / len(x) for v in e_a], [v / len(x) for v in e_w]


def mismatch_bound(e_a: Sequence[float], e_w: Sequence[float], formats: dict[int, tuple[int, int]],
                   bits: int) -> float:
    """``sum_l Delta_A,l^2 E_A,l + Delta_W,l^2 E_W,l`` with ``Delta = 2^(IL - B)``: the bound on the
    mismatch probability at ``B`` bits (a union bound: it may exceed 1)."""
    return sum(4.0 ** (formats[i][0] - bits) * e_a[i] + 4.0 ** (formats[i][1] - bits) * e_w[i]
               for i in range(len(e_a)))


@torch.no_grad()
def measured_mismatch(model: nn.Sequential, x: torch.Tensor, formats: dict[int, tuple[int, int]],
                      bits: int) -> tuple[float, torch.Tensor]:
    """The fraction of ``x`` on which the ``bits``-bit fixed-point network decides otherwise than the
    floating-point one, and the fixed-point decisions."""
    ref = forward(model, x)[0].argmax(1)
    fixed = forward(model, x, formats, bits)[0].argmax(1)
    return float((fixed != ref).float().mean()), fixed


def chosen_precision(values: dict[int, float], target: float) -> int:
    """The smallest precision whose value (the bound, or the measured mismatch) is within ``target``;
    the largest precision when none is."""
    within = [b for b, v in sorted(values.items()) if v <= target]
    return within[0] if within else max(values)


@reproduction("sakr2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    p = cfg.precision
    data = run.dataset()
    initial = run.model("mlp", hidden=cfg.hidden)
    model = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="float network").eval()
    base_acc = run.accuracy(model, data.test)
    x_test, y_test = data.test.x, data.test.y

    formats = formats_of(model, data.train.x[: p.calibration_examples])
    e_a, e_w = noise_gains(model, x_test)
    bits = sorted(p.curve_bits)
    bound = {b: mismatch_bound(e_a, e_w, formats, b) for b in bits}
    measured, accuracy = {}, {}
    for b in bits:
        measured[b], decisions = measured_mismatch(model, x_test, formats, b)
        accuracy[b] = 100.0 * float((decisions == y_test).float().mean())

    arch = "-".join(map(str, [math.prod(data.input_shape), *cfg.hidden, data.num_classes]))
    differs = (f"MLP {arch} (ReLU), {cfg.train.steps} Adam steps of batch {cfg.train.batch_size}; one precision B "
               "for weights and layer inputs, each tensor's integer bits from its own range; biases fp32; "
               "the bound's expectation and the mismatch over the test set")
    spec = {"hidden": list(cfg.hidden)}
    per_bit = {}
    for b in bits:
        per_bit[f"bound_pct_{b}bit"] = 100.0 * bound[b]
        per_bit[f"mismatch_pct_{b}bit"] = 100.0 * measured[b]
    violations = sum(measured[b] > bound[b] for b in bits)
    slack = min(100.0 * (bound[b] - measured[b]) for b in bits)
    run.record("mismatch-bound", model=f"MLP {arch}, fixed-point weights and activations at {bits[0]}-{bits[-1]} bits",
               metrics={"baseline_accuracy": base_acc, **per_bit, "bound_violations": violations,
                        "bound_slack_pp": slack},
               differs=differs, baseline=("mlp", "baseline_accuracy"), baseline_spec=spec)

    # the bound is analytic: search every word length the fixed-point kernel stores (2..16 bits)
    chosen = chosen_precision({b: mismatch_bound(e_a, e_w, formats, b) for b in range(2, 17)}, p.target_mismatch)
    simulated = chosen_precision(measured, p.target_mismatch)
    if chosen not in accuracy:  # the bound chose a precision outside the curve
        measured[chosen], decisions = measured_mismatch(model, x_test, formats, chosen)
        accuracy[chosen] = 100.0 * float((decisions == y_test).float().mean())
    curves = [controls.Series("fixed-point weights and activations (no retraining)", controls.BITS,
                              controls.ACCURACY, {float(b): accuracy[b] for b in bits}),
              controls.quantization_curve(run, model, bits, None)]
    run.record("minimum-precision", model=f"MLP {arch}, fixed point at the precision the bound chooses "
               f"(mismatch <= {100 * p.target_mismatch:g}%)",
               metrics={"baseline_accuracy": base_acc, "accuracy": accuracy[chosen],
                        "accuracy_change_pp": accuracy[chosen] - base_acc, "chosen_bits": chosen,
                        "simulated_bits": simulated, "precision_overhead_bits": chosen - simulated,
                        "mismatch_pct": 100.0 * measured[chosen],
                        "bound_pct": 100.0 * mismatch_bound(e_a, e_w, formats, chosen)},
               differs=differs, baseline=("mlp", "baseline_accuracy"), baseline_spec=spec, curves=curves)
