"""Like What You Like: Knowledge Distill via Neuron Selectivity Transfer (Huang & Wang, arXiv 2017; arXiv:1707.01219).

Method (Sec. 3): each channel of a feature map, its H*W responses flattened and L2-normalised, is a
sample of the layer's *neuron selectivity* distribution. The student is trained to match the
teacher's distribution at one layer by minimising the squared Maximum Mean Discrepancy between the
two sets of samples (student channels ``f_S^i``, teacher channels ``f_T^j``):

    MMD² = 1/C_T² sum_{j,j'} k(f_T^j, f_T^j') + 1/C_S² sum_{i,i'} k(f_S^i, f_S^i')
           - 2/(C_S C_T) sum_{i,j} k(f_S^i, f_T^j),

added to the classification loss, ``L = CE + lambda/2 * MMD²`` (Eq. 5). Kernels (Sec. 3.3): linear
``k(x, y) = x.y``; polynomial ``k(x, y) = (x.y + c)^d`` with d = 2, c = 0 (the paper's best; it
amounts to matching the Gram matrices of the normalised feature maps); Gaussian
``exp(-||x - y||² / (2 sigma²))`` with sigma² the mean squared pairwise distance. The paper also
combines NST with KD (NST+KD, Hinton's loss imported from :mod:`reproductions.hinton2015`).

Claim (official README, ImageNet): an Inception-BN student improves from 25.74% to 24.81% top-1
error with NST (poly kernel) and to 24.34% with NST+KD; the CIFAR numbers of Table 1 were not
confirmed, so the paper's checks use none. Measured here: ``distillation_gain_pp`` (NST-poly minus
the same student on hard labels), ``nst_kd_gain_pp``, ``kd_gain_pp``, ``nst_linear_gain_pp`` and
``nst_gaussian_gain_pp``.

Harness differs: Fashion-MNIST subsampled, a short budget of optimizer steps (the same for every
student), no augmentation; the shared conv teacher of
:mod:`reproductions.romero2015` and a thin 3-conv :class:`~reproductions.romero2015.ConvNet` student
instead of ResNet/Inception-BN; NST at the last stage's output (before its pool), as the paper
transfers at the end of the last group; ``lambda = 50`` for every kernel (the paper tunes it per
kernel and task), KD at T = 4 with soft weight 0.9. The quick profile trains the poly kernel only
(the claims' kernel); the linear and Gaussian kernels are in the paper profile's ``kernels``.

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "not reproduced", with
budgets counted in epochs and the verdict decided by the mean alone. Since then a check is decided on
the 95% interval over at least three seeds (inconclusive when it straddles the threshold, or when the
baseline is more than 1 pp below its reference accuracy), budgets are optimizer steps, and shared
teachers are trained once per profile; a verdict that differs from the first record's comes from these
rules, not from a change of the method.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from atlas.harness import Run, measure, reproduction
from reproductions.hinton2015 import distillation_loss, teacher_logits
from reproductions.romero2015 import (
    CONV_TEACHER,
    conv_student,
    forward_stages,
    stage_channels,
    teacher_stage_outputs,
    train_conv_student,
    train_conv_teacher,
)
from reproductions.zagoruyko2017 import kd_loss

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

PROFILES = {
    "smoke": {
        **CONV_TEACHER["smoke"], "seeds": 1, "lr": 0.05, "batch_size": 128, "optimizer": "sgd",
        "weight_decay": 5e-4, "student_net": {"chans": [4, 8, 16], "per_stage": 1},
        "student": {"steps": 11}, "nst_weight": 50.0, "temperature": 4.0, "alpha": 0.9,
        "kernels": ["poly", "linear", "gaussian"],
    },
    "quick": {
        # The checked claims need the poly kernel (NST and NST + KD); the linear and Gaussian kernels
        # are left to the paper profile to give the students a budget they converge on.
        **CONV_TEACHER["quick"], "seeds": 3, "lr": 0.05, "batch_size": 64, "optimizer": "sgd",
        "weight_decay": 5e-4, "student_net": {"chans": [8, 16, 32], "per_stage": 1},
        "student": {"steps": 600}, "nst_weight": 50.0, "temperature": 4.0, "alpha": 0.9,
        "kernels": ["poly"],
    },
    "paper": {
        **CONV_TEACHER["paper"], "seeds": 3, "lr": 0.1, "batch_size": 128, "optimizer": "sgd",
        "weight_decay": 5e-4, "student_net": {"chans": [64, 128, 256], "per_stage": 1},
        "student": {"steps": 78125, "schedule": "step"}, "nst_weight": 50.0, "temperature": 4.0, "alpha": 0.9,
        "kernels": ["poly", "linear", "gaussian"],
    },
}


def selectivity_samples(feature_map: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> B x C x HW, each channel's responses L2-normalised (one sample per channel)."""
    return F.normalize(feature_map.flatten(2), dim=2)


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, kernel: str, sigma2: torch.Tensor | None = None) -> torch.Tensor:
    """``k(a_i, b_j)`` for every pair of samples, batched: B x Ca x Cb."""
    dots = a @ b.transpose(1, 2)
    if kernel == "linear":
        return dots
    if kernel == "poly":  # d = 2, c = 0
        return dots.pow(2)
    if kernel == "gaussian":  # unit vectors: ||a - b||² = 2 - 2 a.b
        return torch.exp(-(2 - 2 * dots) / (2 * sigma2))
    raise ValueError(f"unknown kernel '{kernel}'")


def mmd2(student_map: torch.Tensor, teacher_map: torch.Tensor, kernel: str = "poly") -> torch.Tensor:
    """Squared MMD between the student's and the teacher's neuron-selectivity samples, averaged over
    the batch. The spatial sizes must match; the channel counts need not."""
    s, t = selectivity_samples(student_map), selectivity_samples(teacher_map)
    sigma2 = None
    if kernel == "gaussian":
        allv = torch.cat([s, t], dim=1).detach()
        sigma2 = (2 - 2 * allv @ allv.transpose(1, 2)).clamp_min(0).mean(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    k_tt = kernel_matrix(t, t, kernel, sigma2).mean(dim=(1, 2))
    k_ss = kernel_matrix(s, s, kernel, sigma2).mean(dim=(1, 2))
    k_st = kernel_matrix(s, t, kernel, sigma2).mean(dim=(1, 2))
    return (k_tt + k_ss - 2 * k_st).mean()


def teacher_last_stage(run: Run, teacher: nn.Module) -> torch.Tensor:
    """The teacher's last-stage feature maps for every training example (computed once)."""
    last = len(stage_channels(teacher)) - 1
    return teacher_stage_outputs(run, teacher, [last])[last]


def nst_loss(run: Run, teacher_maps: torch.Tensor, kernel: str, teacher_out: torch.Tensor | None = None) -> LossFn:
    """``CE + lambda/2 * MMD²`` at the last stage (``teacher_maps``: the teacher's, per training
    example); with ``teacher_out``, Hinton's KD in place of CE (NST+KD)."""
    lam, temperature, alpha = run.config["nst_weight"], run.config["temperature"], run.config["alpha"]

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        logits, stages = forward_stages(model, x)
        base = (F.cross_entropy(logits, y) if teacher_out is None
                else distillation_loss(logits, teacher_out[idx].to(run.device), y, temperature, alpha))
        return base + lam / 2 * mmd2(stages[-1], teacher_maps[idx.to(teacher_maps.device)], kernel)

    return loss


@reproduction("huang2017", profiles=PROFILES)
def reproduce(run: Run) -> None:
    data = run.dataset()
    net = run.config["student_net"]
    teacher = train_conv_teacher(run)
    logits = teacher_logits(run, teacher)
    maps = teacher_last_stage(run, teacher)

    def student(desc: str, loss_fn: LossFn | None = None) -> nn.Module:
        return train_conv_student(run, conv_student(run, net["chans"], net["per_stage"]), desc, loss_fn=loss_fn)

    models = {"hard": student("student (hard labels)")}
    for kernel in run.config["kernels"]:
        models[f"nst_{kernel}"] = student(f"student (NST, {kernel})", nst_loss(run, maps, kernel))
    models["kd"] = student("student (KD)", kd_loss(run, logits))
    models["nst_kd"] = student("student (NST + KD)", nst_loss(run, maps, "poly", logits))

    acc = {name: run.accuracy(m, data.test) for name, m in models.items()}
    metrics = {
        "teacher_accuracy": run.accuracy(teacher, data.test), "student_accuracy": acc["hard"],
        "accuracy": acc["nst_poly"], "distillation_gain_pp": acc["nst_poly"] - acc["hard"],
        "param_compression": measure.count_params(teacher) / measure.count_params(models["hard"]),
    }
    for name, value in acc.items():
        if name not in ("hard", "nst_poly"):
            metrics[f"{name}_accuracy"] = value
            metrics[f"{name}_gain_pp"] = value - acc["hard"]
    run.record(
        "imagenet-inception-bn",
        model=(f"teacher vgg-small x{run.config['conv_teacher']['width']} (6 conv) -> student 3 conv "
               f"{'-'.join(map(str, net['chans']))}"),
        metrics=metrics,
        differs=(f"{run.config['dataset']} (train_limit {run.config.get('train_limit')}), "
                 f"{run.config['student']['steps']} student steps, no augmentation; VGG-style conv nets "
                 "instead of ResNet/Inception-BN; NST at the last stage, lambda = 50"),
    )
