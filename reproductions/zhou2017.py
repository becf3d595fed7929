"""Incremental Network Quantization: Towards Lossless CNNs with Low-Precision Weights (Zhou, Yao, Guo,
Xu & Chen, ICLR 2017; arXiv:1702.03044).

Method (Sec. 2): a pre-trained full-precision network is converted, layer by layer, into one whose
weights are powers of two or zero. For layer ``l`` with ``s = max|W_l|`` the weights are restricted to

.. math:: P_l = \\{\\pm 2^{n_1}, \\dots, \\pm 2^{n_2}, 0\\}, \\quad n_1 = \\lfloor \\log_2(4s/3) \\rfloor,
          \\quad n_2 = n_1 + 1 - 2^{b-1}/2

(Eq. 2-3): with ``b`` bits, one bit marks zero and the other ``b - 1`` index the ``2^{b-1}`` signed
powers of two, i.e. ``2^{b-2}`` magnitudes (5 bits: ``2^{n_1-7} .. 2^{n_1}``). A weight goes to the
nearest element of ``P_l`` (Eq. 4: ``beta sgn(w)`` when ``(alpha + beta)/2 <= |w| < 3 beta / 2`` for
adjacent ``alpha < beta`` of ``P_l``, else 0), which is what the released Caffe code does
(``src/caffe/util/power2.cpp``: the nearest of ``0, ±2^{n1-7}, ..., ±2^{n1}``).

Incremental (Sec. 2.2-2.3, Eq. 5-8): each layer's weights are split into a group ``A^(1)`` that is
quantized and frozen and a group ``A^(2)`` kept in full precision and retrained (a binary mask ``T_l``
zeroes their gradient); the split is by magnitude, the largest weights quantized first ("pruning
inspired", citing Han et al. 2015), and repeated on the remaining full-precision group with accumulated
quantized portions ``sigma`` = 50%, 75%, 87.5%, 100%, retraining between steps; after the last step
every weight is in ``P_l``. The magnitude split is Han et al.'s magnitude criterion applied to the
not-yet-quantized weights, so :func:`partition` imports ``han2015.magnitude_mask`` (the paper names that
pruning as the source of its partition; INQ freezes what Han et al. would keep, rather than remove
what they would prune). ``n1`` is fixed per layer from the pre-trained weights (Sec. 2.1).

Storage: each layer's ``b``-bit codes (``sign << (b-1) | (n1 - e + 1)``, 0 for a zero weight) packed in
int32 words with one fp32 scale ``2^{n1}`` per layer, the ``atlas_kernels`` low-bit format with the
``"pow2"`` decode (``w = ±2^{1-code} 2^{n1}``), whose decode equals the quantized weights exactly
(tested); biases fp32.

Claims (``papers.yaml``): ``imagenet-resnet-50`` (Table 1 and the abstract: 5-bit INQ models are at
least as accurate as their 32-bit references, "lossless"), checked here as ``accuracy_change_pp`` of
5-bit INQ against the same harness's fp32 model given the same extra steps (within 0.5 pp); the 4, 3
and 2-bit ResNet-18 numbers (Table 4) were not confirmed from the paper's text and are not checked.

Recorded (claim ``imagenet-resnet-50``): ``baseline_accuracy`` (the dense model retrained for the same
three stages of steps, in fp32), ``dense_accuracy`` (the pre-trained model INQ starts from),
``accuracy`` / ``accuracy_change_pp`` of 5-bit INQ, ``accuracy_<b>bit`` for every bit-width of the
curve, ``storage_bits`` / ``storage_compression`` of the 5-bit model's actual encoding,
``weight_storage_compression`` (32-bit weights against the codes alone), ``zero_fraction`` (of the
5-bit model's weights) and ``zero_fraction_<b>bit`` for every bit-width of the curve.

The curve: INQ at 5, 4 and 3 bits beside per-layer uniform quantization of the same dense model to the
same bits, fine-tuned with the straight-through estimator for INQ's total retraining steps
(:func:`atlas.harness.controls.quantization_curve`). On the quick profile (seeds 0-2) 5 and 4 bits stay
within a few tenths of a point of the fp32 model and of the control, but 3-bit INQ falls to ~57%
against the control's ~88.7%: Eq. 3 anchors the code book at the layer's largest weight, and with 3 bits
(``{±2^n1, ±2^(n1-1), 0}``) every weight below ``2^(n1-2)`` (between ``s/6`` and ``s/3``) is zero, 97%
of LeNet-300-100's weights (``zero_fraction_3bit``; 48% at 4 bits), frozen at zero by the first
partitions; the uniform control chooses its clipping range by least squared error instead. The paper's
3-bit number (ResNet-18, Table 4) is unconfirmed here and not checked.

Harness differs: Fashion-MNIST (quick) and MNIST (paper profile) with LeNet-300-100 (the paper:
ImageNet CNNs, which the harness cannot train); one dense model trained once per profile (seed 0) for every seed, INQ,
its fp32 baseline and the control per seed; a few hundred retraining steps per stage with a cosine
schedule each (the paper retrains each stage to convergence in Caffe); biases stay
fp32; the final 100% step has no retraining (nothing is left to retrain).
"""

from __future__ import annotations

import atlas_kernels as ak
import torch
from atlas_reproductions.han2015 import magnitude_mask
from pydantic import Field
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

MODEL = "lenet-300-100"


class Inq(Section):
    portions: list[float] = Field(min_length=1)  # accumulated quantized portions (Sec. 2.3: 0.5 ... 1.0)
    retrain: TrainConfig  # the retraining after ONE partition step (each step but the last)
    bits: int = Field(ge=2, le=8)  # the claim's bit-width (Table 1: 5)
    curve_bits: list[int]  # the curve's bit-widths (the claim's among them)


class Config(Profile):
    dense: TrainConfig  # the pre-trained full-precision network (trained once, seed 0)
    inq: Inq


def _sgd(steps: int, lr: float) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": 128, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": "cosine"}


PORTIONS = [0.5, 0.75, 0.875, 1.0]  # Sec. 2.3 / Sec. 3: the accumulated portions of quantized weights

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2,
        "dense": _sgd(90, 0.05),
        "inq": {"portions": PORTIONS, "retrain": _sgd(15, 0.01), "bits": 5, "curve_bits": [5, 4, 3]},
    },
    "quick": {
        # one dense model (3,000 steps, as han2015's), then per seed and bit-width 3 x 80 retraining
        # steps; the fp32 baseline and the control get the same 240 steps. 3 x 150 took 93 s of CPU
        # time cold for 3 seeds, over the quick budget of 60 s.
        "dataset": "fashion-mnist", "seeds": 3,
        "dense": _sgd(3000, 0.05),
        "inq": {"portions": PORTIONS, "retrain": _sgd(80, 0.01), "bits": 5, "curve_bits": [5, 4, 3]},
    },
    "paper": {
        # the harness has no ImageNet (Sec. 3): MNIST; retraining lr 10x below the pre-training one
        "dataset": "mnist", "seeds": 3,
        "dense": _sgd(18750, 0.01),
        "inq": {"portions": PORTIONS, "retrain": _sgd(4700, 0.001), "bits": 5, "curve_bits": [5, 4, 3]},
    },
}


# -------------------------------------------------------------------------------- quantization
def exponent_range(w: torch.Tensor, bits: int) -> tuple[int, int]:
    """``(n1, n2)`` of Eq. 2-3: ``n1 = floor(log2(4 max|w| / 3))``, ``n2 = n1 + 1 - 2^(b-1) / 2``."""
    if bits < 2:
        raise ValueError("INQ needs at least 2 bits (one for zero)")
    s = float(w.detach().abs().max())
    n1 = int(torch.floor(torch.log2(torch.tensor(4.0 * max(s, 1e-30) / 3.0))))
    return n1, n1 + 1 - 2 ** (bits - 2)


def pow2_exponents(w: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """The exponent ``e`` of each weight's element of ``P_l`` (Eq. 4, the nearest one), ``n2 - 1`` for 0."""
    a = w.detach().abs()
    e = torch.floor(torch.log2((a * 4 / 3).clamp_min(1e-38))).clamp(max=n1)  # [3/4 2^e, 3/2 2^e) -> 2^e
    return torch.where(a < 2.0 ** n2 / 2, torch.full_like(e, n2 - 1), e.clamp(min=n2))


def quantize_pow2(w: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """Every weight on ``P_l = {±2^n1, ..., ±2^n2, 0}`` (Eq. 4)."""
    w = w.detach()
    e = pow2_exponents(w, n1, n2)
    return torch.where(e < n2, torch.zeros_like(w), torch.sign(w) * torch.pow(2.0, e))


def partition(w: torch.Tensor, frozen: torch.Tensor, portion: float) -> torch.Tensor:
    """The quantized group after a step to the accumulated ``portion``: the frozen weights and the
    largest-magnitude full-precision ones (Han et al.'s magnitude criterion), ``round(portion * n)`` in all."""
    score = torch.where(frozen, torch.full_like(w, float("inf")), w.detach().abs())
    return magnitude_mask(score, portion) | frozen


# ------------------------------------------------------------------------------------ training
def weight_layers(model: nn.Module) -> list[str]:
    return controls.weight_names(model)


def inq(run: Run, dense: nn.Module, bits: int) -> nn.Module:
    """Incremental quantization of a copy of ``dense`` to ``bits``: at each accumulated portion,
    quantize and freeze the largest remaining weights, then retrain the rest (all but the last step)."""
    cfg = run.config["inq"]
    model = controls.trainable_copy(dense)
    params = dict(model.named_parameters())
    names = weight_layers(model)
    ranges = {n: exponent_range(params[n], bits) for n in names}  # n1 from the pre-trained layer
    frozen = {n: torch.zeros_like(params[n], dtype=torch.bool) for n in names}
    values: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def hold(m: nn.Module) -> None:  # the quantized group stays fixed (T_l = 0 in Eq. 8)
        p = dict(m.named_parameters())
        for n in names:
            p[n].copy_(torch.where(frozen[n], values[n], p[n]))

    retrain = TrainConfig.from_dict(cfg["retrain"])
    for step, portion in enumerate(cfg["portions"]):
        for n in names:
            frozen[n] = partition(params[n], frozen[n], portion)
            values[n] = quantize_pow2(params[n], *ranges[n])
        hold(model)
        if step < len(cfg["portions"]) - 1:
            run.reseed(f"zhou2017 retrain {step}")
            run.train(model, run.dataset().train, retrain, desc=f"INQ {bits}-bit {portion:.1%}", after_step=hold)
    with torch.no_grad():
        for n in names:  # the last portion is 1.0: every weight in P_l
            params[n].copy_(quantize_pow2(params[n], *ranges[n]))
    model._inq_ranges = ranges  # type: ignore[attr-defined]
    return model.eval()


def train_dense(run: Run) -> nn.Module:
    """The pre-trained full-precision network, once per profile (seed 0) for every seed (cached)."""
    cfg = run.train_config("dense")

    def fit(model: nn.Module) -> None:
        run.reseed("zhou2017 dense data", seed=0)
        run.train(model, run.dataset().train, cfg, desc="fp32 dense")

    return run.cached_model("zhou2017-dense", {"model": MODEL, "dense": cfg.model_dump()},
                            build=lambda: run.model(MODEL), fit=fit, per_seed=False)


def fp32_baseline(run: Run, dense: nn.Module) -> nn.Module:
    """The dense model retrained in fp32 for the same stages and steps as INQ (the same data order)."""
    cfg = run.config["inq"]
    model = controls.trainable_copy(dense)
    retrain = TrainConfig.from_dict(cfg["retrain"])
    for step in range(len(cfg["portions"]) - 1):
        run.reseed(f"zhou2017 retrain {step}")
        run.train(model, run.dataset().train, retrain, desc=f"fp32 baseline stage {step + 1}")
    return model.eval()


def retrain_budget(run: Run) -> TrainConfig:
    """INQ's total retraining after the dense model, as one stage (the control's fine-tuning)."""
    cfg = run.config["inq"]
    retrain = TrainConfig.from_dict(cfg["retrain"])
    return retrain.model_copy(update={"steps": retrain.steps * (len(cfg["portions"]) - 1)})


# ------------------------------------------------------------------------------------- storage
def encode_pow2(w: torch.Tensor, n1: int, n2: int, bits: int) -> ak.LowBitWeight:
    """A layer on ``P_l`` as ``bits``-bit codes (``sign << (b-1) | (n1 - e + 1)``, 0 for zero) with one
    fp32 scale ``2^n1``: ``atlas_kernels``' pow2 decode ``±2^(1-code) 2^n1`` (a conv as out x (in*k*k))."""
    w2 = w.detach().reshape(w.shape[0], -1)
    e = pow2_exponents(w2, n1, n2)
    zero = e < n2
    idx = torch.where(zero, torch.zeros_like(e), n1 - e + 1).to(torch.int64)
    sign = ((w2 < 0) & ~zero).to(torch.int64)
    packed = ak.pack_codes((sign << (bits - 1)) | idx, bits)
    return ak.LowBitWeight(packed, torch.tensor([2.0 ** n1]), None, None, bits, "pow2", tuple(w2.shape))


def inq_storage(model: nn.Module, bits: int) -> list[measure.Encoded]:
    params = dict(model.named_parameters())
    ranges = model._inq_ranges  # type: ignore[attr-defined]
    parts = [measure.encoded(n, encode_pow2(params[n], *ranges[n], bits), f"{bits}-bit power-of-two codes")
             for n in ranges]
    return parts + measure.fp32_parts(model, skip=sorted(ranges))


@reproduction("zhou2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config["inq"]
    dense = train_dense(run)
    base = fp32_baseline(run, dense)
    base_acc = run.accuracy(base, data.test)
    models = {b: inq(run, dense, b) for b in cfg["curve_bits"]}
    accs = {b: run.accuracy(m, data.test) for b, m in models.items()}
    bits = cfg["bits"]
    model = models[bits] if bits in models else inq(run, dense, bits)
    acc = accs.get(bits, run.accuracy(model, data.test))
    parts = inq_storage(model, bits)
    total = measure.storage_bits(parts)
    names = weight_layers(model)
    params = dict(model.named_parameters())
    n_weights = sum(params[n].numel() for n in names)
    code_bits = sum(p.bits for p in parts if p.what.endswith("power-of-two codes"))
    zeros = {b: sum(int((dict(m.named_parameters())[n] == 0).sum()) for n in names) / n_weights
             for b, m in models.items()}
    retrain = cfg["retrain"]
    run.record(
        "imagenet-resnet-50",
        model=f"{MODEL}, every fc weight on powers of two or zero ({bits} bits)",
        metrics={
            **measure.accuracy_change(base_acc, acc),
            "dense_accuracy": run.accuracy(dense, data.test),
            **{f"accuracy_{b}bit": a for b, a in accs.items()},
            "params": measure.count_params(model),
            "storage_bits": total,
            "storage_compression": measure.dense_bits(model) / total,
            "weight_storage_compression": 32 * n_weights / code_bits,
            "zero_fraction": zeros.get(bits, sum(int((params[n] == 0).sum()) for n in names) / n_weights),
            **{f"zero_fraction_{b}bit": z for b, z in zeros.items()},
        },
        differs=f"{MODEL} instead of ImageNet CNNs; one dense model ({run.config['dense']['steps']} "
                f"steps) for all seeds; portions {cfg['portions']} with {retrain['steps']} retraining steps "
                "per stage (cosine); baseline = dense model retrained in fp32 for the same steps; biases fp32",
        baseline=(MODEL, "baseline_accuracy"), baseline_spec={},
        curves=[controls.Series("INQ (powers of two or zero)", controls.BITS, controls.ACCURACY,
                                {float(b): a for b, a in accs.items()}),
                controls.quantization_curve(run, dense, cfg["curve_bits"], retrain_budget(run))],
    )
