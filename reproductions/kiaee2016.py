"""Alternating Direction Method of Multipliers for Sparse Convolutional Neural Networks (Kiaee, Gagné &
Abbasi, arXiv 2016; arXiv:1611.01590).

Method (the abstract's description, written as the standard ADMM splitting it names; the paper's
body, its update equations and tables could not be read where this file was written): the objective
is the recognition loss augmented with a sparsity-promoting penalty, and the sparse structure is found
by ADMM, which alternates between promoting sparsity and optimising recognition by splitting the two
parts of the objective. With a copy ``F`` of the weights ``W`` that carries the penalty,

.. math:: \\min_{W, F} \\; L(W) + \\mu \\, g(F) \\quad \\text{s.t.} \\quad W = F,

and the scaled dual variable ``U``, each ADMM iteration is

.. math:: W \\leftarrow \\arg\\min_W L(W) + \\tfrac{\\rho}{2} \\| W - F + U \\|^2 \\quad
          \\text{(SGD steps: the recognition performance)},

.. math:: F \\leftarrow \\mathrm{prox}_{\\mu g / \\rho}(W + U) \\quad \\text{(the sparsity)}, \\qquad
          U \\leftarrow U + W - F.

The penalty is separable over the weights, so the ``F`` step decomposes into one scalar problem per
weight (the abstract's "sub-problems that can be solved sequentially"): for ``g = ||.||_0`` it keeps
the entries of ``W + U`` above a threshold and zeroes the rest. So that each level is the same on every
seed, the threshold here is set per layer to keep ``1/ratio`` of the layer's weights (the ``l0``
penalty with the ``mu`` that reaches that sparsity). After the ADMM iterations the network is
pruned to ``F``'s support and the kept weights are fine-tuned under the mask.

Claim (Abstract, arXiv:1611.01590): applied to several state-of-the-art CNN models, the method
generates "models with less computation and fewer parameters, while maintaining and often improving
generalization performance" (claim ``abstract-sparse-cnn``). The abstract gives no level; the harness
measures the claim at 10x fewer weights (a level chosen here) and reads "maintaining" as an accuracy
change of at least -0.5 pp against the same network trained for the same steps without the method.

Measured (claim ``abstract-sparse-cnn``): ``accuracy``, ``baseline_accuracy`` (the dense network trained
on for all of the method's steps in one stage, the same optimizer and rate), ``accuracy_change_pp``,
``dense_accuracy``, ``admm_accuracy`` (after the ADMM iterations, pruned to ``F``'s support before
fine-tuning), ``control_accuracy`` / ``gain_over_control_pp`` (global magnitude pruning of the same
dense network to the same ratio, fine-tuned for the same total steps), ``residual`` (``||W - F|| /
||W||`` at the last iteration: how close ADMM brought the weights to a sparse point),
``param_compression``, ``flop_reduction`` (the FLOPs left when the zero weights are skipped: the
abstract's "less computation"), ``storage_bits`` / ``storage_compression`` (han2015's CSR encoding)
and ``kept_pct_<layer>``. The curve: the method at 4x, 10x and 20x beside the shared control
(:func:`atlas.harness.controls.pruning_curve`) with the same steps.

Harness differs: Fashion-MNIST and LeNet-300-100 (quick), the 8x8 digits (smoke), CIFAR-10 and the
harness LeNet-5 (paper profile) instead of the paper's networks (not read); the ADMM
iterations start from the trained dense network; ``rho`` (the penalty on ``||W - F + U||^2``, summed
over the weights), the iterations' number and their SGD steps, and the fine-tuning steps are chosen
here, not read. ``rho`` is set so that ``rho x lr x steps`` of one W-update is 5 (``RHO_REACH``): with
so few SGD steps per iteration a small ``rho`` leaves ``W`` far from ``F - U``, the dual variable grows
and ``F`` drifts (on the digits, ``rho`` from 0.01 to 1 ended with ``||W - F|| / ||W||`` above 1; at
this reach 0.02) (SGD momentum 0.9, weight decay 5e-4, the dense network's learning rate, cosine within
each stage; a first version at one tenth of the dense rate lost more, see ``DIAGNOSIS``). The sparse ``F`` is recomputed per layer at one kept fraction for all layers. The pruning to
``F``'s support and the masked fine-tuning after ADMM are Han et al. 2015's prune-and-retrain step
(``reproductions/han2015.py``: :func:`magnitude_mask`, :func:`retrain_with_masks`, and its CSR
encoding for the storage). The quick profile trains one dense network (3,000 steps,
seed 0) for its three seeds.

Quick result (seeds 0-2, before publication): not reproduced. At 10x the network ADMM sparsifies and
fine-tunes is 1.58 pp below the dense network trained on for the same steps, 95% interval [-2.12,
-1.04] pp, against the -0.5 pp bound; before fine-tuning (pruned to F's support) it is at 86.3%. On
the curve it stays below the shared control: 88.6 / 87.5 / 85.8% against 89.0 / 88.5 / 87.7% at 4x,
10x and 20x. What was tried and why the gap is believed to be this reading's budget and allocation is
in ``DIAGNOSIS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from atlas_reproductions.han2015 import (
    Masks,
    csr_parts,
    kept_percent,
    magnitude_mask,
    prunable_layers,
    retrain_with_masks,
)
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction
from atlas.harness.training import cross_entropy


class Config(Profile):
    model: Literal["lenet-300-100", "lenet-5"]  # the harness model (atlas/harness/models.py)
    dense: TrainConfig  # the trained network ADMM starts from
    admm_step: TrainConfig  # the W-update of ONE ADMM iteration (SGD on L + rho/2 ||W - F + U||^2)
    iterations: PositiveInt  # ADMM iterations
    rho: PositiveFloat  # the augmented Lagrangian's penalty (chosen here)
    finetune: TrainConfig  # the masked fine-tuning after ADMM
    ratio: PositiveFloat  # the claim's level (chosen here: 10x)
    curve: list[PositiveFloat] = Field(min_length=3)  # the levels of the curve (ratio among them)
    dense_per_seed: bool = True  # False: one dense network (from seed 0) for every seed

    @model_validator(mode="after")
    def _claim_on_the_curve(self) -> Config:
        if self.ratio not in self.curve:
            raise ValueError("the claim's ratio must be one of the curve's levels")
        return self


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    """A training stage: SGD with momentum 0.9, weight decay 5e-4, cosine learning rate."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": "cosine"}


def _profile(dataset: str, seeds: int, model: str, dense: int, step: int, iterations: int, finetune: int,
             lr: float, batch_size: int, **extra: bool) -> dict:
    """The dense network, ``iterations`` ADMM iterations of ``step`` SGD steps and the fine-tuning, both
    at the dense rate; ``rho`` such that ``rho x lr x step = RHO_REACH``; 10x for the claim."""
    return {"dataset": dataset, "seeds": seeds, "model": model, "dense": _sgd(dense, lr, batch_size),
            "admm_step": _sgd(step, lr, batch_size), "iterations": iterations,
            "rho": RHO_REACH / (lr * step),
            "finetune": _sgd(finetune, lr, batch_size), "ratio": 10.0, "curve": [4.0, 10.0, 20.0], **extra}


# rho x (the W-update's learning rate) x (its steps): how far one iteration's SGD steps can move W
# towards F - U. Chosen here so that they close most of the gap (on the digits, rho 0.01 to 1 left
# ||W - F|| / ||W|| above 1 after three iterations as the dual variable grew; at this reach 0.02).
RHO_REACH = 5.0

# Budgets are optimizer steps. quick: one dense network of 3,000 steps for the 3 seeds; per seed and
# level 6 ADMM iterations of 50 steps and 150 fine-tuning steps (450), the baseline and each control
# level the same 450 steps.
PROFILES = {
    "smoke": _profile("digits", 2, "lenet-300-100", 150, 10, 3, 30, 0.05, 64),
    "quick": _profile("fashion-mnist", 3, "lenet-300-100", 3000, 50, 6, 150, 0.05, 128, dense_per_seed=False),
    # CIFAR-10 (one of the paper's data sets) and the harness LeNet-5
    "paper": _profile("cifar10", 3, "lenet-5", 20000, 1000, 10, 5000, 0.01, 128),
}

CLAIM = "abstract-sparse-cnn"

DIAGNOSIS = """At 10x fewer weights the quick profile's ADMM network is 1.58 pp below the dense network
trained on for the same 450 steps (95% interval [-2.12, -1.04] pp, seeds 0-2) and about 1 pp below
global magnitude pruning fine-tuned for the same steps (87.5% against 88.5%). Checked: the F-update
keeps exactly each layer's 10% largest entries of W + U; with rho set so that one iteration's SGD
steps can reach F - U the W-update converges (relative residual ||W - F|| / ||W|| 0.013 at the last
iteration); the pruned connections stay at zero through the fine-tuning; the baseline is 0.57 pp below
the harness's reference (converged). On seeds 10 and 11 at 10x, against a baseline trained through the
same seven stages: at one tenth of the dense rate with rho 20, ADMM lost 2.60 and 2.62 pp; with rho 2
at that rate 2.34 and 2.25 pp; with rho 0.2 (W far from F, residual 0.72) 3.59 pp; at the dense rate
with rho 2 (the profile now) 1.23 and 0.91 pp. The first quick run (one tenth of the dense rate, rho
20) lost 2.72 pp [-3.10, -2.33]. The gap to the control grows with the ratio (0.3 pp at 4x, 1.0 at
10x, 1.9 at 20x), where one kept fraction for every layer, the 1,000-weight classifier included, costs
more than one global threshold; the paper instead sets a penalty weight, so each layer's sparsity
follows its weights, on convolutional networks with few fully-connected weights, trained for many
epochs. The paper's update equations, its penalty weights and schedules were not read. What the
atlas measured is this reading of the method at this budget on LeNet-300-100: it does not keep the
accuracy at 10x, and it does not beat magnitude pruning with the same steps."""


# ------------------------------------------------------------------------------------ ADMM
def sparse_point(v: torch.Tensor, keep: float) -> torch.Tensor:
    """The F-update of one layer: ``prox`` of the l0 penalty at ``v = W + U``, with the threshold that
    keeps the ``keep`` fraction of its entries of largest magnitude (han2015's :func:`magnitude_mask`)."""
    return v * magnitude_mask(v, keep).to(v.dtype)


@dataclass
class Admm:
    """The ADMM state for every Conv/Linear weight: the sparse copy ``F`` and the scaled dual ``U``."""

    keep: float  # every layer's kept fraction, 1 / ratio
    rho: float
    F: dict[str, torch.Tensor] = field(default_factory=dict)
    U: dict[str, torch.Tensor] = field(default_factory=dict)

    @torch.no_grad()
    def start(self, model: nn.Module) -> None:
        """``F`` = the sparse point nearest the trained weights, ``U = 0``."""
        params = dict(model.named_parameters())
        for name in prunable_layers(model).values():
            w = params[name].detach()
            self.F[name] = sparse_point(w, self.keep)
            self.U[name] = torch.zeros_like(w)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``rho/2 sum ||W - F + U||^2`` over the layers (the W-update's augmented term)."""
        params = dict(model.named_parameters())
        return 0.5 * self.rho * sum(((params[n] - self.F[n] + self.U[n]) ** 2).sum() for n in self.F)

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """The F- and U-updates after a W-update; returns the relative residual ``||W - F|| / ||W||``."""
        params = dict(model.named_parameters())
        num = den = 0.0
        for name in self.F:
            w = params[name].detach()
            self.F[name] = sparse_point(w + self.U[name], self.keep)
            self.U[name] += w - self.F[name]
            num += float(((w - self.F[name]) ** 2).sum())
            den += float((w**2).sum())
        return (num / max(den, 1e-30)) ** 0.5

    def masks(self) -> Masks:
        """``F``'s support: the connections ADMM keeps."""
        return {name: f != 0 for name, f in self.F.items()}


@dataclass
class AdmmResult:
    model: nn.Module
    masks: Masks
    admm_accuracy: float
    residual: float


def admm_prune(run: Run, dense: nn.Module, ratio: float) -> AdmmResult:
    """A copy of ``dense`` through ``iterations`` ADMM iterations at ``ratio``, pruned to ``F``'s support
    and fine-tuned under the mask."""
    cfg = Config.model_validate(run.config)
    model = controls.trainable_copy(dense)
    admm = Admm(keep=1.0 / ratio, rho=cfg.rho)
    admm.start(model)

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return cross_entropy(m, x, y, idx) + admm.penalty(m)

    residual = float("nan")
    for it in range(1, cfg.iterations + 1):
        run.reseed(f"kiaee2016 admm data {it}")
        run.train(model, run.dataset().train, cfg.admm_step, desc=f"ADMM {ratio:g}x iteration {it}", loss_fn=loss_fn)
        residual = admm.update(model)
    masks = admm.masks()
    with torch.no_grad():  # prune W to F's support
        params = dict(model.named_parameters())
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].dtype))
    admm_acc = run.accuracy(model, run.dataset().test)
    run.reseed("kiaee2016 finetune data")
    retrain_with_masks(run, model, masks, cfg.finetune, desc=f"ADMM {ratio:g}x fine-tuning")
    return AdmmResult(model.eval(), masks, admm_acc, residual)


def method_budget(cfg: Config) -> TrainConfig:
    """All of the method's steps after the dense network, as one stage (the control's fine-tuning)."""
    return cfg.finetune.model_copy(update={"steps": cfg.iterations * cfg.admm_step.steps + cfg.finetune.steps})


def continued(run: Run, dense: nn.Module) -> nn.Module:
    """The baseline: a copy of ``dense`` trained on for all of the method's steps in one stage (the
    same optimizer and rate) without ADMM or pruning. (Trained through the method's seven stages, each
    restarting its cosine schedule, it ended 1.04 pp below the harness's reference on seeds 0-2.)"""
    cfg = Config.model_validate(run.config)
    model = controls.trainable_copy(dense)
    run.reseed("kiaee2016 baseline data")
    return run.train(model, run.dataset().train, method_budget(cfg), desc="baseline, the method's steps")


def train_dense(run: Run) -> nn.Module:
    """The dense network, per seed or (``dense_per_seed: False``) once from seed 0 for every seed."""
    cfg = Config.model_validate(run.config)
    per_seed = cfg.dense_per_seed

    def fit(model: nn.Module) -> None:
        run.reseed("kiaee2016 dense data", seed=None if per_seed else 0)
        run.train(model, run.dataset().train, cfg.dense, desc="dense")

    spec = {"model": cfg.model, "dense": cfg.dense.model_dump(), "dense_per_seed": per_seed}
    return run.cached_model(f"kiaee2016-{cfg.model}-dense", spec, build=lambda: run.model(cfg.model), fit=fit,
                            per_seed=per_seed)


@reproduction("kiaee2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    data = run.dataset()
    dense = train_dense(run)
    curve: dict[float, float] = {}
    for ratio in cfg.curve:
        out = admm_prune(run, dense, ratio)
        curve[ratio] = run.accuracy(out.model, data.test)
        if ratio == cfg.ratio:
            chosen = out
    control = controls.pruning_curve(run, dense, cfg.curve, method_budget(cfg))
    base = run.accuracy(continued(run, dense), data.test)
    acc = curve[cfg.ratio]
    run.record(
        CLAIM, model=cfg.model,
        metrics={"baseline_accuracy": base, "dense_accuracy": run.accuracy(dense, data.test), "accuracy": acc,
                 "accuracy_change_pp": acc - base, "admm_accuracy": chosen.admm_accuracy,
                 "control_accuracy": control.points[cfg.ratio], "gain_over_control_pp": acc - control.points[cfg.ratio],
                 "residual": chosen.residual,
                 **measure.compression_metrics(dense, chosen.model, data.input_shape,
                                               csr_parts(chosen.model, chosen.masks)),
                 **kept_percent(chosen.model)},
        baseline=(cfg.model, "baseline_accuracy"), baseline_spec={},
        differs=f"{cfg.dense.steps} dense steps ({'per seed' if cfg.dense_per_seed else 'one network for every seed'}), "
                f"then {cfg.iterations} ADMM iterations of {cfg.admm_step.steps} SGD steps (lr {cfg.admm_step.lr:g}, "
                f"rho {cfg.rho:g}, F = each layer's 1/{cfg.ratio:g} largest entries of W + U) and {cfg.finetune.steps} "
                "masked fine-tuning steps; baseline = the dense network trained on for the same steps in one stage; control = "
                "global magnitude pruning fine-tuned for the same total steps",
        curves=[controls.Series("ADMM with an l0 penalty (Kiaee et al.)", controls.RATIO, controls.ACCURACY, curve),
                control],
        diagnosis=DIAGNOSIS,
    )
