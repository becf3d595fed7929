"""BitNet: Bit-Regularized Deep Neural Networks (Raghavan, Amer, Chai & Taylor, arXiv:1708.04788, 2017).

Method (as the abstract of arXiv:1708.04788v3 states it, read; the body, its equations and tables could
not be read here, and no code was released, so the concrete form below is this atlas's reading of the
abstract): every layer ``l`` keeps its weights as integers on a grid of ``b_l`` bits with a real-valued
translation and scale of its own,

  ``W_l ~ q_b(W_l) = (c - z_l) * s_l``,  ``s_l = (max W_l - min W_l) / (2^b_l - 1)``,
  ``z_l = -min W_l / s_l``,  ``c = clip(round(W_l / s_l + z_l), 0, 2^b_l - 1)``,

and the number of bits ``b_l`` is itself optimised with the weights, under a regulariser inspired by
the Minimum Description Length principle: the classification loss of the quantized network plus the
cost of describing the weights (their bits) plus the error of the quantized description,

  ``L = CE(q_b(W)) + lambda_q * sum_l ||W_l - q_b(W_l)||^2 / ||W_l||^2 + lambda_b * sum_l b_l N_l / N``

(``N_l`` the weights of layer ``l``, ``N`` all of them: the second term is the mean bits a weight).
The weights follow the gradient of ``L`` with the straight-through estimator through the rounding; the
integer bit-widths take one step of sign descent every ``bit_every`` steps: each ``b_l`` moves by one
bit (within 1..8) towards the lowest of the regulariser at ``b_l - 1``, ``b_l``, ``b_l + 1`` (a finite
difference of the relaxed objective in ``b_l``; the classification term depends on ``b_l`` only through
the quantization error, which the second term bounds). Every layer starts at the most bits allowed
(8, the widest code of ``atlas_kernels.LowBitWeight``); a larger ``lambda_b`` gives fewer bits.

Claims (abstract, v3): "BitNet converges faster to a superior quality solution" than "an equivalent
unregularized model" on MNIST and CIFAR-10, and "the resulting model has significant savings in memory
due to the use of integer-valued parameters". The atlas reads "superior quality" as: the BitNet's test
accuracy at least the same harness's float network's (same architecture, initial weights and steps;
``bitnet-accuracy``), and "significant savings in memory" as: at least 4x less storage than the float
network from the learned bits' actual encoding (``bitnet-memory``, the saving of 8-bit integers). The
faster convergence and the paper's table values are not checked (not read).

What is measured: ``accuracy_change_pp`` of the BitNet (``lambda_b``, at most 8 bits a layer) against
the float MLP trained for the same steps from the same initial weights; ``storage_compression``: the
float MLP's 32 bits a parameter against the deployed BitNet's encoding, each layer's codes packed at its
learned bit-width (``atlas_kernels.LowBitWeight``, per-layer affine decode ``(code - z_l) * s_l``, two
fp32 constants a layer, padding included) and the biases in fp32; ``mean_bits`` and ``bits_layer<i>``:
the learned bits (the notes give them for every BitNet). The curve: the BitNet with each layer's bits
learned but capped at ``x`` (2, 4 and 8 bits in every profile; it may learn fewer) beside the float MLP
uniformly quantized after training to ``x`` bits (:func:`atlas.harness.controls.quantization_curve`;
every BitNet trains for the float MLP's steps, no more). The curve's x is the cap and not the learned
mean bits because a curve must have the same levels on every seed, and the learned bits may differ by
seed (they do on Fashion-MNIST).

Harness differs: Fashion-MNIST (MNIST cannot be downloaded here) and LeNet-300-100 in the quick profile,
Adam with a cosine schedule; the paper's networks, optimizer and schedule were not read. ``lambda_q``,
``lambda_b`` and ``bit_every`` are this atlas's choices (the paper's values were not read), chosen
before any run from the size of the relative quantization error (not tuned on any data set).
"""

from __future__ import annotations

import copy

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, models, reproduction

MAX_BITS = 8


class Config(Profile):
    hidden: list[PositiveInt]  # the MLP's hidden widths (LeNet-300-100 in quick and paper)
    lambda_b: float = Field(ge=0)  # the bit cost
    caps: list[PositiveInt] = Field(min_length=3)  # the most bits a layer may learn: one BitNet each, the curve
    lambda_q: float = Field(1.0, ge=0)  # weight of the relative quantization error
    bit_every: PositiveInt = 10  # steps between two bit-width updates
    train: TrainConfig  # each network's training: the float MLP and every BitNet, the same budget


_ADAM = {"optimizer": "adam", "lr": 0.003, "schedule": "cosine"}
PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64], "lambda_b": 0.03, "caps": [2, 4, 8],
              "train": {"steps": 120, "batch_size": 64, **_ADAM}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [300, 100], "lambda_b": 0.03, "caps": [2, 4, 8],
              "train": {"steps": 400, "batch_size": 128, **_ADAM}},
    "paper": {"dataset": "mnist", "seeds": 3, "hidden": [300, 100], "lambda_b": 0.03, "caps": [2, 4, 8],
              "train": {"steps": 30000, "batch_size": 128, **_ADAM}},
}


# ------------------------------------------------------------------------- the per-layer quantizer
def grid(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``bits``-bit codes of ``w`` on its own range and their scale ``s`` and offset ``z`` (one each
    for the tensor): ``s = (max - min) / (2^b - 1)``, ``z = -min / s``."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, not {bits}")
    wf = w.detach().float()
    levels = (1 << bits) - 1
    lo, hi = wf.min(), wf.max()
    scale = (hi - lo) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).reshape(1)
    zero = (-lo / scale).reshape(1)
    codes = torch.round(wf / scale + zero).clamp(0, levels)
    return codes, scale, zero


def quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``q_b(w) = (c - z) * s``: the decode of the stored codes, bit for bit."""
    codes, scale, zero = grid(w, bits)
    return ((codes - zero) * scale).to(w.dtype)


def relative_error(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``||w - q_b(w)||^2 / ||w||^2`` (differentiable in ``w``; the grid held fixed)."""
    return (w - quantize(w, bits)).pow(2).sum() / w.detach().pow(2).sum().clamp_min(1e-12)


class BitLinear(nn.Linear):
    """A fully-connected layer whose weight propagates as ``q_b(W)`` at its learned bit-width ``bits``
    (straight-through gradient to ``W``)."""

    bits: int = MAX_BITS

    def quantized_weight(self) -> torch.Tensor:
        w = self.weight
        return w + (quantize(w, self.bits) - w).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bits={self.bits}"


def bitnet(model: nn.Sequential, bits: int = MAX_BITS) -> nn.Sequential:
    """A copy of a float MLP with every linear layer a :class:`BitLinear` at ``bits`` bits (same weights)."""
    out = copy.deepcopy(model)
    for i, m in enumerate(out):
        if isinstance(m, nn.Linear):
            b = BitLinear(m.in_features, m.out_features, bias=m.bias is not None).to(m.weight.device)
            b.load_state_dict(m.state_dict())
            b.bits = bits
            out[i] = b
    return out


def bit_layers(model: nn.Module) -> list[BitLinear]:
    return [m for m in model.modules() if isinstance(m, BitLinear)]


def regulariser(model: nn.Module, lambda_q: float, lambda_b: float) -> torch.Tensor:
    """``lambda_q * sum_l rel_err_l + lambda_b * sum_l b_l N_l / N``."""
    layers = bit_layers(model)
    total = sum(m.weight.numel() for m in layers)
    err = sum(relative_error(m.weight, m.bits) for m in layers)
    return lambda_q * err + lambda_b * sum(m.bits * m.weight.numel() for m in layers) / total


@torch.no_grad()
def update_bits(model: nn.Module, lambda_q: float, lambda_b: float, cap: int = MAX_BITS) -> None:
    """One sign step of every layer's bit-width towards the lowest regulariser among ``b - 1, b, b + 1``
    (within ``1 .. cap``)."""
    layers = bit_layers(model)
    total = sum(m.weight.numel() for m in layers)
    for m in layers:
        share = m.weight.numel() / total

        def cost(b: int, m: BitLinear = m, share: float = share) -> float:
            return lambda_q * float(relative_error(m.weight, b)) + lambda_b * b * share

        if m.bits > min(cap, MAX_BITS):  # above the cap: one step down
            m.bits -= 1
            continue
        options = [b for b in (m.bits - 1, m.bits, m.bits + 1) if 1 <= b <= min(cap, MAX_BITS)]
        m.bits = min(options, key=lambda b: (cost(b), b != m.bits))


def train_bitnet(run: Run, initial: nn.Sequential, lambda_b: float, cap: int = MAX_BITS) -> nn.Sequential:
    """Train the BitNet of ``initial`` (``cap`` bits a layer at first, at most ``cap`` throughout) for the
    float MLP's steps."""
    cfg = run.config
    lambda_q, every = float(cfg.get("lambda_q", 1.0)), int(cfg.get("bit_every", 10))
    model = bitnet(initial, bits=min(cap, MAX_BITS))
    step = {"n": 0}

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(m(x), y) + regulariser(m, lambda_q, lambda_b)

    def after(m: nn.Module) -> None:
        step["n"] += 1
        if step["n"] % every == 0:
            update_bits(m, lambda_q, lambda_b, cap)

    run.reseed(f"bitnet {lambda_b:g} cap {cap}")
    return run.train(model, run.dataset().train, run.train_config("train"), desc=f"bitnet at most {cap} bits",
                     loss_fn=loss_fn, after_step=after)


# ---------------------------------------------------------------------------- the deployed BitNet
def encode_layer(w: torch.Tensor, bits: int) -> ak.LowBitWeight:
    """``w`` ``[N, K]`` as its packed ``bits``-bit codes with the per-layer decode ``(code - z) * s``."""
    w2 = w.detach().reshape(w.shape[0], -1)
    codes, scale, zero = grid(w2, bits)
    return ak.LowBitWeight(ak.pack_codes(codes.to(torch.int64), bits), scale, zero, None, bits, "affine",
                           tuple(w2.shape))


def bitnet_storage(model: nn.Module) -> list[measure.Encoded]:
    names = {m: n for n, m in model.named_modules()}
    parts = [measure.encoded(f"{names[m]}.weight", encode_layer(m.weight, m.bits), f"{m.bits}-bit codes")
             for m in bit_layers(model)]
    return parts + measure.fp32_parts(model, skip=[p.name for p in parts])


def mean_bits(model: nn.Module) -> float:
    layers = bit_layers(model)
    return sum(m.bits * m.weight.numel() for m in layers) / sum(m.weight.numel() for m in layers)


@reproduction("raghavan2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    hidden = list(cfg["hidden"])
    initial = models.MLP(data.input_shape, data.num_classes, hidden).to(run.device)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="float MLP")
    base_acc = run.accuracy(baseline, data.test)
    base_bits = measure.dense_bits(baseline)

    lam = float(cfg["lambda_b"])
    caps = sorted(int(c) for c in cfg["caps"])
    nets = {c: train_bitnet(run, initial, lam, c) for c in caps}
    accs = {c: run.accuracy(m, data.test) for c, m in nets.items()}
    curves = [controls.Series("BitNet (each layer's bits learned, at most x)", controls.BITS, controls.ACCURACY,
                              {float(c): a for c, a in accs.items()}),
              controls.quantization_curve(run, baseline, caps, None)]

    top = caps[-1]
    model = nets[top]
    bits = measure.storage_bits(bitnet_storage(model))
    arch = "-".join(str(h) for h in hidden)
    train = cfg["train"]
    differs = (f"MLP {arch}, {train['steps']} Adam steps of batch {train['batch_size']}, cosine LR from "
               f"{train['lr']}; lambda_q {cfg.get('lambda_q', 1.0):g}, lambda_b {lam:g}, bits updated every "
               f"{cfg.get('bit_every', 10)} steps from {top} bits a layer (the atlas's choices; the paper's not "
               "read); float baseline: the same MLP, initial weights and steps")
    per_layer = {f"bits_layer{i}": float(m.bits) for i, m in enumerate(bit_layers(model))}
    learned = "; ".join(f"at most {c} bits: {[m.bits for m in bit_layers(n)]} (mean {mean_bits(n):.2f})"
                        for c, n in nets.items())
    common = {**measure.accuracy_change(base_acc, accs[top]), "mean_bits": mean_bits(model), **per_layer}
    notes = f"learned bits per layer: {learned}"
    run.record("bitnet-accuracy", model=f"BitNet MLP {arch}", differs=differs, metrics=common, curves=curves,
               notes=notes)
    run.record("bitnet-memory", model=f"BitNet MLP {arch}", differs=differs, metrics={
        **common, "params": measure.count_params(model), "storage_bits": float(bits),
        "storage_compression": base_bits / bits}, notes=notes)
