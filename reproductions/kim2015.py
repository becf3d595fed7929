"""Bitwise Neural Networks (Kim & Smaragdis, ICML 2015 Workshop on Resource-Efficient Machine Learning;
arXiv:1601.06071).

Method (Sec. 2, Eq. 1-3): a network whose inputs, weights, biases and hidden signals are all bipolar
binaries (``B = {-1, +1}``), so that its feedforward pass needs only bit logic:

``a_i^l = b_i^l + sum_j w_ij^l XNOR z_j^(l-1)``, ``z_i^l = sign(a_i^l)``

with ``z^l`` in ``B^(K_l)``, ``W^l`` in ``B^(K_l x K_(l-1))`` and ``b^l`` in ``B^(K_l)``: on ±1 values XNOR is
the product, and the sum is ``K - 2 popcount(w XOR z)``; a weight matrix between two layers of 1024 units
is a 1024 x 1025 matrix of bits, the bias included (Sec. 1). Here the bias is that extra column, whose
input is the constant +1, so every layer is one XNOR-popcount product over ``K + 1`` bits (an odd count
for the harness's even widths, so a pre-activation is never 0 and its sign is never a tie).

The network is trained in two rounds (Abstract: "weight compression and noisy backpropagation"):

1. *Weight compression* (the real-valued network): every weight and bias is the ``tanh`` of a real
   latent value ``w = tanh(w_bar)``, bounded in ``(-1, 1)`` as its binary counterpart is; hidden units are
   ``tanh``; the input is the bipolar binary image. Trained with backpropagation and softmax
   cross-entropy.
2. *Noisy backpropagation* (the bitwise network): the latent values of round 1 initialise a network
   whose forward pass uses ``sign(w_bar)`` and ``sign(a)``: the real network's values with a
   quantization noise ``sign(x) - tanh(x)`` added. The errors are backpropagated through the real
   network's derivatives at those points (the noise is held constant: ``d sign(x) / dx`` is read as
   ``1 - tanh(x)^2``), and the update goes to the real latent ``w_bar``.

At test time only the bits are kept (``sign(w_bar)``): every layer runs as an XNOR-popcount product on
packed bits (``atlas_kernels.binary_matmul``, algorithm ``xnor``; 32 bits per int32 word, no scale), and
the class is the output layer's largest pre-activation.

Claims (arXiv:1601.06071v1: the abstract and Sec. 1-2 were read, the experiments' section and its table
could not be read here):

- ``mnist-bitwise-mlp`` (Abstract): weight compression and noisy backpropagation "result in a bitwise
  network that performs almost as well as its corresponding real-valued network", tested on MNIST
  represented with binary features; read as a test-accuracy loss of at most 1 pp against the
  real-valued network it is trained from. Every weight and bias is one bit (Sec. 1): 32x less weight
  storage than fp32.
- ``bitwise-feedforward`` (Abstract, Eq. 1-3): the feedforward pass "requires only basic bit logic":
  the network run as XNOR-popcount products on packed bits gives the same predictions as the network
  it is.

What is measured: ``mnist-bitwise-mlp``: ``baseline_accuracy`` (the round-1 real-valued network, tanh
weights and units, bipolar input), ``accuracy`` (the bitwise network), ``accuracy_change_pp``,
``storage_bits`` / ``storage_compression`` (the bitwise network's actual encoding, every layer's
weights and biases as ``atlas_kernels.binarize_weight(scale=False)`` packed signs, against the
real-valued network's fp32 parameters), ``weight_storage_compression`` (32 bits per parameter against
the bits of their encodings, padding included); the curve: the bitwise network at 1 bit beside the
real-valued network's weights uniformly quantized to 4, 2 and 1 bits (8 in the paper profile) and fine-tuned with the
straight-through estimator for the bitwise round's steps
(:func:`atlas.harness.controls.quantization_curve`; the control quantizes weights only, its hidden
units stay ``tanh``). ``bitwise-feedforward``: ``xnor_test_accuracy`` (the network through
``binary_matmul`` on packed bits), ``xnor_accuracy_change_pp`` (that minus the PyTorch bitwise
network's accuracy: 0 when the bit logic loses nothing) and, beside it, ``dense_latency_us`` /
``encoded_latency_us`` / ``speedup``: the real-valued network's fp32 forward pass against the bitwise
network's packed forward pass (the input's bits packed on the fly) on the same batch, one thread, in
the same run (not checked: the paper gives no measured speed).

Quick verdict: reproduced. The bitwise network is as accurate as the real-valued network it is trained
from (+0.2 pp, 95% interval -0.4 to +0.9 over 3 seeds; both near 84% on binarised Fashion-MNIST, where
the sign of each pixel loses information an fp32 MLP on the real image keeps), its bits take 30.6x less
storage than fp32 (the 785-bit rows padded to 800), and the XNOR-popcount network gives the same
predictions. The control at 1 bit (the real network's weights on a 1-bit grid, its tanh units kept,
fine-tuned for the same steps) reaches about the same accuracy while its hidden signals stay real.

Harness differs: Fashion-MNIST (MNIST cannot be downloaded here) in the quick profile; the bipolar
input is the sign of the standardised image (each pixel against the training set's mean intensity;
the paper's binary MNIST features were not read). The MLP is 784-256-256-10 (the paper's hidden
layers: 1024 units, Sec. 1); each layer's pre-activation is divided by ``sqrt(K + 1)`` during training,
which leaves every sign and the output's argmax unchanged (so the bitwise forward pass is Eq. 1-2
exactly) and keeps ``tanh`` and the softmax out of saturation; Adam with a cosine schedule in both
rounds; the paper's own schedules, widths and any further training tricks (its body was not read) are
not reproduced.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction

Mode = Literal["real", "bitwise"]


class Config(Profile):
    hidden: list[PositiveInt]  # hidden widths (the paper's: 1024 units, Sec. 1)
    compression: TrainConfig  # round 1: the real-valued network with tanh-compressed weights
    noisy: TrainConfig  # round 2: noisy backpropagation of the bitwise network (its extra steps)
    control_bits: list[PositiveInt]  # the control's bit-widths (uniform quantization, fine-tuned)
    latency_batch: PositiveInt = 256  # examples of the timed forward passes


PROFILES = {
    # smoke: digits, a 64-64 MLP, seconds. quick: Fashion-MNIST, 256-256, 600 Adam steps of batch 200
    # for the real network (2 passes) and 300 more for the bitwise one; the control gets the same 300
    # steps at each of its 3 bit-widths (the quick budget: about 1800 steps a seed)
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64, 64], "control_bits": [4, 2, 1], "latency_batch": 64,
              "compression": {"steps": 60, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"},
              "noisy": {"steps": 30, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256], "control_bits": [4, 2, 1],
              "compression": {"steps": 600, "batch_size": 200, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"},
              "noisy": {"steps": 300, "batch_size": 200, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "paper": {
        # MNIST, 1024-unit hidden layers (Sec. 1); three of them and the schedules were not read: 100
        # passes of batch 100 over 60000 images each round
        "dataset": "mnist", "seeds": 3, "hidden": [1024, 1024, 1024], "control_bits": [8, 4, 2, 1],
        "compression": {"steps": 60000, "batch_size": 100, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
        "noisy": {"steps": 60000, "batch_size": 100, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
}


# ------------------------------------------------------------------------------ the two rounds' units
def bipolar(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0`` (zero included), ``-1`` elsewhere: the bipolar binary of ``x``."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _NoisySign(torch.autograd.Function):
    """``sign(x)`` forward, exactly; ``g (1 - tanh(x)^2)`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return bipolar(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * (1 - torch.tanh(x).square())


def noisy_sign(x: torch.Tensor) -> torch.Tensor:
    """Noisy backpropagation's binarisation: ``sign(x)`` forward (``tanh(x)`` plus a noise held constant),
    the derivative of ``tanh`` backward: ``g (1 - tanh(x)^2)``."""
    return _NoisySign.apply(x)


class BipolarInput(nn.Module):
    """The input layer: the flattened image's bipolar binary (a fixed feature, no gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bipolar(x.flatten(1))


class BitwiseLinear(nn.Module):
    """A layer of Eq. 1 with its bias as the weight matrix's last column (input +1): ``weight`` is the
    latent ``w_bar`` [out, in + 1]. ``mode="real"``: weights ``tanh(w_bar)`` (weight compression);
    ``"bitwise"``: ``sign(w_bar)`` forward, ``tanh``'s derivative backward (noisy backpropagation). The
    pre-activation is divided by ``sqrt(in + 1)`` (signs and argmax unchanged)."""

    def __init__(self, in_features: int, out_features: int, mode: Mode = "real") -> None:
        super().__init__()
        self.in_features, self.out_features, self.mode = in_features, out_features, mode
        self.weight = nn.Parameter(torch.randn(out_features, in_features + 1))

    def effective_weight(self) -> torch.Tensor:
        return torch.tanh(self.weight) if self.mode == "real" else noisy_sign(self.weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z1 = F.pad(z, (0, 1), value=1.0)
        return F.linear(z1, self.effective_weight()) / math.sqrt(self.in_features + 1)


class BitwiseActivation(nn.Module):
    """A hidden unit: ``tanh(a)`` (``mode="real"``) or :func:`noisy_sign` (``"bitwise"``)."""

    def __init__(self, mode: Mode = "real") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.tanh(a) if self.mode == "real" else noisy_sign(a)


def network(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int]) -> nn.Sequential:
    """The real-valued network of round 1: bipolar input, ``BitwiseLinear`` layers in ``"real"`` mode with
    ``tanh`` units between them; the output layer's scaled pre-activations are the logits."""
    width = math.prod(input_shape)
    layers: list[nn.Module] = [BipolarInput()]
    for h in hidden:
        layers += [BitwiseLinear(width, h), BitwiseActivation()]
        width = h
    layers.append(BitwiseLinear(width, num_classes))
    return nn.Sequential(*layers)


def set_mode(model: nn.Sequential, mode: Mode) -> nn.Sequential:
    """A copy of ``model`` (the same latent values) whose layers and units run in ``mode``."""
    out = copy.deepcopy(model)
    out.__dict__.pop("_atlas_shared", None)
    for m in out.modules():
        if isinstance(m, BitwiseLinear | BitwiseActivation):
            m.mode = mode
    return out


def train_real(run: Run, model: nn.Sequential) -> nn.Sequential:
    """Round 1, weight compression: the network with ``tanh(w_bar)`` weights and ``tanh`` units."""
    return run.train(set_mode(model, "real"), run.dataset().train, run.train_config("compression"),
                     desc="real-valued network (weight compression)")


def train_bitwise(run: Run, real: nn.Sequential) -> nn.Sequential:
    """Round 2, noisy backpropagation, from the real network's latent values."""
    run.reseed("noisy backpropagation")
    return run.train(set_mode(real, "bitwise"), run.dataset().train, run.train_config("noisy"),
                     desc="bitwise network (noisy backpropagation)")


def as_plain(real: nn.Sequential) -> nn.Sequential:
    """The real-valued network in plain layers (for the shared control): the bipolar input, then
    ``nn.Linear`` layers holding ``tanh(w_bar) / sqrt(in + 1)`` (its last column the bias, so the
    control quantizes weights and biases alike, both on one grid) between ``nn.Tanh`` units; the same
    function as ``real`` in ``"real"`` mode."""
    layers: list[nn.Module] = []
    for m in real:
        if isinstance(m, BitwiseLinear):
            lin = nn.Linear(m.in_features + 1, m.out_features, bias=False)
            with torch.no_grad():
                lin.weight.copy_(torch.tanh(m.weight) / math.sqrt(m.in_features + 1))
            layers += [_AppendOne(), lin.to(m.weight.device)]
        elif isinstance(m, BitwiseActivation):
            layers.append(nn.Tanh())
        else:
            layers.append(copy.deepcopy(m))
    return nn.Sequential(*layers)


class _AppendOne(nn.Module):
    """Appends the bias input, the constant +1."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.pad(z, (0, 1), value=1.0)


# ------------------------------------------------------------------------------ the deployed network
def encode(model: nn.Sequential) -> dict[str, ak.BinaryWeight]:
    """Every layer's bits, ``sign(w_bar)`` [out, in + 1], packed 32 to an int32 word without a scale
    (``atlas_kernels.binarize_weight(scale=False)``), keyed by parameter name."""
    return {f"{i}.weight": ak.binarize_weight(bipolar(m.weight.detach()).cpu(), scale=False)
            for i, m in enumerate(model) if isinstance(m, BitwiseLinear)}


def storage(model: nn.Module) -> list[measure.Encoded]:
    """The deployed network: the packed bits of every layer (weights and biases); nothing else is stored."""
    return [measure.encoded(name, q, "1-bit weights and bias") for name, q in encode(model).items()]


@torch.no_grad()
def deployed_forward(model: nn.Sequential, encoded: dict[str, ak.BinaryWeight], x: torch.Tensor) -> torch.Tensor:
    """Eq. 1-2 on bits: the input's bipolar binary, then every layer's ``K - 2 popcount(w XOR z)`` over its
    bits and the bias bit (``atlas_kernels.binary_matmul``, ``xnor``; the input's signs packed on the fly),
    ``sign`` between layers; the output's pre-activations, divided by ``sqrt(K)`` as in training (the
    class, their argmax, does not depend on it)."""
    z = x.detach().cpu().flatten(1)
    layers = [(i, m) for i, m in enumerate(model) if isinstance(m, BitwiseLinear)]
    for n, (i, m) in enumerate(layers):
        z1 = F.pad(bipolar(z), (0, 1), value=1.0)
        a = ak.binary_matmul(z1, encoded[f"{i}.weight"], algorithm="xnor")
        z = a if n + 1 < len(layers) else a / math.sqrt(m.in_features + 1)
    return z


def accuracy_of_logits(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1).cpu() == labels.cpu()).float().mean())


@reproduction("kim2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    hidden = list(cfg["hidden"])
    real = train_real(run, network(data.input_shape, data.num_classes, hidden).to(run.device))
    base_acc = run.accuracy(real, data.test)
    bitwise = train_bitwise(run, real)
    acc = run.accuracy(bitwise, data.test)

    parts = storage(bitwise)
    bits = measure.storage_bits(parts)
    arch = "-".join(str(h) for h in hidden)
    rounds = f"{cfg['compression']['steps']} + {cfg['noisy']['steps']}"
    differs = (f"MLP {arch} (paper: 1024-unit hidden layers), Adam, cosine, {rounds} steps (weight compression + "
               "noisy backpropagation); input: sign of the standardised image; pre-activations divided by "
               "sqrt(K + 1) in training (signs unchanged); baseline: the round-1 real-valued network")
    model = f"bitwise MLP {arch}: bipolar input, weights, biases and hidden units (XNOR + popcount feedforward)"
    run.record("mnist-bitwise-mlp", model=model, differs=differs, metrics={
        **measure.accuracy_change(base_acc, acc),
        "params": measure.count_params(bitwise),
        "storage_bits": float(bits),
        "storage_compression": measure.dense_bits(real) / bits,
        "weight_storage_compression": measure.dense_bits(bitwise) / bits,
    }, curves=[
        controls.Series("bitwise network (noisy backpropagation)", controls.BITS, controls.ACCURACY, {1.0: acc}),
        controls.quantization_curve(run, as_plain(real), list(cfg["control_bits"]), run.train_config("noisy")),
    ])

    encoded = encode(bitwise)
    xnor_acc = accuracy_of_logits(deployed_forward(bitwise, encoded, data.test.x), data.test.y)
    batch = data.test.x[: int(cfg.get("latency_batch", 256))].cpu()
    real_cpu = copy.deepcopy(real).cpu().eval()
    with torch.no_grad():
        timed = measure.kernel_latency(lambda: real_cpu(batch), lambda: deployed_forward(bitwise, encoded, batch))
    notes = (f"speed-up: the real-valued network's fp32 forward pass (F.linear, tanh) against the bitwise network's "
             f"(atlas_kernels.binary_matmul on packed bits, xnor, the input packed on the fly) on {len(batch)} "
             "test examples, one CPU thread, in the same run; not checked")
    run.record("bitwise-feedforward", model=model + ", run by atlas_kernels.binary_matmul",
               differs=differs, notes=notes,
               metrics={"xnor_test_accuracy": xnor_acc, "xnor_accuracy_change_pp": xnor_acc - acc, **timed})
