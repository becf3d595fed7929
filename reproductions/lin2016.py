"""Fixed Point Quantization of Deep Convolutional Networks (Lin, Talathi & Annapureddy, ICML 2016;
arXiv:1511.06393).

Method: a trained network's layers are converted to fixed point, each layer ``i`` with its own word
length ``beta_i`` (bits) and fractional length. Each quantizer's error is modelled as noise whose
signal-to-quantization-noise ratio grows by ``kappa`` dB per bit, ``SQNR_i = kappa * beta_i + c_i``
(``kappa = 10 log10 4 ~ 6.02`` for a uniform quantizer), and the noises of the layers add up at the
output, ``1 / SQNR_out = sum_i 1 / SQNR_i`` (linear scale). Maximising the output SQNR for a model
size ``sum_i rho_i beta_i`` fixed (``rho_i``: the layer's parameters) with a Lagrange multiplier gives
``10^(-kappa beta_i / 10) ∝ rho_i``, i.e.

.. math:: \\beta_i - \\beta_j = \\frac{10 \\log_{10}(\\rho_j / \\rho_i)}{\\kappa}
          = \\tfrac12 \\log_2(\\rho_j / \\rho_i)

a layer with twice the parameters gets half a bit less (:func:`optimal_bit_widths`). Within a layer the
fixed-point step ``2^-FL`` is the power of two that maximises the layer's SQNR (the least squared
error over the candidate fractional lengths; :func:`best_frac_length`), and the weights are rounded
to nearest and saturated in ``<beta_i - FL, FL>``: the atlas's one fixed-point quantizer
(``atlas_kernels.encode_fixed_point``, shared with Gupta et al. 2015, whose training in fixed point
this paper's post-training conversion does not use, so nothing is imported from that file).

Claim (abstract, arXiv:1511.06393v3): "in comparison to equal bit-width settings, the fixed point DCNs
with optimized bit width allocation offer >20% reduction in the model size without any loss in
accuracy on CIFAR-10". Checked as ``cifar10-allocation``: the network with the optimised allocation,
its encoded weights at least 20% smaller than the equal allocation's at ``equal_bits`` bits
(``size_reduction``, from the packed codes of both), has an accuracy change against the equal
allocation (``accuracy_vs_equal_pp``) of at least -0.5 pp. The fine-tuned 6.78% CIFAR-10 error
(``cifar10-finetuned``) is not measured (no fine-tuning here, and an absolute error on another data
set is never compared).

Recorded: ``baseline_accuracy`` (fp32), ``equal_accuracy``, ``accuracy`` (optimised), ``accuracy_change_pp``
(optimised minus fp32), ``accuracy_vs_equal_pp``, ``equal_storage_bits``, ``storage_bits``,
``storage_compression``, ``size_reduction``, ``average_bits`` and one ``bits_<layer>`` per layer; and,
for the allocation chosen with the paper's count of the size (``sum_i rho_i beta_i``, no word
packing) at the same 20% budget, ``paper_count_accuracy_vs_equal_pp``, ``paper_count_size_reduction``
and ``paper_count_packed_size_reduction`` (the same allocation's packed codes). The
curve: the optimised allocation at average budgets of 3 to 6 bits (its encoded size over the weights
as x) and the equal allocation in fixed point at 3 to 6 bits, beside the fp32 network's weights
uniformly quantized at 3 to 6 bits (``controls.quantization_curve``, post-training: no retraining).

Harness differs: Fashion-MNIST and LeNet-300-100 (the paper: CIFAR-10 conv nets); weights only (the
paper allocates bits to activations as well); biases stay fp32 (both allocations); the allocation is
derived here from the SQNR model above as recalled from the paper's Sec. 3-4, whose text and Table 1
(optimal step sizes for Gaussian, Laplacian... inputs) could not be read here: the step is chosen by
the least squared error instead; bit widths are rounded to integers, then the average budget is
lowered in steps of 1/16 bit until the encoded size is at most ``1 - size_reduction`` of the equal
allocation's (the packed codes of 3, 5, 6 and 7 bits leave bits of a word unused).

Quick result (3 seeds, baseline converged): partly (the size check passes, the accuracy check
fails). The first allocation at least 20% smaller
than 4 bits everywhere as packed is [2, 4, 6] bits (44% smaller) and loses 3.7 pp against it; by the
paper's count the allocation [3, 4, 7] is 21.8% smaller and loses nothing, but it is 16.7% smaller as
packed (see ``DIAGNOSIS``). On the curve, at the same average bits the optimised allocation is at
least as accurate as equal widths (about +0.7 pp at 3 bits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import atlas_kernels as ak
import torch
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

KAPPA_DB_PER_BIT = 10 * math.log10(4)  # a uniform quantizer's SQNR gain per bit (~6.02 dB)


class Allocation(Section):
    equal_bits: int = Field(ge=2, le=16)  # the equal bit-width setting the claim compares against
    size_reduction: float = Field(gt=0, lt=1)  # Abstract: ">20%" smaller than the equal setting
    curve_bits: list[PositiveInt]  # the curve's average budgets / equal bit-widths (>= 3)
    min_bits: int = Field(ge=1, le=16)  # the narrowest word a layer may get
    max_bits: int = Field(ge=1, le=16)  # the widest (pack_codes: at most 16)


class Config(Profile):
    model: str  # the harness model
    train: TrainConfig  # the fp32 network that is converted
    allocation: Allocation


ALLOCATION = {"equal_bits": 4, "size_reduction": 0.2, "curve_bits": [3, 4, 5, 6], "min_bits": 2, "max_bits": 16}

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100", "allocation": ALLOCATION,
        "train": {"steps": 100, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
    },
    "quick": {
        # 3,000 Adam steps of batch 128 (6.4 passes over Fashion-MNIST); one training per seed, the
        # conversions are post-training
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100", "allocation": ALLOCATION,
        "train": {"steps": 3000, "batch_size": 128, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
    "paper": {
        # CIFAR-10 conv net (the harness's VGG-style net, not the paper's); schedule chosen here
        "dataset": "cifar10", "seeds": 3, "model": "vgg-small", "allocation": ALLOCATION,
        "train": {"steps": 40000, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4,
                  "schedule": "cosine"},
    },
}


# ---------------------------------------------------------------------------------- allocation
def layer_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight of every convolution and fully-connected layer, by parameter name."""
    params = dict(model.named_parameters())
    return {n: params[n] for n in controls.weight_names(model)}


def optimal_bit_widths(sizes: Sequence[int], average_bits: float, min_bits: int = 2,
                       max_bits: int = 16) -> list[int]:
    """The SQNR-optimal word lengths of layers with ``sizes`` parameters for the budget
    ``sum_i rho_i beta_i = average_bits * sum_i rho_i``: ``beta_i = average_bits + (10 / kappa) *
    (L - log10 rho_i)`` with ``L`` the parameter-weighted mean of ``log10 rho``, rounded to integers
    and clamped to ``[min_bits, max_bits]``."""
    total = sum(sizes)
    mean_log = sum(r * math.log10(r) for r in sizes) / total
    return [min(max_bits, max(min_bits, round(average_bits + 10 / KAPPA_DB_PER_BIT * (mean_log - math.log10(r)))))
            for r in sizes]


def best_frac_length(w: torch.Tensor, bits: int) -> int:
    """The fractional length whose ``<bits - FL, FL>`` grid (round to nearest, saturation) gives
    ``w`` the least squared error (the highest SQNR), among the lengths whose range reaches from
    ``max|w| / 64`` to twice ``max|w|``."""
    top = float(w.abs().max().clamp_min(1e-30))
    hi_il = math.ceil(math.log2(top)) + 2  # IL for a range of 2 max|w|, sign included
    candidates = range(bits - hi_il, bits - hi_il + 8)
    return min(candidates, key=lambda fl: float((ak.round_fixed_point(w, bits, fl) - w).pow(2).sum()))


def encode_layers(model: nn.Module, bits: Sequence[int]) -> dict[str, ak.FixedPointWeight]:
    """Each layer's weight (a convolution as ``[out, in*k*k]``) in fixed point at its word length,
    with its SQNR-optimal fractional length."""
    out = {}
    for (name, w), b in zip(layer_weights(model).items(), bits, strict=True):
        w2 = w.detach().reshape(w.shape[0], -1)
        out[name] = ak.encode_fixed_point(w2, b, best_frac_length(w2, b))
    return out


def encoded_bits(encoded: dict[str, ak.FixedPointWeight]) -> int:
    return sum(8 * q.storage_bytes() for q in encoded.values())


def with_weights(model: nn.Module, encoded: dict[str, ak.FixedPointWeight]) -> nn.Module:
    """A copy of ``model`` whose layer weights are the decoded fixed-point values."""
    clone = controls.trainable_copy(model).eval()
    params = dict(clone.named_parameters())
    with torch.no_grad():
        for name, q in encoded.items():
            params[name].copy_(q.dequantize().view_as(params[name]))
    return clone


def code_bits(model: nn.Module, bits: Sequence[int]) -> int:
    """The paper's count of a model's size: ``sum_i rho_i beta_i`` (no word packing)."""
    return sum(w.numel() * b for w, b in zip(layer_weights(model).values(), bits, strict=True))


def packed_bits(model: nn.Module, bits: Sequence[int]) -> int:
    """The size of the encoding: the packed codes' words (:func:`encode_layers`)."""
    return encoded_bits(encode_layers(model, bits))


def allocate_for_size(model: nn.Module, budget_bits: int, start: float, cfg: Allocation,
                      size: Callable[[nn.Module, Sequence[int]], int] = packed_bits) -> tuple[float, list[int]]:
    """The largest average budget (from ``start``, down in steps of 1/16 bit) whose optimal allocation
    has ``size`` at most ``budget_bits``: the budget and the word lengths."""
    sizes = [w.numel() for w in layer_weights(model).values()]
    avg = start
    while avg > cfg.min_bits:
        bits = optimal_bit_widths(sizes, avg, cfg.min_bits, cfg.max_bits)
        if size(model, bits) <= budget_bits:
            return avg, bits
        avg -= 1 / 16
    return avg, [cfg.min_bits] * len(sizes)


#: Why the allocation's accuracy check fails on the quick profile; shown beside the verdict.
DIAGNOSIS = """
The allocation (half a bit less for twice the parameters, from the SQNR model) and the per-layer
fixed-point grid were checked against the paper's stated objective; the fp32 baseline converged
(within 1 pp of its reference). The gap comes from the harness's network and the atlas's packing:
LeNet-300-100 keeps 88% of its weights in one layer, widths are integers, and 3-bit codes pack ten
to a 32-bit word (3.2 bits each). The allocation next to the 20% budget, [3, 4, 7] bits, is 21.8%
smaller than 4 bits everywhere by the paper's count (parameters x bits) and loses no accuracy
(+0.07 pp over the quick seeds; recorded as paper_count_*), but only 16.7% smaller as packed; the
first allocation 20% smaller as packed puts the large layer at 2 bits ([2, 4, 6], 44% smaller) and loses 3.7 pp. The atlas takes
the failure as the consequence of one dominant layer and packed storage, not as evidence against the
paper's allocation on its CIFAR-10 networks.
"""


@reproduction("lin2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    alloc = cfg.allocation
    data = run.dataset()
    dense = run.train(run.model(cfg.model), data.train, run.train_config("train"), desc="fp32")
    base_acc = run.accuracy(dense, data.test)
    names = list(layer_weights(dense))
    sizes = [w.numel() for w in layer_weights(dense).values()]
    bias_bits = measure.dense_bits(dense) - 32 * sum(sizes)  # biases and any other parameter, fp32

    def equal(bits: int) -> tuple[float, int]:
        enc = encode_layers(dense, [bits] * len(names))
        return run.accuracy(with_weights(dense, enc), data.test), encoded_bits(enc)

    eq_acc, eq_bits = equal(alloc.equal_bits)
    avg, bits = allocate_for_size(dense, int((1 - alloc.size_reduction) * eq_bits), alloc.equal_bits, alloc)
    opt = encode_layers(dense, bits)
    opt_bits = encoded_bits(opt)
    acc = run.accuracy(with_weights(dense, opt), data.test)
    # the same budget by the paper's count of the size (parameters x bits, no word packing)
    eq_code = code_bits(dense, [alloc.equal_bits] * len(names))
    _, paper_bits = allocate_for_size(dense, int((1 - alloc.size_reduction) * eq_code), alloc.equal_bits, alloc,
                                      size=code_bits)
    paper_enc = encode_layers(dense, paper_bits)
    paper_acc = run.accuracy(with_weights(dense, paper_enc), data.test)

    # the curve: encoded weight bits per weight as x for both allocations
    opt_points, eq_points = {}, {}
    for b in alloc.curve_bits:
        enc = encode_layers(dense, optimal_bit_widths(sizes, float(b), alloc.min_bits, alloc.max_bits))
        opt_points[float(b)] = run.accuracy(with_weights(dense, enc), data.test)
        eq_points[float(b)] = equal(b)[0]
    curves = [controls.Series("SQNR-optimal bit allocation (average bits)", controls.BITS, controls.ACCURACY,
                              opt_points),
              controls.Series("fixed point, equal bit-width", controls.BITS, controls.ACCURACY, eq_points),
              controls.quantization_curve(run, dense, alloc.curve_bits, None)]

    total = opt_bits + bias_bits
    metrics = {
        **measure.accuracy_change(base_acc, acc), "equal_accuracy": eq_acc, "accuracy_vs_equal_pp": acc - eq_acc,
        "equal_storage_bits": eq_bits + bias_bits, "storage_bits": total,
        "storage_compression": measure.dense_bits(dense) / total, "size_reduction": 1 - opt_bits / eq_bits,
        "paper_count_accuracy_vs_equal_pp": paper_acc - eq_acc,
        "paper_count_size_reduction": 1 - code_bits(dense, paper_bits) / eq_code,
        "paper_count_packed_size_reduction": 1 - encoded_bits(paper_enc) / eq_bits,
        "average_bits": avg, **{f"bits_{n.removesuffix('.weight').replace('.', '_')}": float(b)
                                for n, b in zip(names, bits, strict=True)},
    }
    run.record("cifar10-allocation",
               model=f"{cfg.model}, weights in per-layer fixed point (SQNR-optimal widths {bits} vs "
                     f"{alloc.equal_bits} bits each)",
               metrics=metrics, curves=curves, baseline=(cfg.model, "baseline_accuracy"), baseline_spec={},
               differs=f"harness {cfg.model} (the paper: CIFAR-10 conv nets), {cfg.train.steps} steps of batch "
                       f"{cfg.train.batch_size}; weights only, biases fp32; no fine-tuning; step by least squared "
                       "error; size from the packed codes",
               diagnosis=DIAGNOSIS)
