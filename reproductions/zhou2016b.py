"""DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth Gradients (Zhou, Wu,
Ni, Zhou, Wen & Zou, arXiv preprint 2016, arXiv:1606.06160).

Method (Sec. 2): every quantized layer computes with k-bit weights, k-bit inputs (activations) and
passes k-bit gradients backwards; the rounding is crossed by straight-through estimators (STE).

- ``quantize_k(r) = round((2^k - 1) r) / (2^k - 1)`` for ``r in [0, 1]``, backward ``dC/dr = dC/dr_o``
  (Eq. 5, the STE).
- **Weights** (Eq. 9): ``w_q = 2 quantize_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1`` over the layer, the
  gradient taken through ``tanh`` and the max with the STE at the rounding; for ``k = 1`` (Eq. 7)
  ``w_q = E(|w|) sign(w)`` with one mean magnitude per layer (XNOR-Net's BWN scale, Rastegari et al. 2016,
  per layer rather than per filter: :func:`atlas_reproductions.rastegari2016.binary_weight` of the layer
  as one row), backward ``dC/dw = dC/dw_q`` (the released code: ``E`` under stop-gradient, the sign's
  gradient the identity; BinaryConnect's straight-through,
  :func:`atlas_reproductions.courbariaux2015.straight_through`).
- **Activations** (Eq. 11): ``f_a(r) = quantize_k(r)`` of the activation bounded by ``clip(r, 0, 1)``
  (the released code's nonlinearity replacing ReLU before every quantized layer).
- **Gradients** (Eq. 12): the gradient ``dr`` reaching each layer's output is quantized to k bits with
  uniform noise, ``2 max0(|dr|) [quantize_k(dr / (2 max0(|dr|)) + 1/2 + N(k)) - 1/2]``, ``N(k) =
  sigma / (2^k - 1)``, ``sigma ~ U(-1/2, 1/2)``, ``max0`` over every axis but the batch axis (the
  released code clips the noisy value to [0, 1] before rounding; done here).

The first and the last layer keep fp32 weights (Sec. 2.7 / the released code), and the last layer's input
is clipped but not quantized.

At run time a k-bit layer stores its weights as k-bit codes: ``atlas_kernels.quantize_uniform(w, k,
"dorefa")`` (codes ``round((2^k - 1) t)`` packed ``32 / k`` to an int32 word, decoded ``2 c / (2^k - 1) -
1``, exactly the quantized weights: tested); 1-bit weights as ``atlas_kernels.encode_binary`` (packed
signs and ``E(|w|)``).

Claims (arXiv:1606.06160 abstract, as listed by arXiv mirrors; the tables could not be read here):

- ``abstract-comparable`` (Abstract): "DoReFa-Net can achieve comparable prediction accuracy as 32-bit
  counterparts" on SVHN and ImageNet, its example the AlexNet with 1-bit weights, 2-bit activations and
  6-bit gradients. Read here as the W/A/G = 1/2/6 network losing at most 1 pp of accuracy against the same
  harness's fp32 network (the reading of srinivas2015's "without significantly affecting").
- ``imagenet-alexnet`` (Abstract, 46.1 % top-1 at 1/2/6) and ``svhn-svhn-convnets-model-a-d`` (Table 1,
  unconfirmed): not comparable (absolute accuracies on data the harness lacks; Table 1's fp32 row not read).

What is measured (``abstract-comparable``): ``baseline_accuracy`` (fp32), ``accuracy`` /
``accuracy_change_pp`` (W1/A2/G6), ``w2_accuracy_change_pp`` and ``w4_accuracy_change_pp`` (2- and 4-bit
weights, A2/G6), ``storage_bits`` / ``storage_compression`` (the W1 model's encoding, the fp32 first and
last layers and BN included, against 32 bits a parameter) and ``weight_storage_compression`` (the
quantized layers' weights alone, against 32 bits a weight). The curve: DoReFa-Net at 1, 2 and 4 weight
bits (A2/G6, trained from the same initial weights for the fp32 network's steps) beside the fp32
network's weights uniformly quantized after training to the same bit-widths
(:func:`atlas.harness.controls.quantization_curve`, post-training: DoReFa trains no longer than the fp32
network; the control keeps fp32 activations and gradients).

Harness differs: no SVHN / ImageNet conv nets here. Quick trains XNOR-Net's quick MLP
(:func:`atlas_reproductions.rastegari2016.network`, 3 x 256 hidden, BN) on Fashion-MNIST with softmax
cross-entropy for 300 Adam steps of batch 200, cosine from 0.01 (the released code trains with Adam);
fp32 and the three DoReFa networks from the same initial weights for the same steps. The two
hidden-to-hidden layers are quantized (the first and last stay fp32, as in the paper), so the quantized
weights are 39 % of the model's.

Quick verdict (3 seeds; 44 s of one CPU thread, 148 s wall on the shared 2-core machine at load 9.5):
``abstract-comparable`` reproduced: W1/A2/G6 changes accuracy by -0.45 pp [-0.68, -0.23] against the fp32
MLP (86.8 %); 2- and 4-bit weights give about the same (-0.55, -0.55 pp: with 2-bit activations and fp32
first and last layers, the weight bit-width of the two inner layers hardly matters here). The
post-training uniform control at the same bit-widths loses 35 pp at 1 bit and 7 pp at 2 bits, none at 4.
The quantized layers' weights are 32.0x smaller in their packed encoding (one fp32 ``E(|w|)`` a layer),
the whole model 1.6x (the fp32 first layer holds most of the MLP's weights).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import atlas_kernels as ak
import torch
from atlas_reproductions.courbariaux2015 import (
    QuantizedConv2d,
    QuantizedLinear,
    QuantizedWeight,
    straight_through,
)
from atlas_reproductions.rastegari2016 import binarized_indices, binary_weight, network
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Bits(Section):
    weights: list[int] = Field(min_length=3)  # the curve's weight bit-widths (1 = binary, Eq. 7)
    activations: int = Field(ge=1, le=8)  # A (Abstract's example: 2)
    gradients: int = Field(ge=1, le=16)  # G (Abstract's example: 6)


class Config(Profile):
    hidden: list[PositiveInt]  # the MLP's hidden layers (XNOR-Net's quick MLP: 3 x 256)
    train: TrainConfig  # every network: fp32 and each DoReFa-Net, the same budget
    bits: Bits


PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64, 64, 64],
              "train": {"steps": 60, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"},
              "bits": {"weights": [1, 2, 4], "activations": 2, "gradients": 6}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256, 256],
              "train": {"steps": 300, "batch_size": 200, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"},
              "bits": {"weights": [1, 2, 4], "activations": 2, "gradients": 6}},
    "paper": {
        # SVHN (Sec. 3: 7-layer conv nets) is not a harness data set; CIFAR-10 with the same MLP head
        # stands in. Schedule not read in the paper: Adam, cosine, 100000 steps of batch 128
        "dataset": "cifar10", "seeds": 3, "hidden": [1024, 1024, 1024],
        "train": {"steps": 100000, "batch_size": 128, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
        "bits": {"weights": [1, 2, 4], "activations": 2, "gradients": 6},
    },
}


# ------------------------------------------------------------------------------ the quantizers
class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return g


def quantize_k(r: torch.Tensor, k: int) -> torch.Tensor:
    """``round((2^k - 1) r) / (2^k - 1)`` with the straight-through gradient (Eq. 5)."""
    n = float(2**k - 1)
    return _RoundSTE.apply(r * n) / n


def quantize_weight(w: torch.Tensor, k: int) -> torch.Tensor:
    """DoReFa-Net's k-bit weights (Eq. 9), differentiable through ``tanh`` and the max; ``k = 1``: the
    layer's ``E(|w|) sign(w)`` (Eq. 7) with the identity gradient."""
    if k == 1:
        return straight_through(w, binary_weight(w.detach().reshape(1, -1)).view_as(w))
    t = torch.tanh(w)
    return 2 * quantize_k(t / (2 * t.abs().max()) + 0.5, k) - 1


def quantize_activation(x: torch.Tensor, k: int) -> torch.Tensor:
    """``quantize_k(clip(x, 0, 1))`` (Eq. 11 with the released code's bounded nonlinearity)."""
    return quantize_k(torch.clamp(x, 0.0, 1.0), k)


def quantize_gradient(dr: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 12: ``2 max0|dr| [quantize_k(clip(dr / (2 max0|dr|) + 1/2 + N(k), 0, 1)) - 1/2]``, ``N(k)``
    uniform in ``[-1/2, 1/2] / (2^k - 1)``, ``max0`` per example."""
    n = float(2**k - 1)
    m = dr.abs().flatten(1).amax(1).clamp(min=1e-30).view(-1, *([1] * (dr.dim() - 1)))
    noise = (torch.rand(dr.shape, generator=generator, device=dr.device, dtype=dr.dtype) - 0.5) / n
    x = torch.clamp(dr / (2 * m) + 0.5 + noise, 0.0, 1.0)
    return 2 * m * (torch.round(x * n) / n - 0.5)


class _GradQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:  # type: ignore[override]
        ctx.k = k
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return quantize_gradient(g, ctx.k), None


class GradientQuantizer(nn.Module):
    """The identity forward; the gradient passing back through it quantized by Eq. 12 (``f_G``)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GradQuant.apply(x, self.bits) if self.training else x


class ActivationQuantizer(nn.Module):
    """``f_a``: the bounded activation ``clip(x, 0, 1)``, quantized to ``bits`` (``None``: clip only)."""

    def __init__(self, bits: int | None) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, 1.0) if self.bits is None else quantize_activation(x, self.bits)


class _DoReFaWeight(QuantizedWeight):
    bits: int = 1

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_weight(w, self.bits)

    def propagation_weight(self) -> torch.Tensor:
        return quantize_weight(self.weight, self.bits)


class DoReFaLinear(_DoReFaWeight, QuantizedLinear):
    """A fully-connected layer with k-bit DoReFa weights."""


class DoReFaConv2d(_DoReFaWeight, QuantizedConv2d):
    """A convolution with k-bit DoReFa weights."""


def dorefa_network(model: nn.Sequential, w_bits: int, a_bits: int, g_bits: int) -> nn.Sequential:
    """A copy of the fp32 network as a DoReFa-Net: the layers XNOR-Net binarises (all but the first and
    last, :func:`~atlas_reproductions.rastegari2016.binarized_indices`) with ``w_bits`` weights; the ReLU
    before each of them replaced by ``f_a`` (``a_bits``), the one before the last layer by ``clip(x, 0, 1)``;
    an ``f_G`` (``g_bits``) after every weighted layer but the last."""
    out = copy.deepcopy(model)
    weighted = [i for i, m in enumerate(out) if isinstance(m, (nn.Linear, nn.Conv2d))]
    quantized = set(binarized_indices(out))
    for i in weighted:
        old = out[i]
        if i in quantized:
            if isinstance(old, nn.Linear):
                new: nn.Module = DoReFaLinear(old.in_features, old.out_features, bias=old.bias is not None)
            else:
                new = DoReFaConv2d(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                                   padding=old.padding, bias=old.bias is not None)
            new.bits = w_bits
            new.load_state_dict(old.state_dict())
            out[i] = new.to(old.weight.device)
        j = i - 1
        while j >= 0 and isinstance(out[j], (nn.Flatten, nn.MaxPool2d)):
            j -= 1
        if j >= 0 and isinstance(out[j], nn.ReLU):
            out[j] = ActivationQuantizer(a_bits if i in quantized else None)
    layers: list[nn.Module] = []
    for i, m in enumerate(out):
        layers.append(m)
        if i in weighted and i != weighted[-1]:
            layers.append(GradientQuantizer(g_bits))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------ the deployed encoding
def encode(model: nn.Sequential) -> dict[str, ak.LowBitWeight]:
    """Each quantized layer's weights as stored: k-bit codes (``atlas_kernels.quantize_uniform(...,
    "dorefa")``) or, at 1 bit, the packed signs with ``E(|w|)`` (``atlas_kernels.encode_binary``)."""
    out: dict[str, ak.LowBitWeight] = {}
    for i, m in enumerate(model):
        if isinstance(m, _DoReFaWeight):
            w = m.weight.detach().flatten(1).cpu()
            if m.bits == 1:
                out[f"{i}.weight"] = ak.encode_binary(torch.where(w >= 0, 1.0, -1.0), w.abs().mean())
            else:
                out[f"{i}.weight"] = ak.quantize_uniform(w, m.bits, "dorefa")
    return out


def storage(model: nn.Sequential) -> list[measure.Encoded]:
    """The deployed model: each quantized layer's encoding, every other parameter in fp32."""
    enc = encode(model)
    parts = [measure.encoded(name, q, f"{q.bits}-bit DoReFa codes") for name, q in enc.items()]
    return parts + measure.fp32_parts(model, skip=sorted(enc))


def train_dorefa(run: Run, initial: nn.Sequential, w_bits: int, a_bits: int, g_bits: int) -> nn.Sequential:
    return run.train(dorefa_network(initial, w_bits, a_bits, g_bits), run.dataset().train,
                     run.train_config("train"), desc=f"dorefa W{w_bits}A{a_bits}G{g_bits}")


@reproduction("zhou2016b", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    hidden: Sequence[int] = list(cfg["hidden"])
    bits = cfg["bits"]
    a_bits, g_bits, w_list = int(bits["activations"]), int(bits["gradients"]), [int(b) for b in bits["weights"]]
    initial = network(data.input_shape, data.num_classes, [], hidden).to(run.device)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32")
    base_acc = run.accuracy(baseline, data.test)
    accs: dict[int, float] = {}
    models: dict[int, nn.Sequential] = {}
    for wb in w_list:
        models[wb] = train_dorefa(run, initial, wb, a_bits, g_bits)
        accs[wb] = run.accuracy(models[wb], data.test)

    w1 = models[min(w_list)]
    parts = storage(w1)
    total = measure.storage_bits(parts)
    enc = encode(w1)
    n_q = sum(q.shape[0] * q.shape[1] for q in enc.values())
    q_bits = sum(p.bits for p in parts if "DoReFa" in p.what)
    train = cfg["train"]
    arch = "-".join(str(h) for h in hidden)
    run.record("abstract-comparable", model=f"MLP {arch} + BN, DoReFa-Net W/A/G = {min(w_list)}/{a_bits}/{g_bits}",
               differs=(f"MLP {arch} + BN (paper: SVHN conv nets, AlexNet), first and last layers fp32; "
                        f"{train['steps']} Adam steps of batch {train['batch_size']}, cosine from {train['lr']}; "
                        "fp32 and DoReFa from the same initial weights for the same steps"),
               metrics={
                   **measure.accuracy_change(base_acc, accs[min(w_list)]),
                   **{f"w{wb}_accuracy_change_pp": accs[wb] - base_acc for wb in w_list if wb != min(w_list)},
                   "storage_bits": float(total),
                   "storage_compression": measure.dense_bits(baseline) / total,
                   "weight_storage_compression": 32 * n_q / q_bits,
               },
               curves=[
                   controls.Series(f"DoReFa-Net (A{a_bits}, G{g_bits})", controls.BITS, controls.ACCURACY,
                                   {float(wb): accs[wb] for wb in w_list}),
                   controls.quantization_curve(run, baseline, w_list, None),
               ])
