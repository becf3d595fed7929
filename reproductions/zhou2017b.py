"""Balanced Quantization: An Effective and Efficient Approach to Quantized Neural Networks (Zhou, Wang,
Wen, He & Zou, Journal of Computer Science and Technology 32(4), 2017; arXiv:1706.07145).

Only the abstract could be read here (arXiv:1706.07145v1, the JCST page and its mirrors); the method
section, its algorithms and tables were not. What follows is the abstract's method, made concrete where
the abstract is silent (each such choice is marked "chosen here").

Method (Abstract): uniform quantization "determined from extremal values" spreads the ``2^k`` levels
evenly over ``[min w, max w]``; since weights are bell-shaped, most of them fall into a few central
levels and the bit-width is under-used. Balanced quantization "first recursively partitions the
parameters by percentiles into balanced bins, and then applies uniform quantization":

- **Recursive percentile partition**: split a layer's weights at their median, then each half at its
  own median, ``k`` times: ``2^k`` bins holding ``n / 2^k`` weights each (up to one weight a split when
  ``n`` is not divisible). Bin ``c`` (in order of value) holds the weights between the percentiles
  ``c / 2^k`` and ``(c + 1) / 2^k``: the bins of a histogram equalisation ``w -> F(w)`` with ``F`` the
  empirical CDF, whose uniform ``k``-bit quantization ``floor(2^k F(w))`` is the bin index
  (:func:`balanced_codes`).
- **Uniform levels**: bin ``c`` is represented by the uniform level ``g_c = 2 c / (2^k - 1) - 1`` in
  ``[-1, 1]`` times one scale ``alpha`` per layer, so the quantized layer is an ordinary ``k``-bit uniform
  code (multiplications become bit operations; no extra inference cost, as the abstract says). The scale
  is the least-squares one, ``alpha = <w, g> / <g, g>`` (chosen here: the abstract does not say how the
  levels are scaled back).
- **Training** (chosen here; the abstract does not describe it): straight-through, the forward pass with
  the quantized weights, the step taken at ``q(w)`` applied to the full-precision ``w`` (the percentiles
  recomputed every step), the same scheme as the atlas's uniform-quantization control. The paper is by
  DoReFa-Net's authors and may train as DoReFa-Net does (reproductions/zhou2016b.py), but that could not
  be confirmed from the text read, so this file does not import it. Activations stay fp32 (weights only).

The unbalanced quantizer it is compared with (the abstract's "uniform quantization determined from
extremal values"): ``2^k`` levels spread evenly over ``[-max|w|, max|w|]``, codes
``round((w / max|w| + 1) / 2 (2^k - 1))`` (DoReFa-Net's weight grid without its ``tanh``), on the same
levels ``g_c`` with the same least-squares scale, so the two differ only in which weights share a level
(:func:`extremal_codes`).

Claims (Abstract, arXiv:1706.07145v1):

- ``imagenet-googlenet-4bit``: 12.7 % top-5 error of the 4-bit quantized GoogLeNet on ImageNet, "superior
  to the state-of-the-arts of QNNs": an absolute ImageNet number, not comparable here (no check).
- ``balanced-vs-uniform``: the method "improves the prediction accuracies of QNNs": read here as balanced
  quantization giving a higher test accuracy than the unbalanced (extremal-value) uniform quantizer at the
  same bit-width, both fine-tuned with the same straight-through steps from the same fp32 network.
  Checked on ``gain_over_unbalanced_pp``, the mean over the curve's bit-widths (2, 3, 4) of balanced minus
  unbalanced accuracy; the per-bit gains are ``gain_over_unbalanced_{k}bit_pp``.
- ``no-extra-inference-cost``: "without introducing extra computation during inference": the balanced
  layers are stored as plain ``k``-bit uniform codes with one scale and offset a layer
  (``atlas_kernels.LowBitWeight``, affine scheme; decoded ``(c - (2^k - 1)/2) 2 alpha / (2^k - 1)``,
  exactly the quantized weights: tested). Checked on ``weight_storage_compression`` at 2 bits (32 bits a
  weight over the packed 2-bit codes with their scales: 16 minus the scales' share).

What is measured: ``baseline_accuracy`` (the fp32 network), ``accuracy`` / ``accuracy_change_pp`` (balanced,
2 bits), ``accuracy_{k}bit``, ``unbalanced_accuracy_{k}bit``, ``control_gain_{k}bit_pp`` (balanced minus
the atlas's clipped uniform control, same steps), ``post_training_gain_{k}bit_pp`` (balanced minus
unbalanced with no fine-tuning), ``code_entropy_bits_{k}bit`` and ``unbalanced_code_entropy_bits_{k}bit``
(the entropy of the codes' histogram over the quantized layers, bits a weight: the share of the bit-width
actually used, the abstract's "under utilize"), ``storage_bits``, ``storage_compression`` and
``weight_storage_compression`` (2 bits). The curve: balanced quantization at 2, 3 and 4 bits beside the
unbalanced quantizer and :func:`atlas.harness.controls.quantization_curve` (per-layer symmetric grid with
the least-squares clipping), each fine-tuned for the same steps from the same fp32 network.

Harness differs: no ImageNet GoogLeNet / Penn Treebank RNN: LeNet-300-100 on Fashion-MNIST, every
fully-connected weight quantized (first and last layer included), activations fp32. One fp32 network per
profile (seed 0; cached), then per seed and bit-width the same number of straight-through fine-tuning
steps for each quantizer.

Quick verdict (3 seeds; 46 s of one CPU thread, 132 s wall on the shared 2-core machine at load 9.6):
both checked claims reproduced. ``balanced-vs-uniform``: balanced beats the extremal-value quantizer by
0.61 pp [0.47, 0.75] on the mean over 2, 3 and 4 bits (fp32 LeNet-300-100 88.8 %, 0.9 pp below its long
reference). The gain is all at 2 bits (+1.95 pp; 3 bits +0.13, 4 bits -0.24), where the extremal grid
leaves half the levels nearly empty (code entropy 1.0 of 2 bits; 2.0 of 4 at 4 bits; balanced: all of
them); without fine-tuning it is +5.7 pp at 2 bits but -0.9 and -3.7 pp at 3 and 4 bits (equal-count
bins put coarse levels on the tails). The atlas's clipped uniform control, at the same steps, is as good
as balanced at 2 bits (0.00 pp) and 0.3-0.6 pp better at 3 and 4 bits: balanced quantization fixes the
extremal-value grid's waste, as the abstract says, but here no better than choosing the clipping range.
``no-extra-inference-cost``: the 2-bit balanced layers are packed uniform codes, 15.96x smaller than fp32
(the whole model 15.6x, biases fp32).
"""

from __future__ import annotations

from collections.abc import Callable

import atlas_kernels as ak
import torch
from pydantic import Field
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

MODEL = "lenet-300-100"


class Quantization(Section):
    bits: list[int] = Field(min_length=3)  # the curve's bit-widths (the abstract's example: 4)
    checked_bits: int = Field(ge=1, le=8)  # the bit-width of the storage check and the headline accuracy
    finetune: TrainConfig  # straight-through steps from the fp32 network, the same for every quantizer


class Config(Profile):
    dense: TrainConfig  # the fp32 network every quantizer starts from (trained once, seed 0)
    quantization: Quantization


def _adam(steps: int, lr: float, batch: int = 128) -> dict:
    return {"steps": steps, "batch_size": batch, "optimizer": "adam", "lr": lr, "schedule": "cosine"}


PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "dense": _adam(150, 0.003, 64),
              "quantization": {"bits": [2, 3, 4], "checked_bits": 2, "finetune": _adam(20, 0.001, 64)}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "dense": _adam(3000, 0.001),
              "quantization": {"bits": [2, 3, 4], "checked_bits": 2, "finetune": _adam(50, 0.0005)}},
    "paper": {
        # no ImageNet here; MNIST with the fp32 network trained to convergence and a 10 % fine-tuning
        # budget per quantizer (schedule not read in the paper)
        "dataset": "mnist", "seeds": 3, "dense": _adam(20000, 0.001),
        "quantization": {"bits": [2, 3, 4], "checked_bits": 2, "finetune": _adam(2000, 0.0002)},
    },
}


# ------------------------------------------------------------------------------ the quantizers
def balanced_codes(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The recursive percentile partition: ``bits`` rounds of splitting every bin at its median (the
    lower ``ceil(m / 2)`` of its ``m`` weights in order of value, ties in order of position, go down);
    returns each weight's bin ``0 .. 2^bits - 1``. One sort gives every round's medians."""
    flat = w.detach().reshape(-1)
    n = flat.numel()
    bins = [(0, n)]  # each bin as a range of positions in sorted order
    for _ in range(bits):
        bins = [half for a, b in bins for half in ((a, a + (b - a + 1) // 2), (a + (b - a + 1) // 2, b))]
    sizes = torch.tensor([b - a for a, b in bins])
    by_rank = torch.repeat_interleave(torch.arange(2**bits), sizes).to(flat.device)
    codes = torch.empty(n, dtype=torch.int64, device=flat.device)
    codes[torch.argsort(flat, stable=True)] = by_rank
    return codes.view_as(w)


def extremal_codes(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The unbalanced quantizer: ``2^bits`` levels spread evenly over ``[-max|w|, max|w|]`` (the extremal
    value sets the range), ``round((w / max|w| + 1) / 2 (2^k - 1))``."""
    w = w.detach()
    top = w.abs().max().clamp(min=1e-30)
    levels = 2**bits - 1
    return torch.round((w / top + 1) / 2 * levels).clamp(0, levels).to(torch.int64)


def level_step(w: torch.Tensor, codes: torch.Tensor, bits: int) -> torch.Tensor:
    """The step ``s = 2 alpha / (2^k - 1)`` between levels, ``alpha`` the least-squares scale of the grid
    ``g = 2 c / (2^k - 1) - 1``; the quantized weight is ``(c - (2^k - 1) / 2) s``."""
    centred = codes.to(torch.float32) - (2**bits - 1) / 2.0
    s = (w.detach().float() * centred).sum() / centred.pow(2).sum().clamp(min=1e-30)
    return s.reshape(1)


def dequantize(codes: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """``(c - (2^k - 1) / 2) s``, computed as ``atlas_kernels`` decodes it (bit for bit)."""
    return (codes.to(torch.float32) - torch.tensor((2**bits - 1) / 2.0)) * step.float()


Coder = Callable[[torch.Tensor, int], torch.Tensor]


def quantize(w: torch.Tensor, bits: int, coder: Coder = balanced_codes) -> torch.Tensor:
    """``w`` balanced-quantized to ``bits`` (or with another ``coder``, e.g. :func:`extremal_codes`)."""
    c = coder(w, bits)
    return dequantize(c, level_step(w, c, bits), bits).to(w.dtype)


def code_entropy(codes: torch.Tensor, bits: int) -> float:
    """Entropy of the codes' histogram, bits a weight (``bits`` when every level holds as many)."""
    p = torch.bincount(codes.reshape(-1), minlength=2**bits).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log2()).sum())


# ------------------------------------------------------------------------------ training
def quantized_network(run: Run, dense: nn.Module, bits: int, coder: Coder, finetune: TrainConfig | None,
                      desc: str = "") -> nn.Module:
    """A copy of ``dense`` with every fully-connected / conv weight quantized by ``coder``, fine-tuned
    straight-through (forward at ``q(w)``, the step applied to ``w``); ``None``: post-training."""
    model = controls.trainable_copy(dense)
    names = controls.weight_names(model)
    saved: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def before(m: nn.Module) -> None:
        p = dict(m.named_parameters())
        for n in names:
            full = p[n].detach().clone()
            q = quantize(full, bits, coder)
            p[n].copy_(q)
            saved[n] = (full, q)

    @torch.no_grad()
    def after(m: nn.Module) -> None:
        p = dict(m.named_parameters())
        for n, (full, q) in saved.items():
            p[n].copy_(full + (p[n] - q))

    if finetune is not None:
        run.reseed(f"zhou2017b finetune {bits}")  # the same data order for every quantizer
        run.train(model, run.dataset().train, finetune, desc=desc, before_step=before, after_step=after)
    before(model)
    return model.eval()


def train_dense(run: Run) -> nn.Module:
    """The fp32 network, once per profile (seed 0) for every seed (cached)."""
    cfg = run.train_config("dense")

    def fit(model: nn.Module) -> None:
        run.reseed("zhou2017b dense", seed=0)
        run.train(model, run.dataset().train, cfg, desc="fp32 dense")

    return run.cached_model("zhou2017b-dense", {"model": MODEL, "dense": cfg.model_dump()},
                            build=lambda: run.model(MODEL), fit=fit, per_seed=False)


# ------------------------------------------------------------------------------ the deployed encoding
def encode(w: torch.Tensor, bits: int) -> ak.LowBitWeight:
    """A balanced layer as stored: packed ``bits``-bit codes, one step ``s`` and offset ``(2^k - 1) / 2``
    (``atlas_kernels``' affine scheme, per tensor; a conv as out x (in k k))."""
    w2 = w.detach().reshape(w.shape[0], -1).cpu()
    c = balanced_codes(w2, bits)
    step = level_step(w2, c, bits)
    return ak.LowBitWeight(ak.pack_codes(c, bits), step, torch.tensor([(2**bits - 1) / 2.0]), None, bits,
                           "affine", tuple(w2.shape))


def storage(model: nn.Module, bits: int) -> list[measure.Encoded]:
    names = controls.weight_names(model)
    params = dict(model.named_parameters())
    parts = [measure.encoded(n, encode(params[n], bits), f"{bits}-bit balanced codes") for n in names]
    return parts + measure.fp32_parts(model, skip=names)


@reproduction("zhou2017b", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    qcfg = run.config["quantization"]
    bits_list = [int(b) for b in qcfg["bits"]]
    kb = int(qcfg["checked_bits"])
    finetune = TrainConfig.from_dict(qcfg["finetune"])
    dense = train_dense(run)
    base_acc = run.accuracy(dense, data.test)

    bal: dict[int, float] = {}
    unb: dict[int, float] = {}
    models: dict[int, nn.Module] = {}
    for b in sorted(set(bits_list) | {kb}):
        models[b] = quantized_network(run, dense, b, balanced_codes, finetune, f"balanced {b}-bit")
        bal[b] = run.accuracy(models[b], data.test)
        unb[b] = run.accuracy(quantized_network(run, dense, b, extremal_codes, finetune, f"unbalanced {b}-bit"),
                              data.test)
    control = controls.quantization_curve(run, dense, bits_list, finetune)
    post = {b: run.accuracy(quantized_network(run, dense, b, balanced_codes, None), data.test)
            - run.accuracy(quantized_network(run, dense, b, extremal_codes, None), data.test)
            for b in bits_list}
    weights = [p.detach() for n, p in dense.named_parameters() if n in set(controls.weight_names(dense))]
    entropy = {b: sum(code_entropy(balanced_codes(w, b), b) * w.numel() for w in weights)
               / sum(w.numel() for w in weights) for b in bits_list}
    entropy_unb = {b: sum(code_entropy(extremal_codes(w, b), b) * w.numel() for w in weights)
                   / sum(w.numel() for w in weights) for b in bits_list}

    parts = storage(models[kb], kb)
    total = measure.storage_bits(parts)
    n_q = sum(p.numel() for p in weights)
    q_bits = sum(p.bits for p in parts if p.what.endswith("balanced codes"))
    gains = {b: bal[b] - unb[b] for b in bits_list}
    ft = qcfg["finetune"]
    differs = (f"{MODEL} on {run.config['dataset']} instead of ImageNet GoogLeNet / PTB RNNs; weights only "
               f"(activations fp32), every fc weight quantized; one fp32 network ({run.config['dense']['steps']} "
               f"Adam steps, seed 0) for all seeds; {ft['steps']} straight-through Adam steps per quantizer "
               "and bit-width; least-squares scale a layer for both quantizers (chosen here)")
    metrics = {
        **measure.accuracy_change(base_acc, bal[kb]),
        "gain_over_unbalanced_pp": sum(gains.values()) / len(gains),
        **{f"gain_over_unbalanced_{b}bit_pp": g for b, g in gains.items()},
        **{f"accuracy_{b}bit": a for b, a in bal.items()},
        **{f"unbalanced_accuracy_{b}bit": a for b, a in unb.items()},
        **{f"control_gain_{b}bit_pp": bal[b] - control.points[float(b)] for b in bits_list},
        **{f"post_training_gain_{b}bit_pp": g for b, g in post.items()},
        **{f"code_entropy_bits_{b}bit": e for b, e in entropy.items()},
        **{f"unbalanced_code_entropy_bits_{b}bit": e for b, e in entropy_unb.items()},
        "storage_bits": float(total),
        "storage_compression": measure.dense_bits(dense) / total,
        "weight_storage_compression": 32 * n_q / q_bits,
    }
    curves = [controls.Series("Balanced quantization", controls.BITS, controls.ACCURACY,
                              {float(b): bal[b] for b in bits_list}),
              controls.Series("Unbalanced (extremal-value) uniform quantization", controls.BITS,
                              controls.ACCURACY, {float(b): unb[b] for b in bits_list}),
              control]
    run.record("balanced-vs-uniform", model=f"{MODEL}, balanced {kb}-bit weights", metrics=metrics,
               differs=differs, baseline=(MODEL, "baseline_accuracy"), baseline_spec={}, curves=curves)
    run.record("no-extra-inference-cost", model=f"{MODEL}, balanced {kb}-bit weights as packed uniform codes",
               metrics={"storage_bits": float(total), "storage_compression": measure.dense_bits(dense) / total,
                        "weight_storage_compression": 32 * n_q / q_bits},
               differs=differs)
