"""The families' shared controls, and the curves a paper records beside them.

ShrinkBench (Blalock et al., MLSys 2020, Sec. 4) found that pruning papers are rarely measured against
the same simple baseline, and that many do not beat it when they are. So every pruning and
quantization reproduction records its **accuracy-compression curve** (the method at three or more
compression levels) beside one of two controls, run on the same dense model with the same budget:

* **Global magnitude pruning** (:func:`pruning_curve`): one threshold over the magnitudes of every
  convolution and fully-connected weight of the network, keeping the fraction ``1 / ratio`` of them
  with the largest :math:`|w|`, then fine-tuning the survivors with the pruned weights held at zero:

  .. math:: m_i = [\\,|w_i| \\ge \\tau\\,], \\quad \\tau \\text{ the } (1 - 1/r)\\text{-quantile of } \\{|w_j|\\}

  Biases and batch-norm parameters are not pruned. The compression ratio ``r`` counts those weights
  (:func:`compression_ratio`).
* **Uniform quantization** (:func:`quantization_curve`): each layer's weights on the symmetric
  uniform grid of ``b`` bits, its step a clipping range ``c`` over :math:`2^{b-1} - 1`, ``c`` the
  fraction of the layer's largest magnitude (1/20, 2/20, ..., 1) with the least squared error:

  .. math:: q(w) = s \\cdot \\mathrm{clip}(\\mathrm{round}(w / s), -(2^{b-1}-1), 2^{b-1}-1), \\quad
            s = c / (2^{b-1} - 1)

  (one bit: :math:`\\pm \\mathbb{E}|w|`, the sign). Post-training, or fine-tuned with the
  straight-through estimator: the forward pass sees :math:`q(w)`, the update is applied to the
  full-precision :math:`w`.

A control is harness plumbing, like a shared teacher: no paper's method. It is the same code for
every paper, and each paper runs it on its own dense model with its own budget, so the two curves on
a page differ by the method alone.

A curve is a :class:`Series`: a label, the axes and one value per compression level, recorded per
seed with the claim it belongs to (``run.record(..., curves=[...])``); the record keeps each level's
per-seed values and the site plots the method's curve over the control's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from atlas.harness.run import Run
from atlas.harness.training import TrainConfig

RATIO = "compression ratio (×)"
BITS = "weight bits"
ACCURACY = "test accuracy (%)"
PRUNING_CONTROL = "global magnitude pruning (control)"
QUANTIZATION_CONTROL = "uniform quantization (control)"
#: The labels of a control without retraining (its budget is the dense model's alone).
PRUNING_CONTROL_ONE_SHOT = "global magnitude pruning, no retraining (control)"
QUANTIZATION_CONTROL_POST_TRAINING = "uniform quantization, post-training (control)"


@dataclass(frozen=True)
class Series:
    """One seed's curve: ``y`` at each compression level ``x`` (the same levels on every seed)."""

    label: str
    x: str
    y: str
    points: dict[float, float] = field(default_factory=dict)
    control: bool = False


# ----------------------------------------------------------------------------------- weights
def weight_names(model: nn.Module) -> list[str]:
    """The names of the weight parameters of every convolution and fully-connected layer."""
    return [f"{name}.weight" if name else "weight" for name, module in model.named_modules()
            if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Linear)]


def compression_ratio(model: nn.Module) -> float:
    """Convolution and fully-connected weights over their non-zero ones."""
    params = dict(model.named_parameters())
    total = kept = 0
    for name in weight_names(model):
        w = params[name].detach()
        total += w.numel()
        kept += int(torch.count_nonzero(w))
    return total / max(1, kept)


def trainable_copy(model: nn.Module) -> nn.Module:
    """A trainable copy of ``model`` that is not the shared model it may be (``Run.shared_output``)."""
    clone = copy.deepcopy(model)
    clone.__dict__.pop("_atlas_shared", None)
    return clone


# ----------------------------------------------------------------------------------- pruning
def global_magnitude_masks(model: nn.Module, ratio: float) -> dict[str, torch.Tensor]:
    """Masks keeping the ``round(n / ratio)`` weights of largest magnitude over the whole network."""
    params = dict(model.named_parameters())
    names = weight_names(model)
    flat = torch.cat([params[n].detach().abs().flatten() for n in names])
    k = max(1, min(flat.numel(), round(flat.numel() / ratio)))
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = {}, 0
    for n in names:
        size = params[n].numel()
        masks[n] = keep[start : start + size].view_as(params[n])
        start += size
    return masks


@torch.no_grad()
def _apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


def global_magnitude_prune(run: Run, dense: nn.Module, ratio: float, finetune: TrainConfig | None) -> nn.Module:
    """A copy of ``dense`` pruned globally to ``ratio`` and fine-tuned for ``finetune`` with its masks."""
    model = trainable_copy(dense)
    masks = global_magnitude_masks(model, ratio)
    _apply_masks(model, masks)
    if finetune is not None:
        run.reseed(f"control: global magnitude pruning {ratio:g}")
        run.train(model, run.dataset().train, finetune, desc=f"control: magnitude pruning {ratio:g}x",
                  after_step=lambda m: _apply_masks(m, masks))
    return model.eval()


def pruning_curve(run: Run, dense: nn.Module, ratios: Sequence[float], finetune: TrainConfig | None) -> Series:
    """Global magnitude pruning of ``dense`` at each compression ratio, fine-tuned with ``finetune``
    (the method's own retraining budget; ``None``: no retraining): test accuracy at each ratio."""
    data = run.dataset()
    points = {float(r): run.accuracy(global_magnitude_prune(run, dense, r, finetune), data.test) for r in ratios}
    return Series(PRUNING_CONTROL if finetune else PRUNING_CONTROL_ONE_SHOT, RATIO, ACCURACY, points, control=True)


# ------------------------------------------------------------------------------ quantization
#: The clipping ranges tried for each layer, as fractions of its largest magnitude.
CLIP_FRACTIONS = tuple(k / 20 for k in range(1, 21))


def _on_grid(w: torch.Tensor, clip: torch.Tensor, levels: int) -> torch.Tensor:
    scale = clip.clamp_min(torch.finfo(w.dtype).tiny) / levels
    return (w / scale).round().clamp(-levels, levels) * scale


def uniform_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` on the symmetric uniform grid of ``bits`` bits whose clipping range (a fraction of
    ``max|w|``, :data:`CLIP_FRACTIONS`) gives the least squared error; one bit: ``±mean|w|``, the
    least-squares scale of the signs. Clipping matters at low bits: scaled by the largest magnitude,
    a 2-bit grid ``{-s, 0, s}`` rounds nearly every weight to zero."""
    if bits < 1:
        raise ValueError(f"bits must be at least 1, not {bits}")
    if bits == 1:
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype) * w.abs().mean()
    levels = 2 ** (bits - 1) - 1
    top = w.abs().max()
    candidates = [_on_grid(w, top * f, levels) for f in CLIP_FRACTIONS]
    return min(candidates, key=lambda q: float((q - w).pow(2).sum()))


@torch.no_grad()
def _quantize_weights(model: nn.Module, bits: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Put each weight's quantized value in place; returns ``name -> (full precision, quantized)``."""
    params = dict(model.named_parameters())
    saved = {}
    for name in weight_names(model):
        full = params[name].detach().clone()
        q = uniform_quantize(full, bits)
        params[name].copy_(q)
        saved[name] = (full, q)
    return saved


def uniform_quantization(run: Run, model: nn.Module, bits: int, finetune: TrainConfig | None) -> nn.Module:
    """A copy of ``model`` with every convolution and fully-connected weight uniformly quantized to
    ``bits``; with ``finetune``, trained first with the straight-through estimator."""
    clone = trainable_copy(model)
    if finetune is not None:
        saved: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def before(m: nn.Module) -> None:
            saved.update(_quantize_weights(m, bits))

        @torch.no_grad()
        def after(m: nn.Module) -> None:
            params = dict(m.named_parameters())
            for name, (full, q) in saved.items():  # the step taken at q(w), applied to w
                params[name].copy_(full + (params[name] - q))

        run.reseed(f"control: uniform quantization {bits}")
        run.train(clone, run.dataset().train, finetune, desc=f"control: {bits}-bit uniform quantization",
                  before_step=before, after_step=after)
    _quantize_weights(clone, bits)
    return clone.eval()


def quantization_curve(run: Run, model: nn.Module, bits: Sequence[int], finetune: TrainConfig | None) -> Series:
    """Uniform quantization of ``model`` at each bit-width, post-training (``finetune=None``) or
    fine-tuned with the straight-through estimator for the method's own budget: test accuracy."""
    data = run.dataset()
    points = {float(b): run.accuracy(uniform_quantization(run, model, int(b), finetune), data.test) for b in bits}
    label = QUANTIZATION_CONTROL if finetune else QUANTIZATION_CONTROL_POST_TRAINING
    return Series(label, BITS, ACCURACY, points, control=True)
