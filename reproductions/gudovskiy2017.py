"""ShiftCNN: Generalized Low-Precision Architecture for Inference of Convolutional Neural Networks
(Gudovskiy & Rigazio, arXiv:1706.02393, 2017).

Method: a trained network's weights are converted, without retraining, into sums of ``N`` powers of two.
Each layer's weights are normalised by their largest magnitude, ``r = W / max|W|``, and approximated
greedily: for ``n = 0 .. N-1`` the residual ``r`` is rounded to the nearest power of two (in the linear
domain: ``|r|`` in ``[0.75 * 2^k, 1.5 * 2^k)`` goes to ``2^k``) with its sign, the term ``q_n`` is
subtracted from ``r``, and a term whose shift index ``1 - n - k`` exceeds ``2^(B-1) - 1`` is 0, so term
``n`` takes its values in the codebook ``{0, ±2^(-n), ±2^(-n-1), ..., ±2^(-n-2^(B-1)+2)}`` of ``2^B - 1``
values and is stored as a ``B``-bit index (a sign bit and the shift). ``W ~ max|W| * sum_n q_n``. At
inference a layer's product needs no multiplications: the input's shifted copies ``x * 2^(-s)`` (and
their negations) are precomputed once per input, and every output accumulates, for each weight and
term, the precomputed value its index selects (shifts, a lookup and additions; the layer's one fp32
scale ``max|W|`` folds into the next layer's normalisation). This follows the released script
(``shiftcnn_quantization.py``: the rounding border ``log2(1.5)``, the index ``2 - (n+1) - k`` and its
saturation at ``2^(B-1) - 1``), which converts every parameter layer's weights; here every convolution
and fully-connected weight (biases stay fp32).

Claim (abstract, arXiv:1706.02393v1): "state-of-the-art CNNs can be converted without retraining into
ShiftCNN with less than 1% drop in accuracy when the proposed quantization algorithm is employed"
(ImageNet). The paper's tables (per network, N and B) were not read; the released script's setting
``N = 2, B = 4`` is the one checked: ``accuracy_change_pp`` of the converted network against the same
trained fp32 network, passing when the whole 95% interval is above -1 pp.

What is measured (claim ``imagenet-no-retraining``): ``baseline_accuracy``, ``accuracy``,
``accuracy_change_pp`` at ``N = 2, B = 4``; ``accuracy_n<N>_b<B>`` at every setting of the curve;
``storage_bits`` / ``storage_compression`` from the actual encoding (each term of each layer as
``B``-bit power-of-two codes packed in int32 words with its fp32 scale ``max|W| 2^(-n)``,
``atlas_kernels.LowBitWeight`` in its ``pow2`` scheme, which decodes to exactly the converted weights,
plus the fp32 biases); ``dense_latency_us`` / ``encoded_latency_us`` / ``speedup``: the
fully-connected layers at batch 1, fp32 ``F.linear`` on the converted weights against the shift-and-add
path (:func:`shift_add_matmul`: the precomputed shifted inputs, a gather of the selected terms, a sum),
timed one after the other in the same run on one CPU thread (``measure.layers_latency``). The paper
reports FPGA power, not CPU time: the speed-up has no check.

The curve: accuracy at ``(N, B)`` = (1, 3), (1, 4), (2, 3), (2, 4), (3, 4), plotted at ``N * B`` bits
a weight, beside the same fp32 network's weights uniformly quantized to as many bits
(:func:`atlas.harness.controls.quantization_curve`, post-training: ShiftCNN does not retrain).

Harness differs: no ImageNet or pretrained ImageNet CNN here. The quick profile trains the harness MLP
784-128-10 on Fashion-MNIST's first 8,000 training examples (600 Adam steps of batch 100, cosine from
0.003; the MLP's calibrated size, where its long schedule reaches 85.1 %) and converts it; the paper
profile trains the harness's VGG-style CIFAR-10 network. The latency is PyTorch on a shared CPU, not the
paper's FPGA datapath.

Quick verdict (3 seeds, 10 s of one CPU thread, 76 s wall on the shared 2-core machine at load 10):
reproduced. The fp32 MLP reaches 85.14 % (its reference 85.13 %); converted at N = 2, B = 4 its
accuracy changes by +0.05 pp [-0.06, 0.17], with 4.0x less storage than fp32. The curve: N, B = 1, 3:
-3.1 pp; 1, 4: -0.3; 2, 3: -0.5; 2, 4: +0.05; 3, 4: 0.0. The uniform control at the same bits is as
good or better on this MLP (3 bits 84.6 % against ShiftCNN's 82.0, 4 bits 85.1 against 84.9, 6 bits
85.2 against 84.6): the power-of-two codebook's gain is the hardware's (no multiplier), not accuracy.
The shift-and-add product in PyTorch (a gather over the precomputed shifted inputs) runs about 70x
slower than BLAS's fp32 product on this CPU (speed-up 0.014x): the paper's datapath is an FPGA's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import atlas_kernels as ak
import torch
from pydantic import PositiveFloat, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    model: Literal["mlp", "vgg-small"]  # the harness network (quick: an MLP; paper: VGG-style CIFAR net)
    hidden: list[PositiveInt] = [128]  # the MLP's hidden layers
    width: PositiveFloat = 1.0  # vgg-small's width multiplier
    train: TrainConfig  # the fp32 network, trained once, then converted
    settings: list[tuple[PositiveInt, PositiveInt]] = [(1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]  # (N, B) of the curve
    checked: tuple[PositiveInt, PositiveInt] = (2, 4)  # (N, B) of the claim: the released script's


_ADAM = {"optimizer": "adam", "lr": 0.003, "schedule": "cosine"}
PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "model": "mlp", "hidden": [64],
              "train": {"steps": 88, "batch_size": 64, **_ADAM}},
    "quick": {
        # 600 Adam steps of batch 100 on Fashion-MNIST's first 8,000 examples (7.5 passes): the MLP's
        # calibrated size, where 600 steps bring it within 0.1 pp of its long-schedule reference
        "dataset": "fashion-mnist", "seeds": 3, "train_limit": 8000, "model": "mlp", "hidden": [128],
        "train": {"steps": 600, "batch_size": 100, **_ADAM},
    },
    "paper": {
        # no ImageNet here: the harness VGG-style CIFAR-10 network, SGD 0.1 with x0.1 steps, batch 128
        "dataset": "cifar10", "seeds": 3, "model": "vgg-small", "width": 1.0,
        "train": {"steps": 64_000, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4,
                  "schedule": "step"},
    },
}

BORDER = math.log2(1.5)  # |r| from 1.5 * 2^k up rounds to 2^(k+1) (the released script)


# ------------------------------------------------------------------------------ the conversion
def shift_codes(w: torch.Tensor, n_terms: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The greedy power-of-two approximation of one layer: ``(codes, scale)`` with ``codes`` [N, *w.shape]
    (int64: sign bit ``bits - 1`` and shift index ``1 - n - k`` in the low bits, 0 for a zero term) and
    ``scale = max|W|``; term ``n`` decodes to ``scale * 2^(-n) * (±2^(1 - index))``."""
    if bits < 2:
        raise ValueError("B must be at least 2 (a sign bit and a shift)")
    scale = w.detach().abs().max()
    r = (w.detach() / scale.clamp_min(torch.finfo(w.dtype).tiny)).double()
    levels = 2 ** (bits - 1) - 1
    codes = []
    for n in range(n_terms):
        q_log = torch.log2((r + 1e-32).abs())
        k = torch.floor(q_log)
        k = torch.where(q_log > k + BORDER, k + 1, k)
        index = 1 - n - k
        keep = (index >= 1) & (index <= levels) & (r != 0)
        q = torch.where(keep, torch.sign(r) * torch.exp2(k), torch.zeros_like(r))
        r = r - q
        index = torch.where(keep, index, torch.zeros_like(index)).to(torch.int64)
        codes.append((((r + q) < 0) & keep).to(torch.int64) << (bits - 1) | index)
    return torch.stack(codes), scale.float()


def decode(codes: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """``scale * sum_n 2^(-n) * (±2^(1 - index))`` of :func:`shift_codes`."""
    levels = 2 ** (bits - 1) - 1
    out = torch.zeros(codes.shape[1:], dtype=torch.float64)
    for n, c in enumerate(codes):
        index, neg = c & levels, (c >> (bits - 1)) != 0
        mag = torch.where(index > 0, torch.exp2((1 - n - index).double()), torch.zeros_like(out))
        out += torch.where(neg, -mag, mag)
    return (out * scale.double()).float()


def shiftcnn_weight(w: torch.Tensor, n_terms: int, bits: int) -> torch.Tensor:
    """The converted weight ``max|W| sum_n q_n``."""
    return decode(*shift_codes(w, n_terms, bits), bits).to(w.dtype)


@torch.no_grad()
def convert(model: nn.Module, n_terms: int, bits: int) -> nn.Module:
    """A copy of ``model`` with every conv / fc weight converted (no retraining)."""
    out = controls.trainable_copy(model)
    params = dict(out.named_parameters())
    for name in controls.weight_names(out):
        params[name].copy_(shiftcnn_weight(params[name], n_terms, bits))
    return out.eval()


# ------------------------------------------------------------------------------ storage and inference
@dataclass(frozen=True)
class ShiftWeight:
    """A converted ``[out, K]`` weight: per term, ``B``-bit codes [out, K] and the term's scale."""

    codes: torch.Tensor  # int64 [N, out, K]
    scale: torch.Tensor  # fp32 scalar: max|W|
    bits: int

    def terms(self) -> list[ak.LowBitWeight]:
        """Each term as stored: ``atlas_kernels.LowBitWeight`` (``pow2``: ``scale 2^(1 - index)``, sign
        bit on top) with the term's scale ``max|W| 2^(-n)``: packed ``B``-bit codes and one fp32."""
        out_k = tuple(self.codes.shape[1:])
        return [ak.LowBitWeight(ak.pack_codes(c, self.bits), (self.scale * 2.0 ** -n).reshape(1).float(), None,
                                None, self.bits, "pow2", out_k) for n, c in enumerate(self.codes)]

    def dequantize(self) -> torch.Tensor:
        return decode(self.codes, self.scale, self.bits)


def encode_layer(w: torch.Tensor, n_terms: int, bits: int) -> ShiftWeight:
    codes, scale = shift_codes(w.reshape(w.shape[0], -1), n_terms, bits)
    return ShiftWeight(codes, scale, bits)


def shift_add_matmul(x: torch.Tensor, w: ShiftWeight) -> torch.Tensor:
    """``x @ W.T`` the ShiftCNN way: the input's shifted copies ``x 2^(1 - s)`` for every shift ``s`` and
    their negations are precomputed once (a table of ``2^B`` rows, code 0 and the negative zero giving
    0), each term's codes select from it (a gather), the selections are summed over the inputs and the
    terms (each term shifted by ``-n``), and the layer's scale applied once per output."""
    levels = 2 ** (w.bits - 1) - 1
    shifts = torch.arange(1, levels + 1, device=x.device)
    shifted = torch.ldexp(x[:, None, :], (1 - shifts)[None, :, None].to(x.dtype))  # [B, levels, K]
    zero = torch.zeros_like(x[:, None, :])
    table = torch.cat([zero, shifted, zero, -shifted], dim=1).transpose(1, 2)  # [B, K, 2^B]
    acc = torch.zeros(x.shape[0], w.codes.shape[1], dtype=x.dtype, device=x.device)
    for n, c in enumerate(w.codes):
        picked = torch.gather(table, 2, c.T[None].expand(x.shape[0], -1, -1))  # [B, K, out]
        acc += torch.ldexp(picked.sum(1), torch.tensor(-n, dtype=x.dtype))
    return acc * w.scale


def storage(model: nn.Module, n_terms: int, bits: int) -> list[measure.Encoded]:
    """The converted model: every term of every conv / fc layer as packed codes and its fp32 scale;
    every other parameter (biases, BN) in fp32."""
    params = dict(model.named_parameters())
    names = controls.weight_names(model)
    parts = [measure.encoded(f"{name}[term {n}]", term, f"{bits}-bit power-of-two codes + fp32 scale")
             for name in names for n, term in enumerate(encode_layer(params[name].detach(), n_terms, bits).terms())]
    return parts + measure.fp32_parts(model, skip=names)


def shift_latency(model: nn.Module, n_terms: int, bits: int) -> dict[str, float]:
    """The fully-connected layers at batch 1: fp32 ``F.linear`` on the converted weights against
    :func:`shift_add_matmul` on their codes (``measure.layers_latency``, same run, one thread)."""
    layers = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            enc = encode_layer(m.weight.detach().cpu(), n_terms, bits)
            layers.append((enc.dequantize(), enc))
    return measure.layers_latency(layers, shift_add_matmul)


# ------------------------------------------------------------------------------ the run
@reproduction("gudovskiy2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    name = run.config["model"]
    spec: dict = ({"hidden": list(run.config["hidden"])} if name == "mlp"
                  else ({} if run.config["width"] == 1.0 else {"width": run.config["width"]}))
    dense = run.train(run.model(name, **spec), data.train, run.train_config("train"), desc="fp32")
    base_acc = run.accuracy(dense, data.test)
    accs = {(n, b): run.accuracy(convert(dense, n, b), data.test) for n, b in run.config["settings"]}
    n_c, b_c = run.config["checked"]
    acc = accs[(n_c, b_c)] if (n_c, b_c) in accs else run.accuracy(convert(dense, n_c, b_c), data.test)
    bits = measure.storage_bits(storage(dense, n_c, b_c))
    by_bits: dict[float, float] = {}
    for (n, b), a in sorted(accs.items()):
        by_bits[float(n * b)] = max(a, by_bits.get(float(n * b), -1.0))  # two settings of one N*B: the better
    limit = run.config.get("train_limit")
    run.record(
        "imagenet-no-retraining",
        model=f"harness {name} ({', '.join(f'{k}={v}' for k, v in spec.items()) or 'default'}), "
              f"converted at N={n_c}, B={b_c}",
        metrics={
            **measure.accuracy_change(base_acc, acc),
            **{f"accuracy_n{n}_b{b}": a for (n, b), a in accs.items()},
            "params": measure.count_params(dense),
            "storage_bits": bits,
            "storage_compression": measure.dense_bits(dense) / bits,
            **shift_latency(dense, n_c, b_c),
        },
        differs=f"harness {name} trained {run.config['train']['steps']} steps"
                + (f" on the first {limit} training examples" if limit else "")
                + ", converted without retraining (every conv/fc weight; biases fp32)",
        notes=measure.latency_note("shift-and-add (precomputed shifted inputs, gather, sum) in PyTorch",
                                   next(dense.parameters())),
        baseline=(name, "baseline_accuracy"),
        baseline_spec=spec,
        curves=[controls.Series("ShiftCNN (N terms of B bits, at N*B bits)", controls.BITS, controls.ACCURACY, by_bits),
                controls.quantization_curve(run, dense, sorted({int(x) for x in by_bits}, reverse=True), None)],
    )
