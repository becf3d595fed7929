"""Paying More Attention to Attention (Zagoruyko & Komodakis, ICLR 2017; arXiv:1612.03928).

Method: a student is trained to reproduce the teacher's *attention maps* at several layer groups
(the outputs of the residual groups, at matching spatial resolutions).

- **Activation-based attention transfer** (Sec. 3.1): the attention map of a group's activation
  ``A`` (C x H x W) is ``F(A) = sum_c |A_c|^p`` with p = 2, flattened to ``Q`` and L2-normalised;
  the student minimises ``L = CE + beta/2 * sum_j || Q_S^j/||Q_S^j|| - Q_T^j/||Q_T^j|| ||_p``, with
  ``beta`` "10^3 divided by the number of elements in the attention map and the batch size".
  The paper and the authors' code differ (torchdistill's ``ATLoss`` documents it and offers both):
  the paper's term is the p = 2 *norm* of the difference, the code's ``at_loss`` the mean *squared*
  difference. ``mode`` chooses (:func:`at_loss`): ``paper``, the default, or ``code``. Both use the
  channel mean of ``A²`` for ``F`` (the paper's sum up to a constant that the normalisation removes).
- **Gradient-based attention transfer** (Sec. 3.2): the attention is the gradient of the loss with
  respect to the input, ``J = dL/dx``; the student minimises ``CE + beta_g/2 * || J_S - J_T ||_2``,
  which needs double back-propagation through the student. The teacher's ``J_T`` is computed once
  per training example (the data are not augmented, so it does not change) and cached.
- KD (Hinton's loss imported from :mod:`reproductions.hinton2015`, T = 4, alpha = 0.9 as in the
  authors' code) and AT + KD are trained for comparison, as in the paper's Table 1.

Claim (Table 1, CIFAR-10): a WRN-16-1 student (8.77% error) improves to 8.25% with activation-based
AT from a WRN-40-1 teacher (KD: 8.39%), a gain of 0.52 points.

Harness differs: Fashion-MNIST subsampled, a short budget of optimizer steps (the same for every
student), no augmentation; the teacher is the shared conv teacher (:func:`atlas.harness.teachers.conv_teacher`)
(``vgg-small`` at a small width, 2 conv layers per stage), the student a
:class:`~atlas.harness.convnets.ConvNet` with the teacher's stage widths and one conv layer per
stage (shallower at the same width, as WRN-16-1 is to WRN-40-1: both have widening factor 1);
attention is transferred at the three stage outputs (before pooling). The quick profile trains the
hard-label and AT students only (KD, AT + KD and gradient AT are in the paper profile's
``variants``). ``beta_g`` of the gradient variant is the harness's choice for per-example input
gradients of unit-scale losses, not the paper's.

Recorded metrics besides the standard ones: ``distillation_gain_pp`` (activation AT minus hard
labels), ``gradient_at_gain_pp`` (gradient AT minus hard labels), ``kd_gain_pp``, ``at_kd_gain_pp``
and the corresponding ``*_accuracy``.

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "not reproduced", with
budgets counted in epochs and the verdict decided by the mean alone. The verdict rules have changed since (CONTRIBUTING.md, "Verdict history"): a different verdict
comes from them, not from a change of the method.


Re-examined (2026-12-04) after the quick record's "not reproduced" (AT 2-3 pp *below* the hard-label student). The loss
was checked against the authors' ``utils.py`` (``at``: ``F.normalize(x.pow(2).mean(1).view(B, -1))``,
``at_loss``: ``(at(x) - at(y)).pow(2).mean()``, summed over the group outputs with ``beta/2``,
``beta = 1e3``) and against RepDistiller's, mdistiller's and torchdistill's ``mode='code'``: it is the
same (tested in ``tests/test_repro_zagoruyko2017.py``); no bug was found. Measured on seeds 100-101
(not the published seeds), quick profile otherwise: at the quick budget (450 steps, ~5 epochs)
AT trails the hard-label student by 2.6 pp (seed 100: 81.96 vs 84.60); with 4x the steps for *both*
students (1,800) it still trails, by 1.1 pp (86.74 vs 87.88); transferring at stages 2-3 only (not the
one-conv first stage) did not help (-3.3 pp on seeds 100 and 101); ``beta = 100`` instead of the
paper's 1e3 removes the loss but gives no gain (-0.10, -0.23 pp). At 4x the hard-label student
(87.88) equals the shared teacher (87.94, ``vgg-small`` x0.1875): the teacher has nothing left to
transfer. The gap is therefore taken to be the harness's (a teacher barely better than its student,
and a budget of a few epochs), not evidence against the method; closing it needs a stronger shared
teacher (:mod:`atlas.harness.teachers`), which is outside this file. The record carries this as its
``diagnosis``.

Re-examined again (2026-12-04, second session) with the shared conv teacher trained on the whole
training set (``full_training_set``): KD now gains (+0.23 pp on seeds 100-102) and AT still loses
3.1 pp, and 1.7 pp with 4x the steps (seed 100), its term plateauing above the cross-entropy; the
diagnosis above records this.

Re-examined a third time (2026-12-05): the term's form now follows the paper by default, with the
authors' code as ``mode="code"`` (the paper's norm, not squared, is the stronger term for close maps),
and beta and the learning rate are chosen on a validation split (benchmarks/results/tuning-cpu-amd-epyc-2core.md); the quick profile trains the
hard-label and AT students only, within the 90 s budget. The diagnosis records the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from atlas_reproductions.hinton2015 import distillation_loss, teacher_logits
from torch import nn

from atlas.harness import Run, Tuned, reproduction
from atlas.harness.convnets import (
    ConvStudentProfile,
    forward_stages,
    record_student_claim,
    student_sgd,
    train_student_net,
)
from atlas.harness.teachers import CONV_TEACHER, conv_teacher, student_metrics
from atlas.harness.training import against_targets

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: The students besides the hard-label one: activation AT, KD, AT + KD, gradient AT.
ALL_VARIANTS = ["at", "kd", "at_kd", "grad_at"]

class Config(ConvStudentProfile):
    variants: list[str]  # of at, kd, at_kd, grad_at
    mode: Literal["paper", "code"]  # the AT term as Eq. 2 states it, or as the authors' code computes it
    beta: float  # beta of the activation-based AT term beta/2 * sum_j at_loss_j (1e3, the authors' code)
    beta_grad: float  # beta_g of gradient-based AT (the term is beta_g/2 * ||J_S - J_T||)
    temperature: float  # KD's temperature (AT + KD)
    alpha: float  # KD's weight on the soft term


#: Why the atlas does not take its "not reproduced" as the paper's; shown beside the verdict.
DIAGNOSIS = """
The AT term is Eq. 2 by default (mode "paper": the norm of the difference of the normalised maps)
and the authors' code with mode "code" (the mean squared difference, as RepDistiller, mdistiller and
torchdistill's mode='code'). With the shared teacher (89.27%) and beta = 1000 both trail the
hard-label student on seeds 100-102 (not the published seeds): paper -2.13 pp (-1.34, -2.83, -2.23),
code -3.14 pp (-2.46, -3.20, -3.75). beta chosen on a validation split (the training set's last
10,000 examples, seeds 1000-1001, benchmarks/results/tuning-cpu-amd-epyc-2core.md) is 100, the smallest of 100, 1000 and 10000: AT then matches
the hard-label student (84.99% vs 85.09%), 1000 costs 2.1 pp and 10000 11 pp; the learning rate is
the hard-label student's best. Earlier, 4x the steps (seed 100, code mode) left AT 1.7 pp behind, its
term plateauing above the cross-entropy: a student with one conv layer per stage cannot reproduce the
maps of the teacher's two. The atlas takes the gap to be AT's with these VGG-style students, whose
stages are half as deep as the teacher's, a pairing the paper does not test (its WRN pairs match
groups of residual blocks); it is not evidence against the paper's CIFAR result.
"""



#: AT's weight, chosen on a validation split (``benchmarks/tune.py``).
TUNED = Tuned(key="beta", grid=[100.0, 1000.0, 10000.0],
              source="Sec. 4.1: beta = 10^3 divided by the number of elements in the attention map and the batch size")

PROFILES = {
    # The student has the teacher's stage widths (the vgg-small channels at the teacher's width) and
    # one conv layer per stage against the teacher's two: shallower at the same width, as WRN-16-1 is
    # to WRN-40-1.
    "smoke": {
        **CONV_TEACHER["smoke"], "seeds": 1, "student_net": {"chans": [8, 16, 32], "per_stage": 1},
        "student": student_sgd(11, 128), "variants": ALL_VARIANTS,
        "mode": "paper", "beta": 1000.0, "beta_grad": 1.0, "temperature": 4.0, "alpha": 0.9,
    },
    "quick": {
        # The checked claim needs the hard-label and the AT student alone. KD (hinton2015's claim), AT +
        # KD and gradient AT (double back-propagation, ~3x a step) are left to the paper profile, so
        # that the two students get a budget they converge on within the quick profile's time.
        # beta and the students' learning rate were chosen on a validation split
        # (benchmarks/results/tuning-cpu-amd-epyc-2core.md): beta = 100
        # of 100, 1000 and 10000; lr = 0.1, the hard-label student's best of 0.025, 0.05 and 0.1.
        **CONV_TEACHER["quick"], "seeds": 3, "student_net": {"chans": [12, 24, 48], "per_stage": 1},
        "student": student_sgd(450, 64, lr=0.1), "variants": ["at"],
        "mode": "paper", "beta": 100.0, "beta_grad": 1.0, "temperature": 4.0, "alpha": 0.9,
    },
    "paper": {
        # Sec. 4.1: WRN-16-1 from WRN-40-1 on CIFAR-10, 200 epochs; here a 3-conv student of the
        # full-width VGG-style teacher.
        **CONV_TEACHER["paper"], "seeds": 3, "student_net": {"chans": [64, 128, 256], "per_stage": 1},
        "student": student_sgd(78125, 128, lr=0.1, schedule="step"), "variants": ALL_VARIANTS,
        "mode": "paper", "beta": 1000.0, "beta_grad": 1.0, "temperature": 4.0, "alpha": 0.9,
    },
}


def attention_map(activation: torch.Tensor) -> torch.Tensor:
    """``Q = vec(F(A)) / ||vec(F(A))||`` with ``F(A) = mean_c A_c²`` (p = 2), one row per example."""
    return F.normalize(activation.pow(2).mean(1).flatten(1))


def at_loss(student_act: torch.Tensor, teacher_map: torch.Tensor, mode: str = "paper") -> torch.Tensor:
    """One group's attention-transfer term, to be weighted by ``beta/2`` with ``beta = 1000``.

    - ``paper`` (Eq. 2): the p = 2 *norm* of the difference of the normalised maps, per example, with
      the paper's beta "divided by the number of elements in the attention map and the batch size":
      :math:`\\frac{1}{HW} \\cdot \\frac{1}{B} \\sum_b \\lVert Q_S^b - Q_T^b \\rVert_2`.
    - ``code`` (the authors' ``utils.py``, RepDistiller, mdistiller, torchdistill's ``mode='code'``):
      the mean squared difference, i.e. the *squared* norm,
      :math:`\\frac{1}{HW} \\cdot \\frac{1}{B} \\sum_b \\lVert Q_S^b - Q_T^b \\rVert_2^2`.

    The two differ by the square alone: for the small differences of a trained student (norms well
    below 1) the paper's term is the larger, and its gradient does not shrink with the difference."""
    diff = attention_map(student_act) - teacher_map
    if mode == "code":
        return diff.pow(2).mean()
    if mode == "paper":
        return diff.norm(dim=1).mean() / diff.shape[1]
    raise ValueError(f"unknown attention-transfer mode '{mode}' (paper or code)")


@torch.no_grad()
def teacher_attention(run: Run, teacher: nn.Module) -> list[torch.Tensor]:
    """The teacher's normalised attention maps at every stage, for every training example (cached
    once: the training data are not augmented)."""
    teacher.eval()
    split = run.dataset().train

    def compute() -> list[torch.Tensor]:
        maps: list[list[torch.Tensor]] = [[] for _ in forward_stages(teacher, split.x[:1])[1]]
        for start in range(0, len(split), 256):
            for i, act in enumerate(forward_stages(teacher, split.x[start:start + 256].to(run.device))[1]):
                maps[i].append(attention_map(act))
        return [torch.cat(m) for m in maps]

    return run.shared_output(teacher, split, "attention maps", compute)


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """``J = dL/dx`` per example (the cross-entropy summed over the batch, so each row is the gradient
    of that example's own loss)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    return torch.autograd.grad(loss, x, create_graph=create_graph)[0]


def teacher_input_gradients(run: Run, teacher: nn.Module) -> torch.Tensor:
    """The teacher's ``J_T`` for every training example (eval mode, computed once)."""
    teacher.eval()
    train = run.dataset().train
    return torch.cat([input_gradients(teacher, train.x[s:s + 500].to(run.device), train.y[s:s + 500].to(run.device))
                      for s in range(0, len(train), 500)]).detach()


def activation_at_loss(run: Run, maps: list[torch.Tensor], teacher_out: torch.Tensor | None = None) -> LossFn:
    """``CE + beta/2 * sum_j at_loss_j``; with ``teacher_out``, Hinton's KD loss instead of CE (AT+KD)."""
    beta, temperature, alpha = run.config["beta"], run.config["temperature"], run.config["alpha"]
    mode = run.config["mode"]
    maps = [m.to(run.device) for m in maps]

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        logits, stages = forward_stages(model, x)
        base = (F.cross_entropy(logits, y) if teacher_out is None
                else distillation_loss(logits, teacher_out[idx].to(run.device), y, temperature, alpha))
        return base + beta / 2 * sum(at_loss(a, m[idx], mode) for a, m in zip(stages, maps, strict=True))

    return loss


def gradient_at_loss(run: Run, grads_t: torch.Tensor) -> LossFn:
    """``CE + beta_g/2 * ||J_S - J_T||_2`` (mean over the batch), by double back-propagation."""
    beta = run.config["beta_grad"]
    grads_t = grads_t.to(run.device)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        j_s = input_gradients(model, x, y, create_graph=True)
        gap = (j_s - grads_t[idx]).flatten(1).norm(dim=1).mean()
        return F.cross_entropy(model(x), y) + beta / 2 * gap

    return loss


def kd_loss(run: Run, teacher_out: torch.Tensor) -> LossFn:
    """Hinton's KD at the profile's temperature and soft weight."""
    temperature, alpha = run.config["temperature"], run.config["alpha"]
    return against_targets(teacher_out.to(run.device), lambda out, target, y: distillation_loss(
        out, target, y, temperature, alpha))


@reproduction("zagoruyko2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    teacher = conv_teacher(run)
    logits = teacher_logits(run, teacher)
    maps = teacher_attention(run, teacher)
    variants = run.config["variants"]
    if "at" not in variants:
        raise ValueError("the 'at' student is the claim's")

    losses: dict[str, tuple[str, Callable[[], LossFn]]] = {
        "at": ("student (activation AT)", lambda: activation_at_loss(run, maps)),
        "kd": ("student (KD)", lambda: kd_loss(run, logits)),
        "at_kd": ("student (AT + KD)", lambda: activation_at_loss(run, maps, logits)),
        "grad_at": ("student (gradient AT)", lambda: gradient_at_loss(run, teacher_input_gradients(run, teacher))),
    }
    models = {"hard": train_student_net(run, "student (hard labels)")}
    for name in variants:
        desc, make = losses[name]
        models[name] = train_student_net(run, desc, make())

    record_student_claim(
        run, "cifar10-at", student_metrics(run, teacher, models, "at", labels={"grad_at": "gradient_at"}),
        differs="VGG-style conv nets instead of wide ResNets; AT at the 3 stage outputs",
        diagnosis=DIAGNOSIS,
    )
