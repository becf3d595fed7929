"""Quantized Neural Networks: Training Neural Networks with Low Precision Weights and Activations
(Hubara, Courbariaux, Soudry, El-Yaniv & Bengio, JMLR 18(187), 2018; arXiv:1609.07061; QNN).

Method: the Binarized Neural Network (:mod:`atlas_reproductions.courbariaux2016`, itself BinaryConnect,
:mod:`atlas_reproductions.courbariaux2015`) with ``k``-bit instead of 1-bit weights and activations.
Every hidden unit outputs its batch-normalised pre-activation quantized to ``k`` bits, and every weight
propagates as its real-valued latent value quantized to ``k`` bits; the gradients are computed with the
quantized values and applied to the latent ones:

- the quantizer: the paper's linear quantization, ``LinearQuant(x) = Clip(round(x / s) * s, minV,
  maxV)``, on the range of BNN's ``Htanh``, ``[-1, 1]``, with the ``2^k`` levels a ``k``-bit code
  holds, ``s = 2 / (2^k - 1)``:

  ``q_k(x) = 2 * round((clip(x, -1, 1) + 1) / 2 * (2^k - 1)) / (2^k - 1) - 1``

  (``k = 2``: ``{-1, -1/3, 1/3, 1}``); ``k = 1`` is BNN's sign (``q_1(x) = +1 if x >= 0 else -1``,
  :func:`~atlas_reproductions.courbariaux2015.binarize_deterministic`), so that a 1-bit QNN is exactly
  the BNN;
- the straight-through estimator of BNN (Sec. 1.3 of BNN, kept here): forward ``q_k(r)``, backward
  ``g_r = g_q * 1_{|r| <= 1}``, the gradient of ``Htanh(r) = clip(r, -1, 1)``; for the weights, whose
  latent values are clipped to ``[-1, 1]`` after every update (BinaryConnect's Algorithm 1,
  :func:`~atlas_reproductions.courbariaux2015.clip_latent`), the indicator is always 1;
- everything else as BNN's: the squared hinge loss (L2-SVM output), batch normalisation after every
  layer, the first layer's input (the image) not quantized; Adam with one learning rate for every
  parameter, as in the QNN authors' PyTorch code (itayhubara/BinaryNet.pytorch, ``main_mnist.py``:
  plain Adam, latent weights clamped to [-1, 1] after each step; ``latent_lr: plain``). BNN's Theano
  code scales the latent weights' rate by the inverse of Glorot's bound (``latent_lr: glorot``,
  :func:`~atlas_reproductions.courbariaux2015.glorot_lr_groups`): at 1 bit that lets the small initial
  weights reach the clipping range, but at 2 and 4 bits it drives nearly every latent weight to the
  grid's ends (see Verdict history).

The paper's further steps (logarithmic quantization ``LogQuant``, 6-bit gradients, quantized RNNs on
Penn Treebank, shift-based BN/AdaMax, the XNOR kernel) are not run here: the XNOR kernel and its 7x are
BNN's (:mod:`atlas_reproductions.courbariaux2016`).

Claims (the abstract of arXiv:1609.07061, read; its tables could not be read here, so table values are
recorded as unconfirmed, without checks): "QNNs achieve prediction accuracy comparable to their 32-bit
counterparts" (MNIST, CIFAR-10, SVHN, ImageNet); the atlas reads "comparable" as at most 1 pp of
accuracy lost against the same harness's fp32 MLP (BNN's reading of "nearly state-of-the-art"), and
checks it at 2-bit (``qnn-2bit``) and 4-bit (``qnn-4bit``) weights and activations; the 1-bit case is
BNN's claim, judged in :mod:`atlas_reproductions.courbariaux2016`. ``imagenet-alexnet-w1a2`` (1-bit
weights, 2-bit activations: 51 % top-1), ``ptb-rnn-4bit`` and ``gradients-6bit``: not run here.

What is measured (``qnn-2bit``, ``qnn-4bit``): ``baseline_accuracy`` (the fp32 MLP), ``accuracy`` (the
QNN with its ``k``-bit weights and activations), ``accuracy_change_pp``, ``storage_bits`` /
``storage_compression`` (the deployed QNN's actual encoding against the fp32 MLP's 32 bits a parameter:
each layer's ``k``-bit weight codes packed in int32 words, ``atlas_kernels.LowBitWeight`` with the
affine decode ``w = (code - (2^k - 1)/2) * 2/(2^k - 1)`` and its two fp32 decode constants, what
``atlas_kernels.lowbit_matmul`` runs; BN's scale and shift in fp32) and ``weight_storage_compression``
(the weight matrices alone: 32 bits a weight against the bits of their encodings, padding included).
The curve (``qnn-2bit``): the QNN's accuracy at each trained bit-width (weights and activations; 1, 2
and 4 bits in the quick profile) beside the fp32 MLP's weights uniformly quantized after training to
the same bit-widths (:func:`atlas.harness.controls.quantization_curve`, post-training: every QNN trains
for the same steps as the fp32 MLP, no more). The control quantizes the weights only; the QNN's
activations are quantized as well.

Harness differs: the quick profile runs on Fashion-MNIST (MNIST cannot be downloaded here) with BNN's
quick MLP (3 x 256, :func:`~atlas_reproductions.courbariaux2016.mlp`: no biases, BN after every layer,
Glorot initialisation, no dropout) and BNN's quick optimizer (Adam, batch 200, cosine schedule from
0.01) for 400 steps per model (BNN's quick profile: 750; four models a seed here, so that the quick
run stays near a minute on 2 cores). The fp32 baseline is the same MLP with ReLU hidden
units and real weights, the same initial weights, loss and step budget. The quantizer's range is
BNN's ``[-1, 1]`` (the paper's ``minV``, ``maxV`` are not stated in the abstract); weights and
activations take the same number of bits. Test accuracy is the final model's.

Quick verdict: inconclusive for both claims (3 seeds, threshold -1 pp): 2 bits -1.37 pp [-1.85,
-0.89], 4 bits -0.89 pp [-1.10, -0.68]; the deployed networks through ``lowbit_matmul`` give the same
accuracy. The post-training control falls to about 81 % at 2 bits and 64-71 % at 1 bit, where the
QNNs keep 85-86 %. Part of the gap is the activation function, not the quantization: on seed 100 the
fp32 MLP with ``Htanh`` units in place of ReLU loses 0.8 pp against the ReLU MLP (750 steps). With
Glorot's initialisation and the plain rate the latent weights stay small (mean ``|w|`` about 0.07 after
400 steps) and use only 6-9 of the 16 levels of the 4-bit grid on ``[-1, 1]``. (The 4-bit networks of
seeds 0, 1 and 2 happen to classify the same number of test images correctly, 8605; their predictions
differ.)

Verdict history: a first, unpublished quick run used BNN's Theano rate (Glorot-scaled latent rate, 750
steps): 2 bits -1.72 pp, 4 bits -1.86 pp (fail), 4 bits no better than 1 bit. On seed 100 (not a
published seed) the 4-bit network lost 2.0 pp with that rate, 0.9 pp with 4-bit weights alone and
ReLU units, and 0.7 pp with the plain rate of the QNN authors' PyTorch code, which the profiles now use.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import atlas_kernels as ak
import torch
from atlas_reproductions.courbariaux2015 import (
    QuantizedConv2d,
    QuantizedLinear,
    QuantizedWeight,
    binarize_deterministic,
    clip_latent,
    glorot_lr_groups,
    hinge,
    quantize_layers,
    straight_through,
)
from atlas_reproductions.courbariaux2016 import mlp
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    hidden: list[PositiveInt]  # widths of the hidden layers (BNN's quick MLP; the paper's MNIST MLP: 3 x 4096)
    dropout_input: float = Field(0.0, ge=0, lt=1)  # on the image (BNN's released mnist.py: 0.2)
    dropout_hidden: float = Field(0.0, ge=0, lt=1)  # after every hidden activation (released mnist.py: 0.5)
    bits: list[PositiveInt] = Field(min_length=3)  # bit-widths trained (weights = activations): the curve
    # the latent weights' Adam rate: "plain" (the QNN authors' PyTorch code, itayhubara/BinaryNet.pytorch
    # main_mnist.py: one Adam rate for every parameter) or "glorot" (BNN's Theano code: scaled by the
    # inverse of Glorot's bound, courbariaux2015.glorot_lr_groups)
    latent_lr: Literal["plain", "glorot"] = "plain"
    train: TrainConfig  # each model's training: the fp32 MLP and every QNN, the same budget


PROFILES = {
    # BNN's smoke and quick MLPs and training (courbariaux2016's values, stated here): one QNN per
    # bit-width and the fp32 MLP, the same steps each
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64, 64], "bits": [1, 2, 4],
              "train": {"steps": 67, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256, 256], "bits": [1, 2, 4],
              "train": {"steps": 400, "batch_size": 200, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "paper": {
        # BNN's released MNIST MLP and schedule (3 x 4096, dropout 0.2 / 0.5, Adam from 0.003, batch 100,
        # 500000 steps; cosine here), at 1, 2 and 4 bits
        "dataset": "mnist", "seeds": 3, "hidden": [4096, 4096, 4096], "dropout_input": 0.2, "dropout_hidden": 0.5,
        "bits": [1, 2, 4],
        "train": {"steps": 500000, "batch_size": 100, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
    },
}

#: The claim checked at each bit-width (weights and activations).
CLAIMS = {2: "qnn-2bit", 4: "qnn-4bit"}


# ----------------------------------------------------------------------------------- the quantizer
def quantize_codes(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The ``k``-bit code (0 .. 2^k - 1) of each value, as integers (:func:`_codes`)."""
    return _codes(x, bits).to(torch.int64)


def _codes(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``round((clip(x, -1, 1) + 1) / 2 * (2^k - 1))`` in ``x``'s dtype; for ``k = 1`` BNN's sign
    (``x >= 0`` -> code 1)."""
    if bits < 1:
        raise ValueError(f"bits must be at least 1, not {bits}")
    if bits == 1:
        return (x >= 0).to(x.dtype)
    n = (1 << bits) - 1
    return torch.round((x.clamp(-1.0, 1.0) + 1.0) * (n / 2.0))


def linear_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``q_k(x)``: the ``2^k`` levels evenly spaced on ``[-1, 1]`` (LinearQuant on Htanh's range, step
    ``2 / (2^k - 1)``); ``k = 1``: exactly BinaryConnect's deterministic sign."""
    if bits == 1:
        return binarize_deterministic(x)
    n = (1 << bits) - 1
    step = torch.tensor(2.0 / n, dtype=x.dtype, device=x.device)
    # (code - (2^k - 1)/2) * step: the decode of the stored codes (:func:`encode_kbit`), bit for bit
    return (_codes(x, bits) - n / 2.0) * step


def quantized_tanh(x: torch.Tensor, bits: int) -> torch.Tensor:
    """A QNN unit: ``q_k(x)`` in the forward pass; in the backward pass the gradient of ``Htanh(x) =
    clip(x, -1, 1)``, ``g * 1_{|x| <= 1}`` (BNN's straight-through estimator)."""
    with torch.no_grad():
        q = linear_quantize(x, bits)
    return straight_through(x.clamp(-1.0, 1.0), q)


class QuantizedActivation(nn.Module):
    """A QNN hidden unit's activation: :func:`quantized_tanh` with ``bits`` bits."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantized_tanh(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class _KBit:
    """The weights' quantizer: ``q_k`` of the latent weight, in training and at test time."""

    bits: int = 1

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return linear_quantize(w, self.bits)


class KBitLinear(_KBit, QuantizedLinear):
    """A fully-connected layer propagating with ``k``-bit weights."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, bits: int) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.bits = bits


class KBitConv2d(_KBit, QuantizedConv2d):
    """A convolution propagating with ``k``-bit weights (the paper's CIFAR-10 / SVHN / ImageNet nets)."""

    def __init__(self, *args, bits: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bits = bits


def quantize_network(model: nn.Sequential, bits: int) -> nn.Sequential:
    """The QNN of an fp32 MLP: a copy with every hidden ReLU replaced by a ``bits``-bit
    :class:`QuantizedActivation` and every linear layer propagating with ``bits``-bit weights (the same
    latent weights). ``bits = 1``: BNN's network."""
    layers = [QuantizedActivation(bits) if isinstance(m, nn.ReLU) else m for m in copy.deepcopy(model)]
    return quantize_layers(nn.Sequential(*layers), KBitLinear, KBitConv2d, bits=bits)


def train_qnn(run: Run, initial: nn.Sequential, bits: int) -> nn.Sequential:
    """BNN's Algorithm 1 at ``bits`` bits: quantize the initial fp32 MLP's weights and activations, train
    with them in both propagations (squared hinge loss, Adam; the latent weights' rate plain or
    Glorot-scaled, ``latent_lr``) and clip the latent weights to [-1, 1] after every update."""
    model = quantize_network(initial, bits)
    cfg = run.train_config("train")
    params = glorot_lr_groups(model, cfg.lr) if run.config.get("latent_lr", "plain") == "glorot" else None
    run.reseed(f"qnn {bits} bits")
    return run.train(model, run.dataset().train, cfg, desc=f"qnn {bits}-bit", loss_fn=hinge,
                     after_step=clip_latent, params=params)


# ------------------------------------------------------------------------------ the deployed QNN
def encode_kbit(w: torch.Tensor, bits: int) -> ak.LowBitWeight:
    """A weight ``[N, K]`` (a convolution as its ``out x (in * kh * kw)`` matrix) as its packed ``k``-bit
    codes with the affine decode ``(code - (2^k - 1)/2) * 2/(2^k - 1)``, one constant each for the layer:
    it decodes exactly to ``q_k(w)``."""
    w2 = w.detach().reshape(w.shape[0], -1)
    n = (1 << bits) - 1
    dev = w2.device
    return ak.LowBitWeight(ak.pack_codes(quantize_codes(w2, bits), bits), torch.full((1,), 2.0 / n, device=dev),
                           torch.full((1,), n / 2.0, device=dev), None, bits, "affine", tuple(w2.shape))


def encode_qnn(model: nn.Module) -> dict[str, ak.LowBitWeight]:
    """Every quantized layer's weight as :func:`encode_kbit`, keyed by weight parameter name."""
    return {f"{name}.weight": encode_kbit(m.weight, m.bits) for name, m in model.named_modules()
            if isinstance(m, QuantizedWeight)}


def qnn_storage(model: nn.Module) -> list[measure.Encoded]:
    """The deployed QNN: the bytes of each layer's code encoding; BN's scale and shift in fp32."""
    encoded = encode_qnn(model)
    parts = [measure.encoded(name, q, f"{q.bits}-bit codes") for name, q in encoded.items()]
    return parts + measure.fp32_parts(model, skip=sorted(encoded))


@torch.no_grad()
def lowbit_forward(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The trained QNN's inference with every linear layer through ``atlas_kernels.lowbit_matmul`` on its
    packed codes (real-valued first-layer input, ``k``-bit activations after); the rest as in ``model``."""
    model.eval()
    encoded = encode_qnn(model)
    for name, m in model.named_children():
        if isinstance(m, QuantizedWeight):
            x = ak.lowbit_matmul(x, encoded[f"{name}.weight"].to(x.device))
        elif not isinstance(m, nn.Dropout):
            x = m(x)
    return x


@reproduction("hubara2018", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    hidden = list(cfg["hidden"])
    initial = mlp(data.input_shape, data.num_classes, hidden, dropout_input=cfg.get("dropout_input", 0.0),
                  dropout_hidden=cfg.get("dropout_hidden", 0.0)).to(run.device)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32 MLP",
                         loss_fn=hinge)
    base_acc = run.accuracy(baseline, data.test)
    base_bits = measure.dense_bits(baseline)

    bits_list: Sequence[int] = sorted(cfg["bits"])
    qnns = {k: train_qnn(run, initial, k) for k in bits_list}
    accs = {k: run.accuracy(m, data.test) for k, m in qnns.items()}
    curves = [controls.Series("QNN (weights and activations at k bits)", controls.BITS, controls.ACCURACY,
                              {float(k): a for k, a in accs.items()}),
              controls.quantization_curve(run, baseline, list(bits_list), None)]

    arch = "-".join(str(h) for h in hidden)
    train = cfg["train"]
    differs = (f"MLP {arch} (BNN's released MNIST MLP: 4096-4096-4096), {train['steps']} Adam steps of batch "
               f"{train['batch_size']}, cosine LR from {train['lr']}, dropout {cfg.get('dropout_input', 0.0):g}/"
               f"{cfg.get('dropout_hidden', 0.0):g}; quantizer range [-1, 1] (BNN's Htanh); fp32 baseline: the "
               "same MLP with ReLU units, initial weights, loss and steps")
    for k, claim in CLAIMS.items():
        if k not in qnns:
            continue
        model = qnns[k]
        parts = qnn_storage(model)
        bits = measure.storage_bits(parts)
        n_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, QuantizedWeight))
        code_bits = sum(p.bits for p in parts if p.what.endswith("-bit codes"))
        x_test = data.test.x.to(run.device)
        lowbit_acc = 100.0 * float((lowbit_forward(model, x_test).argmax(1).cpu() == data.test.y.cpu()).float().mean())
        run.record(claim, model=f"MLP {arch} + BN, L2-SVM output, {k}-bit weights and activations (first "
                   "layer's input real)", differs=differs, metrics={
                       **measure.accuracy_change(base_acc, accs[k]),
                       "params": measure.count_params(model),
                       "storage_bits": float(bits),
                       "storage_compression": base_bits / bits,
                       "weight_storage_compression": 32 * n_weights / code_bits,
                       "lowbit_kernel_accuracy": lowbit_acc,
                   }, curves=curves if k == 2 else [],
                   notes="lowbit_kernel_accuracy: the same QNN with every linear layer through "
                         "atlas_kernels.lowbit_matmul on its packed codes")

