"""Loss-aware Binarization of Deep Networks (Hou, Yao & Kwok, ICLR 2017; arXiv:1611.01600; LAB).

Method (Sec. 3): BinaryConnect (:mod:`atlas_reproductions.courbariaux2015`, imported here) binarises
each weight to its sign and trains a real-valued latent weight with the gradient taken at the binary
one; Binary-Weight-Network (BWN) adds a per-layer scale, ``w_hat_l = alpha_l * b_l`` with ``b_l =
sign(w_l)`` and ``alpha_l = ||w_l||_1 / n_l``, the best approximation of ``w_l`` in Euclidean norm. Both
ignore the loss. LAB chooses the binarised weights by a proximal Newton step on the loss itself: with a
diagonal approximation ``D_l = diag(d_l)`` of the Hessian, the step

``w_hat^t = argmin_{w_hat_l = alpha_l b_l} sum_l 1/2 (w_hat_l - w_l^t)^T D_l (w_hat_l - w_l^t)``,
``w_l^t = w_hat_l^{t-1} - grad_l(w_hat^{t-1}) / d_l``

has the closed form (Proposition 3.1)

``b_l = sign(w_l^t)``, ``alpha_l = ||d_l (.) w_l^t||_1 / ||d_l||_1``,

a curvature-weighted mean magnitude: weights in directions where the loss is more curved count more.
The curvature is the square root of the second moment Adam already keeps of each gradient, ``d_l =
sqrt(v_l) + eps`` (Sec. 3.2), and the latent update ``w^t`` is Adam's own step on the gradient at
``w_hat``, the latent weights clipped to ``[-1, 1]`` after it (as BinaryConnect). With ``D_l``
proportional to the identity LAB is BWN, which this file runs as the control with ``d_l = 1``.

Following the released code (houlu369/Loss-aware-Binarization, ``FNN/lab.py`` and ``FNN/mnist.py``):
``v_l`` is an exponential moving average (``beta_2 = 0.999``) of the squared gradients with respect to
``w_hat_l``, without Adam's bias correction (a constant factor that ``alpha_l`` does not see), updated
after each step and used at the next one (so ``v = 0`` at the first step, where ``alpha_l`` is BWN's);
``eps = 1e-8``; the scale ``alpha_l`` is a constant of the backward pass (the gradient is taken with
respect to ``w_hat`` and applied to the latent weights, the straight-through estimator); one Adam
learning rate for every parameter; squared hinge loss, batch normalisation after every layer. The
paper's LAB2 (binary activations as well) and its LSTMs are not run here.

Claims (the abstract of arXiv:1611.01600, read on OpenReview and ar5iv, which name no arXiv version;
the paper's tables could not be read here): "the proposed loss-aware binarization algorithm outperforms
existing binarization schemes, and is also more robust for wide and deep networks". ``fnn-binary-weights``
checks the first part on the paper's feed-forward setting (an MLP with binary weights, squared hinge
loss, BN): LAB's test accuracy against BinaryConnect's and BWN's on the same harness, same initial
weights and steps (``gain_over_binaryconnect_pp``, ``gain_over_bwn_pp``: per-seed differences, LAB
minus the other; pass when the 95 % interval lies at or above 0). ``wide-deep-networks`` and
``lstm-char-lm``: not run.

What is measured (``fnn-binary-weights``): ``baseline_accuracy`` (the fp32 MLP), ``accuracy`` (LAB),
``accuracy_change_pp``, ``binaryconnect_accuracy`` (:func:`~atlas_reproductions.courbariaux2015.
train_binaryconnect`, deterministic: signs without scale, the latent weights' rate scaled by Glorot's
factor as in its released code), ``bwn_accuracy`` (this file's training with ``d_l = 1``: BWN's scale),
the two gains, ``storage_bits`` / ``storage_compression`` (LAB's deployed network: each layer's signs as
1-bit codes with its ``alpha_l`` as the per-layer decode scale, ``atlas_kernels.encode_binary``; BN's
scale and shift in fp32) and ``weight_storage_compression`` (the weight matrices alone, padding
included). The curve: LAB's accuracy at its one level, 1 bit, beside the fp32 MLP's weights uniformly
quantized after training to 8, 4, 2 and 1 bits (:func:`atlas.harness.controls.quantization_curve`,
post-training: LAB trains for the same steps as the fp32 MLP).

Harness differs: Fashion-MNIST (MNIST cannot be downloaded here); BinaryConnect's MLP
(:func:`~atlas_reproductions.courbariaux2015.bc_mlp`, 3 x 256 ReLU units in the quick profile; the
released code: 3 x 2048) with BN after every layer (moving-average factor 0.15; the code: 0.1);
Adam from 0.01 (the released code's default) with a cosine schedule (the code: x0.1 at epochs 15
and 25 of 50), 400 steps of batch 200 per model in the quick profile (the code: 50 epochs of batch 100).
Test accuracy is the final model's (the code: at the best validation epoch).

Quick verdict: inconclusive (3 seeds): LAB gains +0.18 pp [-0.71, 1.07] over BinaryConnect and +0.12
pp [-0.79, 1.03] over BWN, each interval straddling 0; LAB loses 0.37 pp against the fp32 MLP, where
the post-training 1-bit control loses about 20 pp. The per-seed gains (-0.13 to +0.57 pp) are of the
size of the seed-to-seed spread of each binary network's accuracy here (about 0.2-0.3 pp), so three
seeds cannot decide them.
"""

from __future__ import annotations

import copy

import atlas_kernels as ak
import torch
from atlas_reproductions.courbariaux2015 import (
    QuantizedConv2d,
    QuantizedLinear,
    bc_mlp,
    binarize_deterministic,
    clip_latent,
    hinge,
    quantize_layers,
    quantized_layers,
    train_binaryconnect,
)
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    hidden: list[PositiveInt]  # widths of the hidden layers (the released FNN/mnist.py: 3 x 2048)
    train: TrainConfig  # each model's training: fp32, LAB, BWN and BinaryConnect, the same budget


PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64, 64],
              "train": {"steps": 67, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    # 400 Adam steps of batch 200 (1.3 passes over Fashion-MNIST) per model, four models a seed
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256, 256],
              "train": {"steps": 400, "batch_size": 200, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "paper": {
        # released FNN/mnist.py: 3 x 2048, batch 100, 50 epochs of its 50000 training examples = 25000
        # steps, Adam from 0.01 (decayed x0.1 at epochs 15 and 25; cosine here)
        "dataset": "mnist", "seeds": 3, "hidden": [2048, 2048, 2048],
        "train": {"steps": 25000, "batch_size": 100, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"},
    },
}

#: ``beta_2`` of the second-moment average and the ``eps`` added to its square root (released code).
BETA2 = 0.999
EPS = 1e-8


# ---------------------------------------------------------------------------------- the LAB step
def lab_scale(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Proposition 3.1's ``alpha = ||d (.) w||_1 / ||d||_1`` (``d > 0``, the diagonal Hessian)."""
    return (d * w).abs().sum() / d.sum()


def lab_binarize(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The proximal step's closed form: ``alpha * sign(w)``, the sign BinaryConnect's (zero -> +1)."""
    return lab_scale(w, d) * binarize_deterministic(w)


def curvature(v: torch.Tensor) -> torch.Tensor:
    """``d = sqrt(v) + eps`` from the second moment ``v`` of the gradients (Sec. 3.2)."""
    return v.sqrt() + EPS


class _LAB:
    """A layer whose propagations use ``alpha * sign(w)``, ``alpha`` from the running second moment
    ``v`` of its gradients (LAB) or from ``d = 1`` (BWN)."""

    weight: nn.Parameter
    second_moment: torch.Tensor
    curvature_weighted: bool = True

    def setup(self, curvature_weighted: bool) -> None:
        self.curvature_weighted = curvature_weighted
        # not in the state dict: the fp32 layer it replaces has none (quantize_layers loads it strictly)
        self.register_buffer("second_moment", torch.zeros_like(self.weight), persistent=False)  # type: ignore[attr-defined]

    def diagonal(self) -> torch.Tensor:
        """``d``: ``sqrt(v) + eps`` (LAB) or ones (BWN)."""
        if self.curvature_weighted:
            return curvature(self.second_moment)
        return torch.ones_like(self.weight)

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return lab_binarize(w, self.diagonal())


class LABLinear(_LAB, QuantizedLinear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 curvature_weighted: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.setup(curvature_weighted)


class LABConv2d(_LAB, QuantizedConv2d):
    def __init__(self, *args, curvature_weighted: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.setup(curvature_weighted)


@torch.no_grad()
def update_second_moments(model: nn.Module, beta2: float = BETA2) -> None:
    """``v <- beta2 v + (1 - beta2) g^2`` with ``g`` the gradient at ``w_hat`` (the latent weight's
    gradient, by the straight-through estimator) of every LAB layer, after the step (released code)."""
    for _, layer in quantized_layers(model):
        if isinstance(layer, _LAB) and layer.weight.grad is not None:
            layer.second_moment.mul_(beta2).addcmul_(layer.weight.grad, layer.weight.grad, value=1 - beta2)


def lab_after_step(model: nn.Module) -> None:
    """The training loop's ``after_step``: update ``v``, then clip the latent weights to ``[-1, 1]``."""
    update_second_moments(model)
    clip_latent(model)


def binarize_network(initial: nn.Module, curvature_weighted: bool) -> nn.Module:
    """A copy of the fp32 MLP whose linear layers propagate with LAB's (or BWN's) binary weights."""
    return quantize_layers(copy.deepcopy(initial), LABLinear, LABConv2d, curvature_weighted=curvature_weighted)


def train_lab(run: Run, initial: nn.Module, curvature_weighted: bool = True) -> nn.Module:
    """LAB (``curvature_weighted``) or BWN: binary weights in both propagations, Adam on the latent
    weights with the gradient at ``w_hat``, ``v`` updated and latent weights clipped after each step."""
    model = binarize_network(initial, curvature_weighted)
    name = "lab" if curvature_weighted else "bwn"
    run.reseed(name)
    return run.train(model, run.dataset().train, run.train_config("train"), desc=name, loss_fn=hinge,
                     after_step=lab_after_step)


# ------------------------------------------------------------------------------ the deployed LAB
def encode_lab(model: nn.Module) -> dict[str, ak.LowBitWeight]:
    """Each binary layer's signs as 1-bit codes with its ``alpha`` as the decode scale
    (``atlas_kernels.encode_binary``): decodes exactly to ``alpha * sign(w)``."""
    out: dict[str, ak.LowBitWeight] = {}
    for name, layer in quantized_layers(model):
        w = layer.weight.detach()
        alpha = lab_scale(w, layer.diagonal())
        out[f"{name}.weight"] = ak.encode_binary(binarize_deterministic(w).reshape(w.shape[0], -1), alpha)
    return out


def lab_storage(model: nn.Module) -> list[measure.Encoded]:
    encoded = encode_lab(model)
    parts = [measure.encoded(name, q, "1-bit signs") for name, q in encoded.items()]
    return parts + measure.fp32_parts(model, skip=sorted(encoded))


@reproduction("hou2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    hidden = list(run.config["hidden"])
    initial = bc_mlp(data.input_shape, data.num_classes, hidden).to(run.device)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32 MLP",
                         loss_fn=hinge)
    base_acc = run.accuracy(baseline, data.test)
    lab = train_lab(run, initial, curvature_weighted=True)
    acc = run.accuracy(lab, data.test)
    bwn_acc = run.accuracy(train_lab(run, initial, curvature_weighted=False), data.test)
    run.reseed("binaryconnect")
    bc_acc = run.accuracy(train_binaryconnect(run, initial, stochastic=False), data.test)

    parts = lab_storage(lab)
    bits = measure.storage_bits(parts)
    n_weights = sum(layer.weight.numel() for _, layer in quantized_layers(lab))
    sign_bits = sum(p.bits for p in parts if p.what == "1-bit signs")
    arch = "-".join(str(h) for h in hidden)
    train = run.config["train"]
    differs = (f"MLP {arch} (released code: 2048-2048-2048), {train['steps']} Adam steps of batch "
               f"{train['batch_size']} per model, cosine LR from {train['lr']} (code: step decay); "
               "BinaryConnect, BWN and the fp32 MLP from the same initial weights, loss and steps")
    run.record("fnn-binary-weights", model=f"MLP {arch} + BN, squared hinge loss, LAB binary weights",
               differs=differs, metrics={
                   **measure.accuracy_change(base_acc, acc),
                   "binaryconnect_accuracy": bc_acc,
                   "bwn_accuracy": bwn_acc,
                   "gain_over_binaryconnect_pp": acc - bc_acc,
                   "gain_over_bwn_pp": acc - bwn_acc,
                   "params": measure.count_params(lab),
                   "storage_bits": float(bits),
                   "storage_compression": measure.dense_bits(baseline) / bits,
                   "weight_storage_compression": 32 * n_weights / sign_bits,
               }, curves=[
                   controls.Series("LAB (binary weights)", controls.BITS, controls.ACCURACY, {1.0: acc}),
                   controls.quantization_curve(run, baseline, [8, 4, 2, 1], None),
               ])

