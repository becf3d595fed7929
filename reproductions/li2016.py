"""Ternary Weight Networks (Li, Zhang & Liu, 2016; arXiv:1605.04711).

Method (Sec. 2): each layer's weights ``W`` are approximated by ``alpha * W_t`` with ternary
``W_t in {-1, 0, +1}`` minimising ``||W - alpha W_t||_2``. With a threshold ``Delta``,
``W_t_i = sign(W_i)`` where ``|W_i| > Delta`` and 0 elsewhere, and the optimal scale for that threshold
is ``alpha* = mean(|W_i| : |W_i| > Delta)`` (Eq. 5-6). The exact optimal threshold has no closed form;
assuming the weights uniformly or normally distributed the paper uses the approximation
``Delta* = 0.7 * E(|W|)`` (Eq. 9), computed per layer. Training follows BinaryConnect (which TWN cites
and keeps): full-precision latent weights, the ternary weights ``alpha W_t`` in the forward and backward
propagations, the gradient applied to the latent weights through the straight-through estimator
(here imported from :mod:`atlas_reproductions.courbariaux2015`). At inference only the 2-bit codes and one
fp32 ``alpha`` per layer are stored: up to 16x smaller than fp32.

Claim (abstract; Sec. 3, MNIST, LeNet-5 32C5-MP2-64C5-MP2-512FC-SVM): the ternary network's accuracy is
very close to the full-precision network's, with a model 16x smaller. Checked here as
``accuracy_change_pp`` against the harness's own fp32 LeNet-5 (same architecture, initial weights and
schedule) and ``storage_compression`` from the actual encoding: the bytes of each layer's codes
``W_t + 1`` packed at 2 bits in int32 words, one row of words per output channel, with its fp32
``alpha`` and the encoding's fp32 zero point (``atlas_kernels.encode_ternary``, the format its
``lowbit_matmul`` runs; a row's last word is zero-padded), plus the fp32 biases.

Harness differs: the quick profile uses Fashion-MNIST (MNIST cannot be downloaded here), the harness's
LeNet-5 (Caffe's 20C5-MP2-50C5-MP2-500FC-10 with biases and softmax cross-entropy, not the paper's
32-64-512 network with an SVM output) at half its width (10-25-250: the full width's three seeds took
160 s on 2 cores, over a quick profile's 90 s; the smoke and paper profiles use the full width) and 1,300 optimizer steps of batch 100 (2.2 passes over the 60000
training examples) with a cosine schedule (fp32 and ternary each trained from the same initial
weights for the same steps; the paper trains to convergence). Every
convolution and fully-connected layer is ternarised; biases stay fp32.

The curve: the ternary network's accuracy at its stored 2 bits beside the fp32 LeNet-5's weights
uniformly quantized after training to 8, 4 and 2 bits (:mod:`atlas.harness.controls`, post-training:
the same training steps as TWN), so training through the ternarisation is compared with quantizing a
trained network at the same storage.

Extra metrics: ``weight_storage_compression`` (32-bit weights against the ternary layers' encodings
alone), ``zero_fraction`` (share of ternary weights that are 0), and latency (the paper states no
speed-up): ``dense_latency_us`` / ``encoded_latency_us`` / ``speedup``, the ternary fully-connected
layers at batch 1 run through ``atlas_kernels.lowbit_matmul`` (PyTorch CPU fallback here, which
unpacks the codes at every call; Triton on CUDA) against the same weights dense in fp32, timed in the
same run.

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "reproduced" (3 seeds, the
mean deciding, full-width LeNet-5, 3 epochs). Now the 95% interval decides, and the quick profile trains
LeNet-5 at half width (the time budget).
"""

from __future__ import annotations

import copy

import atlas_kernels as ak
import torch
from atlas_reproductions.courbariaux2015 import (
    QuantizedConv2d,
    QuantizedLinear,
    quantize_layers,
    quantized_layers,
)
from pydantic import PositiveFloat
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    lenet5_width: PositiveFloat  # the harness LeNet-5's width multiplier
    train: TrainConfig  # each of the two models: the fp32 baseline and the ternary network


PROFILES = {
    "smoke": {
        # 2 passes over digits' 1437 examples at batch 64
        "dataset": "digits", "seeds": 1, "lenet5_width": 1.0,
        "train": {"steps": 45, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "weight_decay": 1e-4,
                  "schedule": "cosine"},
    },
    "quick": {
        # 1,300 steps of batch 100 (2.2 passes over Fashion-MNIST) for each of fp32 and ternary, per
        # seed; LeNet-5 at half width: the full width's 800 steps took 160 s for 3 seeds on 2 cores.
        "dataset": "fashion-mnist", "seeds": 3, "lenet5_width": 0.5,
        "train": {"steps": 1300, "batch_size": 100, "optimizer": "sgd", "lr": 0.02, "weight_decay": 1e-4,
                  "schedule": "cosine"},
    },
    "paper": {
        # Sec. 3: MNIST, LeNet-5, SGD with momentum and weight decay; the schedule here is the harness's
        # step decay, not the paper's exact iteration counts (24000 steps = 40 epochs of 60000 at 100).
        "dataset": "mnist", "seeds": 3, "lenet5_width": 1.0,
        "train": {"steps": 24000, "batch_size": 100, "optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-4,
                  "schedule": "step"},
    },
}

THRESHOLD_FACTOR = 0.7  # Eq. 9: Delta* ~= 0.7 E(|W|)


def ternary_threshold(w: torch.Tensor) -> torch.Tensor:
    """``Delta* = 0.7 * mean(|W|)`` over the whole layer (Eq. 9)."""
    return THRESHOLD_FACTOR * w.abs().mean()


def ternary_scale(w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``alpha* = mean(|W_i| : |W_i| > Delta)`` (Eq. 6); 0 if no weight exceeds the threshold."""
    mask = w.abs() > delta
    return (w.abs() * mask).sum() / mask.sum().clamp(min=1)


def ternary_sign(w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``W_t``: ``sign(W_i)`` where ``|W_i| > Delta``, 0 elsewhere (Eq. 5)."""
    return torch.sign(w) * (w.abs() > delta).to(w.dtype)


def ternarize(w: torch.Tensor) -> torch.Tensor:
    """The layer's ternary weights ``alpha* W_t`` with the approximate threshold."""
    delta = ternary_threshold(w)
    return ternary_scale(w, delta) * ternary_sign(w, delta)


class _Ternary:
    """TWN's quantiser: ``alpha* W_t``, in training and at test time."""

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return ternarize(w)


class TernaryLinear(_Ternary, QuantizedLinear):
    """A fully-connected layer propagating with ternary weights."""


class TernaryConv2d(_Ternary, QuantizedConv2d):
    """A convolution propagating with ternary weights."""


def encode_ternary_layers(model: nn.Module) -> dict[str, ak.LowBitWeight]:
    """The deployed model's ternary layers as stored and run: each layer's ``W_t`` (Eq. 5, threshold of
    Eq. 9) as 2-bit codes, one row of int32 words per output channel, with its fp32 ``alpha`` (Eq. 6):
    ``atlas_kernels.encode_ternary`` (a convolution as its out x (in * k * k) matrix). Keyed by weight
    parameter name; each decodes to exactly :func:`ternarize` of the layer's latent weight."""
    out: dict[str, ak.LowBitWeight] = {}
    for name, layer in quantized_layers(model):
        w = layer.weight.detach()
        delta = ternary_threshold(w)
        out[f"{name}.weight"] = ak.encode_ternary(ternary_sign(w, delta).reshape(w.shape[0], -1),
                                                  ternary_scale(w, delta))
    return out


def ternary_storage(model: nn.Module) -> list[measure.Encoded]:
    """The deployed model: the bytes of each ternary layer's encoding (packed 2-bit codes, its
    ``alpha`` and the encoding's fp32 zero point); every other parameter (the biases) in fp32."""
    encoded = encode_ternary_layers(model)
    parts = [measure.encoded(name, q, "2-bit ternary codes and alpha") for name, q in encoded.items()]
    return parts + measure.fp32_parts(model, skip=sorted(encoded))


def ternary_latency(model: nn.Module) -> dict[str, float]:
    """The ternary fully-connected layers at batch 1 through ``atlas_kernels.lowbit_matmul`` (2-bit codes
    unpacked on the fly) against the same ternary weights dense in fp32."""
    params = dict(model.named_parameters())
    layers = [(q.dequantize().to(params[n].device), q.to(params[n].device))
              for n, q in encode_ternary_layers(model).items() if params[n].dim() == 2]
    return measure.layers_latency(layers, ak.lowbit_matmul)


def train_ternary(run: Run, initial: nn.Module) -> nn.Module:
    """Ternarise every conv / fc layer of the initial network and train it with the ternary weights in
    both propagations, updating the full-precision latent weights (STE)."""
    model = quantize_layers(copy.deepcopy(initial), TernaryLinear, TernaryConv2d)
    return run.train(model, run.dataset().train, run.train_config("train"), desc="ternary")


@reproduction("li2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    width = run.config["lenet5_width"]
    initial = run.model("lenet-5", width=width)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32 baseline")
    base_acc = run.accuracy(baseline, data.test)
    twn = train_ternary(run, initial)
    acc = run.accuracy(twn, data.test)

    parts = ternary_storage(twn)
    bits = measure.storage_bits(parts)
    weights = [layer.weight for _, layer in quantized_layers(twn)]
    n_weights = sum(w.numel() for w in weights)
    code_bits = sum(p.bits for p in parts if p.what == "2-bit ternary codes and alpha")
    zeros = sum(int((ternary_sign(w.detach(), ternary_threshold(w.detach())) == 0).sum()) for w in weights)
    train = run.config["train"]
    run.record(
        "mnist-lenet5",
        model=f"LeNet-5 (20C5-MP2-50C5-MP2-500FC-10) at width {width:g}, all conv/fc layers ternary",
        metrics={
            **measure.accuracy_change(base_acc, acc),
            "params": measure.count_params(twn),
            "storage_bits": bits,
            "storage_compression": measure.dense_bits(baseline) / bits,
            "weight_storage_compression": 32 * n_weights / code_bits,
            "zero_fraction": zeros / n_weights,
            **ternary_latency(twn),
        },
        differs=f"harness LeNet-5 (20-50-500, softmax) at width {width:g} instead of 32-64-512 with SVM output; "
                + (f"first {limit} training examples; " if (limit := run.config.get("train_limit")) else "")
                + f"{train['steps']} steps of batch {train['batch_size']} each for fp32 and ternary "
                "from the same initial weights",
        notes=measure.latency_note("atlas_kernels.lowbit_matmul on 2-bit ternary codes", weights[0]),
        baseline=("lenet-5", "baseline_accuracy"),
        baseline_spec={} if width == 1.0 else {"width": width},
        # ternary codes stored at 2 bits, beside the fp32 model uniformly quantized after the same
        # training steps (the control, post-training: the same budget)
        curves=[controls.Series("TWN (ternary, stored at 2 bits)", controls.BITS, controls.ACCURACY, {2.0: acc}),
                controls.quantization_curve(run, baseline, [8, 4, 2], None)],
    )
