"""Trained Ternary Quantization (Zhu, Han, Mao & Dally, ICLR 2017; arXiv:1612.01064).

Method (Sec. 3, Fig. 1): every quantised layer ``l`` keeps full-precision *latent* weights ``w~_l``
and two trained full-precision scaling factors, ``W_l^p`` for its positive and ``W_l^n`` for its
negative weights. The latent weights are first normalised to ``[-1, +1]`` (each divided by the layer's
largest magnitude), then ternarised with the threshold

    Delta_l = t * max|w~_l|                    (Eq. 9; t = 0.05, the same for every layer)

into the layer's ternary weights

    w_l^t = +W_l^p  where w~_l >  Delta_l   (the set I_l^p)
             0      where |w~_l| <= Delta_l  (I_l^z)
            -W_l^n  where w~_l < -Delta_l   (I_l^n)

that the forward and backward propagations use. Back-propagation carries two gradients (Eq. 7-8): to
the scaling factors, ``dL/dW_l^p = sum_{i in I_l^p} dL/dw_l^t(i)`` and, since ``w_l^t = -W_l^n`` on
``I_l^n``, ``dL/dW_l^n = -sum_{i in I_l^n} dL/dw_l^t(i)`` (the derivative the released code computes
by automatic differentiation), which learns the ternary *values*; and to the latent weights, the
ternary weights' gradient scaled by the scale of the region each weight falls in,

    dL/dw~_l = W_l^p * dL/dw_l^t  on I_l^p,   1 * dL/dw_l^t  on I_l^z,   W_l^n * dL/dw_l^t  on I_l^n,

which learns the ternary *assignment* (a latent weight crosses the threshold). Only the 2-bit codes
and the two scales per layer are kept for inference: nearly 16x smaller than fp32. TTQ builds on
Ternary Weight Networks (``reproductions/li2016.py``): TWN's one scale ``alpha`` per layer is computed
from the weights (Eq. 6 there) and its threshold is ``0.7 E|W|``; TTQ trains two scales and takes a
threshold relative to the largest weight. The released code (czhu95/ternarynet, ``ternary.py``:
``tw_ternarize``) computes exactly these forward values and gradients and keeps the first convolution
and the last fully-connected layer in full precision (ResNets on CIFAR-10, AlexNet on ImageNet).

Claims (abstract, ICLR 2017 text; Table 1 values as the authors' README gives them): ternary ResNets
fine-tuned from full-precision ones on CIFAR-10 lose 0.64 pp (ResNet-20: error 8.23 -> 8.87 %) or gain
0.04 / 0.16 / 0.36 pp (ResNet-32 / 44 / 56) of accuracy, with models nearly 16x smaller since "only
ternary values (2-bit weights) and scaling factors are needed" (``cifar10-resnets``); AlexNet trained
from scratch on ImageNet gains 0.3 pp of top-1 accuracy over full precision (``imagenet-alexnet``, not
measured here). The fine-tuning claim is checked with ``accuracy_change_pp`` against the same
harness's full-precision network given the same steps, and ``weight_storage_compression`` from the
ternary layers' actual encoding.

What is measured (claim ``cifar10-resnets``): a full-precision network is trained (``dense``); from it,
with the same fine-tuning budget (``finetune``) and the same data order, (i) TTQ, (ii) TWN (li2016's
layers: its threshold and scale, the straight-through estimator; the same layers ternary) and (iii)
the full-precision network itself (the same-budget baseline, ``baseline_accuracy``). Metrics:
``accuracy`` / ``accuracy_change_pp`` (TTQ minus the same-budget full-precision network),
``dense_accuracy`` (the network fine-tuning started from), ``twn_accuracy`` and ``ttq_minus_twn_pp``
(TTQ minus TWN, paired by seed), ``weight_storage_compression`` (the ternary layers' fp32 weights over
their encoding: each layer's codes ``sign + 1`` packed at 2 bits in int32 words, one row of words per
output channel, with its fp32 ``W^p``, ``W^n`` and the encoding's fp32 zero point,
``atlas_kernels.encode_ternary`` with ``scale_neg``, the format its ``lowbit_matmul`` runs; it decodes
to exactly the weights the network propagates with), ``storage_bits`` / ``storage_compression`` (the
whole deployed model: those encodings and every other parameter, the fp32 first and last layers and
the biases, in fp32, against the fp32 network), ``zero_fraction`` (share of ternary weights that are
0) and ``scale_change_pct`` (how far training moved ``W^p`` and ``W^n`` from their start, mean over
layers, in percent). Curves: TTQ's one point at 2 bits (a ternary weight carries log2(3) = 1.58 bits
and is stored in 2) beside the uniform-quantization control
(:func:`atlas.harness.controls.quantization_curve`) at 8, 4 and 2 bits, from the same full-precision
network fine-tuned with the same budget (the control quantises every layer, the first and last
included; its 2-bit grid is itself ternary, ``{-s, 0, +s}`` with ``s = max|w|``).

Harness differs: the quick profile trains the harness LeNet-5 (Caffe's 20C5-MP2-50C5-MP2-500FC-10) at
half width on Fashion-MNIST, li2016's quick network, not ResNets on CIFAR-10 (far over a quick
profile's time on 2 CPU cores; the paper profile runs ResNet-20 on CIFAR-10). Its full-precision
network is trained once for all seeds (2,000 Adam steps of batch 100, 3.3 passes; cosine schedule),
so the seeds' spread is that of fine-tuning alone; fine-tuning is 300 steps of batch 32 per model and
seed (a sixth of a pass; the paper fine-tunes for many epochs; at about the same cost, 120 steps of
batch 100 left TTQ 0.9 pp below the baseline on seed 100, 400 steps of batch 32 0.4 pp). TWN's
same-budget fine-tuning (``compare_twn``) runs in the smoke and paper profiles only, for the quick
profile's time: with 400 fine-tuning steps from a network trained 2,500 steps at lr 0.002, TTQ ended 0.18 / 0.29 / 0.31 pp
below TWN on seeds 0-2 and 0.60 / 0.89 / 0.68 pp below the baseline. Fine-tuning uses Adam (the released
ImageNet script's optimizer) rather than the CIFAR script's SGD with momentum: without batch
normalisation a scale's gradient, a sum over every weight of its layer (Eq. 7), made SGD's steps on
``W^p`` / ``W^n`` diverge to NaN within five steps at lr 0.01 (smoke profile); Adam's steps are bounded
by its learning rate. As in the paper's networks the first and last layers stay fp32 (``fp32_ends``;
li2016 ternarises all four layers: with all of them ternary TTQ started at 64.6 % and ended 1.3 pp
below the baseline even after 1,500 fine-tuning steps on seed 100, TWN 0.9 pp). So the whole model
compresses 11.3x (the last layer is 2.3 % of LeNet-5's weights, 0.2 % of ResNet-20's), and the 16x
claim is checked on the ternary layers' weights. The released code initialises both scales to 1, on
networks with batch normalisation after every ternary layer (where a layer's scale does not matter);
the harness LeNet-5 has none, so here each scale starts at the value that makes the initial ternary
layer the least-squares approximation of the trained one for its assignment (TWN's Eq. 6 applied to
each sign: ``W^p = mean(w : w > Delta)``, ``W^n = mean(|w| : w < -Delta)``, in the layer's units); the
latent weights are normalised once, when TTQ starts (the threshold, relative to the largest latent
weight, follows it as it changes). The scales get no weight decay (the released code decays only the
latent weights).

Quick result (seeds 0-2, before publication): TTQ ends 0.70 pp below the same-budget fp32 network, 95 %
interval [-1.20, -0.21] pp: inconclusive against the 1 pp bound (the baseline is 0.65 pp below its
reference, converged); the ternary layers' encoding is 16.0x smaller than their fp32 weights (pass),
the whole model 11.3x. On the curve TTQ (89.4 %) is above the uniform 2-bit control (88.8 %) and below
the 4- and 8-bit ones (89.9 %, 90.0 %). TTQ's gap to the baseline shrinks with more fine-tuning steps
(above), which the quick profile's time does not give.
"""

from __future__ import annotations

from typing import Literal

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from atlas_reproductions.courbariaux2015 import (
    QuantizedConv2d,
    QuantizedLinear,
    quantize_layers,
    quantized_layers,
)
from atlas_reproductions.li2016 import TernaryConv2d, TernaryLinear, ternary_scale
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Ttq(Section):
    threshold_factor: float = Field(gt=0, lt=1)  # t of Eq. 9 (Sec. 4 and the released code: 0.05)
    fp32_ends: bool  # the first and last conv/fc layers stay fp32 (the released code's ResNets, AlexNet)


class Config(Profile):
    model: Literal["lenet-5", "resnet-20"]  # the harness model (paper profile: the paper's ResNet-20)
    lenet5_width: PositiveFloat = 1.0  # LeNet-5's width multiplier (li2016's quick profile: 0.5)
    dense_per_seed: bool  # False: one full-precision network (from seed 0) for every seed
    dense: TrainConfig  # the full-precision network TTQ starts from
    finetune: TrainConfig  # each of TTQ, TWN, the same-budget fp32 baseline and each control bit-width
    compare_twn: bool  # also fine-tune TWN (li2016) with the same budget
    ttq: Ttq
    control_bits: list[PositiveInt]  # the uniform-quantization control's bit-widths

    @model_validator(mode="after")
    def _width_is_lenet5s(self) -> Config:
        if self.model != "lenet-5" and self.lenet5_width != 1.0:
            raise ValueError("lenet5_width applies to lenet-5 only")
        return self


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    """A training section: SGD with momentum 0.9, weight decay 1e-4, cosine schedule."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 1e-4,
            "schedule": "cosine"}


def _adam(steps: int, lr: float, batch_size: int) -> dict:
    """A training section: Adam (the released ImageNet script's optimizer), cosine schedule."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "adam", "schedule": "cosine"}


TTQ = {"threshold_factor": 0.05}  # Eq. 9's t (Sec. 4: 0.05 on CIFAR-10 and ImageNet; official --t default)

PROFILES = {
    "smoke": {
        # li2016's smoke network and dense training (2 passes over digits' 1437 examples at batch 64),
        # then about one pass of fine-tuning per model
        "dataset": "digits", "seeds": 2, "model": "lenet-5", "lenet5_width": 1.0, "dense_per_seed": True,
        "dense": _sgd(45, 0.05, 64), "finetune": _adam(40, 0.001, 32), "compare_twn": True,
        "ttq": {**TTQ, "fp32_ends": True}, "control_bits": [8, 4, 2],
    },
    "quick": {
        # li2016's quick network (LeNet-5 at half width); one full-precision network for all seeds
        # (2,000 Adam steps of batch 100: 90.4 % on seeds 100 and 101, within 1 pp of the harness's
        # reference), then 300 fine-tuning steps of batch 32 (a sixth of a pass) for each of TTQ, the
        # fp32 baseline and the 3 control bit-widths, per seed; TWN's fine-tuning (li2016) is left out
        # to keep within the quick profile's time (the smoke and paper profiles run it)
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-5", "lenet5_width": 0.5, "dense_per_seed": False,
        "dense": _adam(2000, 0.003, 100), "finetune": _adam(300, 0.001, 32), "compare_twn": False,
        "ttq": {**TTQ, "fp32_ends": True}, "control_bits": [8, 4, 2],
    },
    "paper": {
        # Sec. 4 / the released tw-cifar10-resnet.py: ResNet-20 on CIFAR-10 pre-trained in full precision
        # (He et al.'s schedule: SGD momentum 0.9, lr 0.1, batch 128, /10 at 50% and 75% of 64k steps),
        # then fine-tuned ternary with the same optimizer and schedule; first conv and last fc in fp32.
        "dataset": "cifar10", "seeds": 3, "model": "resnet-20", "dense_per_seed": True,
        "dense": {**_sgd(64000, 0.1, 128), "schedule": "step"},
        "finetune": {**_sgd(64000, 0.1, 128), "schedule": "step"},
        "compare_twn": True, "ttq": {**TTQ, "fp32_ends": True}, "control_bits": [8, 4, 2],
    },
}

TTQ_CODES = "2-bit ternary codes, W^p and W^n"


# ------------------------------------------------------------------------------------ the method
def ttq_masks(latent: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``I^p`` and ``I^n``: where the latent weight is above ``Delta = t max|w~|`` and below ``-Delta``
    (Eq. 9)."""
    w = latent.detach()
    delta = t * w.abs().max()
    return w > delta, w < -delta


def ttq_weight(latent: torch.Tensor, w_p: torch.Tensor, w_n: torch.Tensor, t: float) -> torch.Tensor:
    """The ternary weights ``W^p`` on ``I^p``, 0 on ``I^z``, ``-W^n`` on ``I^n``, with TTQ's gradients:
    to ``W^p`` / ``W^n`` the (signed) sums of the ternary weights' gradients over ``I^p`` / ``I^n``
    (Eq. 7), to the latent weights the ternary weights' gradient times ``W^p``, 1 or ``W^n`` (Eq. 8).
    The last term is exactly zero in the forward pass and carries Eq. 8's gradient."""
    pos, neg = ttq_masks(latent, t)
    ternary = w_p * pos - w_n * neg
    scaled = latent * torch.where(pos, w_p.detach(), torch.where(neg, w_n.detach(), torch.ones_like(latent)))
    return ternary + (scaled - scaled.detach())


def ternary_codes(latent: torch.Tensor, t: float) -> torch.Tensor:
    """The assignment ``+1`` on ``I^p``, 0 on ``I^z``, ``-1`` on ``I^n``."""
    pos, neg = ttq_masks(latent, t)
    return pos.to(latent.dtype) - neg.to(latent.dtype)


class _Ttq:
    """A layer with TTQ's ternary weights. ``start()`` (once, from the trained full-precision weights)
    normalises the latent weights to [-1, 1] and creates the two trained scales."""

    weight: nn.Parameter
    threshold_factor: float = 0.05
    initial_scales: tuple[float, float]
    w_p: nn.Parameter
    w_n: nn.Parameter

    @torch.no_grad()
    def start(self, threshold_factor: float) -> None:
        self.threshold_factor = threshold_factor
        w = self.weight
        delta = threshold_factor * w.abs().max()
        # each scale: the least-squares value for its sign's weights (TWN's Eq. 6 per sign), layer units
        self.register_parameter("w_p", nn.Parameter(ternary_scale(w.clamp(min=0), delta).reshape(())))
        self.register_parameter("w_n", nn.Parameter(ternary_scale((-w).clamp(min=0), delta).reshape(())))
        self.initial_scales = (self.w_p.item(), self.w_n.item())
        w.div_(w.abs().max().clamp(min=torch.finfo(w.dtype).tiny))  # Sec. 3: normalised to [-1, +1]

    def propagation_weight(self) -> torch.Tensor:
        return ttq_weight(self.weight, self.w_p, self.w_n, self.threshold_factor)


class TtqLinear(_Ttq, QuantizedLinear):
    """A fully-connected layer propagating with TTQ's ternary weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.propagation_weight(), self.bias)


class TtqConv2d(_Ttq, QuantizedConv2d):
    """A convolution propagating with TTQ's ternary weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.propagation_weight(), self.bias)


def layer_names(model: nn.Module) -> list[str]:
    """The conv / fc layers of ``model``, in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def ternarize_model(fp32: nn.Module, linear_cls: type[QuantizedLinear], conv_cls: type[QuantizedConv2d],
                    fp32_ends: bool) -> nn.Module:
    """A copy of ``fp32`` with its conv / fc layers replaced by ``linear_cls`` / ``conv_cls`` (the same
    weights), the first and last kept fp32 when ``fp32_ends``."""
    model = controls.trainable_copy(fp32)
    names = layer_names(model)
    ends = {name: model.get_submodule(name) for name in (names[0], names[-1])}
    quantize_layers(model, linear_cls, conv_cls)
    if fp32_ends:
        for name, module in ends.items():
            model.set_submodule(name, module)
    return model


def ttq_model(fp32: nn.Module, t: float, fp32_ends: bool) -> nn.Module:
    """TTQ's network, from a trained full-precision one: ternary layers with their scales started."""
    model = ternarize_model(fp32, TtqLinear, TtqConv2d, fp32_ends)
    for _, layer in quantized_layers(model):
        layer.start(t)
    return model


def scale_params(model: nn.Module) -> list[nn.Parameter]:
    return [p for _, layer in quantized_layers(model) if isinstance(layer, _Ttq) for p in (layer.w_p, layer.w_n)]


def param_groups(model: nn.Module) -> list[dict]:
    """The scales without weight decay (the released code decays the latent weights only)."""
    scales = {id(p) for p in scale_params(model)}
    return [{"params": [p for p in model.parameters() if id(p) not in scales]},
            {"params": scale_params(model), "weight_decay": 0.0}]


def finetune(run: Run, model: nn.Module, desc: str, **kwargs: object) -> nn.Module:
    """Fine-tune for the profile's ``finetune`` budget, every model with the same data order."""
    run.reseed("zhu2017 finetune data")
    return run.train(model, run.dataset().train, run.train_config("finetune"), desc=desc, **kwargs)


# ------------------------------------------------------------------------------------ encoding
def encode_ttq_layers(model: nn.Module) -> dict[str, ak.LowBitWeight]:
    """The deployed ternary layers as stored and run: each layer's assignment as 2-bit codes, one row
    of int32 words per output channel, with ``W^p`` and (``scale_neg``) ``W^n`` in fp32
    (``atlas_kernels.encode_ternary``; a convolution as its out x (in * k * k) matrix). Keyed by weight
    parameter name; each decodes to exactly the layer's ternary weights."""
    out: dict[str, ak.LowBitWeight] = {}
    for name, layer in quantized_layers(model):
        codes = ternary_codes(layer.weight, layer.threshold_factor)
        out[f"{name}.weight"] = ak.encode_ternary(codes.reshape(codes.shape[0], -1), layer.w_p, layer.w_n)
    return out


def ttq_storage(model: nn.Module) -> list[measure.Encoded]:
    """The deployed model: the bytes of each ternary layer's encoding (codes, ``W^p``, ``W^n`` and the
    encoding's zero point); every other parameter (biases, fp32 layers) in fp32."""
    encoded = encode_ttq_layers(model)
    parts = [measure.encoded(name, q, TTQ_CODES) for name, q in encoded.items()]
    scales = [f"{name}.{s}" for name, _ in quantized_layers(model) for s in ("w_p", "w_n")]
    return parts + measure.fp32_parts(model, skip=sorted(encoded) + scales)


# ------------------------------------------------------------------------------------ the run
def train_dense(run: Run) -> nn.Module:
    """The trained full-precision network: per seed, or once (seed 0) for every seed (cached)."""
    cfg = run.config
    per_seed = cfg["dense_per_seed"]
    kwargs = {"width": cfg["lenet5_width"]} if cfg["model"] == "lenet-5" else {}

    def fit(model: nn.Module) -> None:
        run.reseed("zhu2017 dense data", seed=None if per_seed else 0)
        run.train(model, run.dataset().train, run.train_config("dense"), desc="fp32 dense")

    spec = {"model": cfg["model"], **kwargs, "dense": cfg["dense"], "per_seed": per_seed}
    return run.cached_model("zhu2017-dense", spec, build=lambda: run.model(cfg["model"], **kwargs), fit=fit,
                            per_seed=per_seed)


def ttq_summary(model: nn.Module) -> dict[str, float]:
    """``zero_fraction`` (share of ternary weights that are 0) and ``scale_change_pct`` (how far
    training moved the scales: the mean over layers of ``|W / W_start - 1|`` for ``W^p`` and ``W^n``,
    in percent)."""
    layers = [layer for _, layer in quantized_layers(model)]
    codes = [ternary_codes(layer.weight, layer.threshold_factor) for layer in layers]
    change = [abs(w.item() / w0 - 1) for layer in layers
              for w, w0 in zip((layer.w_p, layer.w_n), layer.initial_scales, strict=True)]
    return {"zero_fraction": sum(int((c == 0).sum()) for c in codes) / sum(c.numel() for c in codes),
            "scale_change_pct": 100 * sum(change) / len(change)}


@reproduction("zhu2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    t, ends = cfg["ttq"]["threshold_factor"], cfg["ttq"]["fp32_ends"]
    dense = train_dense(run)
    dense_acc = run.accuracy(dense, data.test)

    baseline = finetune(run, controls.trainable_copy(dense), "fp32 same-budget baseline")
    base_acc = run.accuracy(baseline, data.test)
    ttq = ttq_model(dense, t, ends)
    finetune(run, ttq, "TTQ", params=param_groups(ttq))
    acc = run.accuracy(ttq, data.test)
    twn_metrics = {}
    if cfg["compare_twn"]:
        twn = finetune(run, ternarize_model(dense, TernaryLinear, TernaryConv2d, ends), "TWN (li2016)")
        twn_acc = run.accuracy(twn, data.test)
        twn_metrics = {"twn_accuracy": twn_acc, "ttq_minus_twn_pp": acc - twn_acc}

    parts = ttq_storage(ttq)
    bits = measure.storage_bits(parts)
    n_ternary = sum(layer.weight.numel() for _, layer in quantized_layers(ttq))
    code_bits = sum(p.bits for p in parts if p.what == TTQ_CODES)
    ft = run.train_config("finetune")
    width = f" at width {cfg['lenet5_width']:g}" if cfg["model"] == "lenet-5" else ""
    run.record(
        "cifar10-resnets",
        model=f"{cfg['model']}{width}, " + ("first and last layers fp32, the others" if ends else "every conv/fc layer")
              + " TTQ-ternary",
        metrics={
            **measure.accuracy_change(base_acc, acc),
            "dense_accuracy": dense_acc,
            **twn_metrics,
            "params": measure.count_params(dense),
            "storage_bits": bits,
            "storage_compression": measure.dense_bits(dense) / bits,
            "weight_storage_compression": 32 * n_ternary / code_bits,
            **ttq_summary(ttq),
        },
        differs=f"harness {cfg['model']}{width} instead of ResNet-20/32/44/56; "
                + ("one full-precision network for all seeds; " if not cfg["dense_per_seed"] else "")
                + f"{cfg['dense']['steps']} full-precision steps, then {ft.steps} fine-tuning steps of batch "
                f"{ft.batch_size} ({ft.optimizer}) each for TTQ, "
                + ("TWN, " if cfg["compare_twn"] else "") + "the fp32 baseline and the controls from the same "
                "network and data order"
                + ("" if ends else "; every layer ternary (the paper: first and last fp32)"),
        baseline=(cfg["model"], "baseline_accuracy"),
        baseline_spec={"width": cfg["lenet5_width"]} if cfg["lenet5_width"] != 1.0 else {},
        curves=[controls.Series("TTQ (Zhu et al.)", controls.BITS, controls.ACCURACY, {2.0: acc}),
                controls.quantization_curve(run, dense, cfg["control_bits"], ft)],
    )
