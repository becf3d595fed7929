"""Neural Networks with Few Multiplications (Lin, Courbariaux, Memisevic & Bengio, ICLR 2016;
arXiv:1510.03009).

Method: training without most of its floating-point multiplications, in two parts.

- *Stochastic binary or ternary weights in the propagations.* Binary connect is BinaryConnect's
  stochastic binarisation (:mod:`atlas_reproductions.courbariaux2015`, imported here): ``w_b = +1``
  with probability ``hard_sigmoid(w) = clip((w + 1) / 2, 0, 1)``, ``-1`` otherwise. Ternary connect,
  for a latent weight clipped to ``[-1, 1]``, draws ``w_t = sign(w)`` with probability ``|w|`` and ``0``
  otherwise (so ``E[w_t] = w``). Products with these weights are sign changes (and zeros); the
  gradient with respect to ``w_b`` / ``w_t`` is applied to the latent weights, clipped to ``[-1, 1]``
  after each update (BinaryConnect's Algorithm 1).
- *Quantized back propagation.* The weight gradient of a layer is ``dC/dW = delta^T x``, the error
  signal at the layer's output times its input. The input ``x`` is quantized, stochastically and
  without bias, to a signed power of two: with ``2^e <= |x| < 2^(e+1)``, ``x_q = sign(x) 2^(e+1)`` with
  probability ``|x| / 2^e - 1`` and ``sign(x) 2^e`` otherwise (``x = 0`` stays 0); so the products in
  ``delta^T x_q`` are binary shifts. The error propagated to the layer below, ``delta W_b``, multiplies
  by the binary (ternary) weights: sign changes. The forward pass uses ``x`` unquantized.

This follows the released code (hantek/BinaryConnect, ``layer.py``: ``quantized_bprop`` draws the
power of two exactly so; ``mnist.py``: stochastic training, evaluated with the real-valued weights,
``binary_test = False``). Test-time inference uses the real-valued latent weights, as BinaryConnect's
stochastic variant (Sec. 2.6 of arXiv:1511.00363): the multiplications saved are training's.

Claims (the abstract of arXiv:1510.03009, read on arxiv-vanity's rendering, which names no version;
the tables could not be read here): "Experimental results across 3 popular datasets (MNIST, CIFAR10,
SVHN) show that this approach not only does not hurt classification performance but can result in
even better performance than standard stochastic gradient descent training". The atlas reads "does not
hurt" as a loss of at most 1 pp of test accuracy against the same harness's fp32 MLP (same architecture,
initial weights, loss and steps) and checks it for binary connect (``binary-connect-qb``) and ternary
connect (``ternary-connect-qb``), each with quantized back propagation.

What is measured: ``baseline_accuracy`` (the fp32 MLP, standard back propagation), ``accuracy`` (the
method's MLP tested with its real-valued weights, as the paper), ``accuracy_change_pp``; and
``deterministic_test_accuracy`` (the same latent weights rounded at test time: signs for binary
connect, ``round(w)`` in ``{-1, 0, 1}`` for ternary connect), with its storage from the actual
encoding (``atlas_kernels.encode_binary`` 1-bit codes, ``encode_ternary`` 2-bit codes; BN in fp32):
``deterministic_storage_compression``. The curve: those deterministic test accuracies at 1 bit (binary)
and 2 bits (ternary) beside the fp32 MLP's weights uniformly quantized after training to 1, 2, 4 and 8
bits (:func:`atlas.harness.controls.quantization_curve`, post-training: the same steps).

Harness differs: Fashion-MNIST (MNIST cannot be downloaded here); BinaryConnect's MLP
(:func:`~atlas_reproductions.courbariaux2015.bc_mlp`: 3 x 256 ReLU units in the quick profile, BN,
squared hinge loss; the released code: 3 x 1024) and BinaryConnect's quick optimizer (Adam from 0.01,
cosine schedule, the latent weights' rate scaled by the inverse of Glorot's bound, which plays the
part of the released code's weight scale ``W0``; the released code: SGD from 0.3 decayed to 0.01 over
1000 epochs), 400 steps of batch 200 per model in the quick profile. The error signal at a layer is
taken at its output before batch normalisation (the released code takes it after BN, which its own
comment calls a bug). No bound on the exponents of the powers of two.

Quick verdict: not reproduced (3 seeds): binary connect -2.66 pp [-2.77, -2.56], ternary connect
-2.12 pp [-2.92, -1.32] against the fp32 MLP, both tested with real-valued weights; rounded at test
(1 bit, 2 bits) they keep 77-79 % and 83-84 %, above the post-training control at 1 bit (64-71 %) and
2 bits (81 %). See :data:`DIAGNOSIS`.
"""

from __future__ import annotations

import copy

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from atlas_reproductions.courbariaux2015 import (
    QuantizedConv2d,
    QuantizedLinear,
    bc_mlp,
    binarize,
    binarize_deterministic,
    clip_latent,
    glorot_lr_groups,
    hinge,
    quantize_layers,
    quantized_layers,
)
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    hidden: list[PositiveInt]  # widths of the hidden layers (the released mnist.py: 3 x 1024)
    train: TrainConfig  # each model's training: fp32, binary and ternary connect, the same budget


PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64, 64],
              "train": {"steps": 67, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    # 400 Adam steps of batch 200 (1.3 passes over Fashion-MNIST) per model, three models a seed
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256, 256],
              "train": {"steps": 400, "batch_size": 200, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "paper": {
        # released mnist.py: 3 x 1024, BN, batch 200, 1000 epochs of its 50000 training examples =
        # 250000 steps (SGD 0.3 -> 0.01 there; BinaryConnect's Adam rate here, cosine)
        "dataset": "mnist", "seeds": 3, "hidden": [1024, 1024, 1024],
        "train": {"steps": 250000, "batch_size": 200, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
}

CLAIMS = {"binary": "binary-connect-qb", "ternary": "ternary-connect-qb"}


# ------------------------------------------------------------------------------ weights
def ternarize_stochastic(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ternary connect: ``sign(w)`` with probability ``|w|`` (``w`` in ``[-1, 1]``), else 0."""
    u = torch.rand(w.shape, generator=generator, device=w.device, dtype=w.dtype)
    return torch.where(u < w.abs().clamp(max=1.0), torch.sign(w), torch.zeros_like(w))


def ternarize_deterministic(w: torch.Tensor) -> torch.Tensor:
    """``round(w)`` of a latent weight in ``[-1, 1]``: the most probable ternary value."""
    return torch.round(w.clamp(-1.0, 1.0))


# --------------------------------------------------------------------- quantized back propagation
def quantize_pow2_stochastic(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` rounded at random to one of the two signed powers of two around it, without bias: with
    ``2^e <= |x| < 2^(e+1)``, ``sign(x) 2^(e+1)`` with probability ``|x| / 2^e - 1``, else
    ``sign(x) 2^e``; zero stays zero."""
    a = x.abs()
    nz = a > 0
    e = torch.floor(torch.log2(torch.where(nz, a, torch.ones_like(a))))
    low = torch.exp2(e)
    p_up = (a / low - 1.0).clamp(0.0, 1.0)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    q = torch.where(u < p_up, 2.0 * low, low)
    return torch.where(nz, torch.sign(x) * q, torch.zeros_like(x))


class _QuantizedBackprop(torch.autograd.Function):
    """``y = x W^T`` whose weight gradient is ``delta^T quant(x)`` (Sec. 2: quantized back
    propagation); the input's gradient ``delta W`` as usual (W binary or ternary: sign changes)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        return x @ w.t()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        return grad @ w, grad.t() @ quantize_pow2_stochastic(x)


def quantized_backprop_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return _QuantizedBackprop.apply(x, w)


class _FewMultiplications:
    """Stochastic binary or ternary weights during training; the real-valued ones at test time."""

    kind: str = "binary"
    training: bool
    quantize_at_test = False

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "binary":
            return binarize(w, stochastic=self.training)
        return ternarize_stochastic(w) if self.training else ternarize_deterministic(w)


class FewMultLinear(_FewMultiplications, QuantizedLinear):
    """A fully-connected layer with stochastic binary / ternary weights and quantized back propagation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, kind: str) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if kind not in ("binary", "ternary"):
            raise ValueError(f"kind must be 'binary' or 'ternary', got {kind!r}")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.propagation_weight()
        y = quantized_backprop_linear(x, w) if self.training else F.linear(x, w)
        return y if self.bias is None else y + self.bias


class FewMultConv2d(_FewMultiplications, QuantizedConv2d):
    """Convolutions keep standard back propagation here (the paper's CIFAR-10 / SVHN nets are not run)."""

    def __init__(self, *args, kind: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kind = kind


def few_multiplications_network(initial: nn.Module, kind: str) -> nn.Module:
    return quantize_layers(copy.deepcopy(initial), FewMultLinear, FewMultConv2d, kind=kind)


def train_few_multiplications(run: Run, initial: nn.Module, kind: str) -> nn.Module:
    model = few_multiplications_network(initial, kind)
    cfg = run.train_config("train")
    run.reseed(kind)
    return run.train(model, run.dataset().train, cfg, desc=f"{kind} connect + quantized backprop", loss_fn=hinge,
                     after_step=clip_latent, params=glorot_lr_groups(model, cfg.lr))


# ------------------------------------------------------------------ deterministic test, storage
def deterministic_view(model: nn.Module) -> nn.Module:
    """The trained network tested with its latent weights rounded: signs (binary) or round(w) (ternary)."""
    view = copy.deepcopy(model)
    for _, layer in quantized_layers(view):
        layer.quantize_at_test = True
    return view.eval()


def encode_deterministic(model: nn.Module) -> dict[str, ak.LowBitWeight]:
    out: dict[str, ak.LowBitWeight] = {}
    for name, layer in quantized_layers(model):
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        out[f"{name}.weight"] = (ak.encode_binary(binarize_deterministic(w)) if layer.kind == "binary"
                                 else ak.encode_ternary(ternarize_deterministic(w), 1.0))
    return out


def deterministic_storage(model: nn.Module) -> list[measure.Encoded]:
    encoded = encode_deterministic(model)
    parts = [measure.encoded(name, q, f"{q.bits}-bit codes") for name, q in encoded.items()]
    return parts + measure.fp32_parts(model, skip=sorted(encoded))


#: Why the atlas publishes "not reproduced" for both claims; shown beside the verdict.
DIAGNOSIS = """
The method was re-read against the abstract and the released code (hantek/BinaryConnect, layer.py and
mnist.py): stochastic binary (hard sigmoid) and ternary (sign with probability |w|) weights in the
propagations, latent weights clipped, the weight gradient from the layer's input rounded at random to
a neighbouring power of two (unbiased, unit-tested), the input gradient through the binary weights,
real-valued weights at test time, squared hinge loss and BN. On seed 100 (not a published seed), 400
steps: fp32 87.13 %; binary connect with quantized back propagation 84.19 %, without it 84.34 %;
ternary 84.65 % and 85.22 %: quantized back propagation costs 0.2-0.6 pp, the stochastic weights
themselves the rest (BinaryConnect's stochastic variant loses 1.2-1.3 pp at 750 steps in
courbariaux2015). With 4x the steps (1600) the fp32 MLP reaches 89.41 %, binary 87.56 % (-1.85 pp),
ternary 88.23 % (-1.18 pp): the gap narrows with budget but stays above 1 pp. The paper's claim is for
MNIST, CIFAR-10 and SVHN trained for hundreds of epochs (the released MNIST script: 1000), where the
noise of stochastic weights acts as a regulariser; the atlas takes the gap as the method's cost at these
budgets on Fashion-MNIST, not a refutation of that regime, which the paper profile measures.
"""


@reproduction("lin2016b", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    hidden = list(run.config["hidden"])
    initial = bc_mlp(data.input_shape, data.num_classes, hidden).to(run.device)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32 MLP",
                         loss_fn=hinge)
    base_acc = run.accuracy(baseline, data.test)
    base_bits = measure.dense_bits(baseline)
    models = {kind: train_few_multiplications(run, initial, kind) for kind in CLAIMS}
    det_acc = {kind: run.accuracy(deterministic_view(m), data.test) for kind, m in models.items()}
    curves = [controls.Series("binary / ternary connect + quantized backprop, rounded at test", controls.BITS,
                              controls.ACCURACY, {1.0: det_acc["binary"], 2.0: det_acc["ternary"]}),
              controls.quantization_curve(run, baseline, [1, 2, 4, 8], None)]
    arch = "-".join(str(h) for h in hidden)
    train = run.config["train"]
    differs = (f"MLP {arch} (released code: 1024-1024-1024), {train['steps']} Adam steps of batch "
               f"{train['batch_size']}, cosine LR from {train['lr']}, Glorot-scaled latent rate (released code: "
               "SGD 0.3 -> 0.01, weights scaled by W0); fp32 baseline: the same MLP, initial weights, loss and steps")
    for kind, claim in CLAIMS.items():
        model = models[kind]
        bits = measure.storage_bits(deterministic_storage(model))
        run.record(claim, model=f"MLP {arch} + BN, squared hinge loss, stochastic {kind} connect + quantized "
                   "back propagation, tested with real-valued weights", differs=differs, metrics={
                       **measure.accuracy_change(base_acc, run.accuracy(model, data.test)),
                       "deterministic_test_accuracy": det_acc[kind],
                       "deterministic_storage_compression": base_bits / bits,
                       "params": measure.count_params(model),
                   }, curves=curves if kind == "binary" else [], diagnosis=DIAGNOSIS)
