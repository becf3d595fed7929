"""Accelerating Convolutional Neural Networks with Dominant Convolutional Kernel and Knowledge
Pre-regression (Wang, Deng & Wang, ECCV 2016).

Method, as the abstract states it: a compressed student, DK2PNet, combines two parts.

- **Dominant convolutional kernel (DK)**: a low-rank decomposition of the convolution kernels. Read
  here as: for every input channel, the ``C_out`` k x k kernels that act on it are spanned by ``r``
  *dominant* k x k kernels, ``W[o, c] = sum_m A[o, c, m] D[c, m]``. The layer then runs as a
  grouped k x k convolution producing ``r`` maps per input channel (the dominant kernels) followed by
  a 1x1 convolution (the coefficients ``A``), which cuts the layer's parameters and multiply-adds by
  about ``k² * C_out / (r * (k² + C_out))``. (The paper's exact parameterisation was not read this
  session; this is the per-input-channel low-rank form its name describes.)
- **Knowledge pre-regression (KP)**: before ordinary training, the student's intermediate feature
  maps are regressed onto a larger teacher's, "on the basis of a cross-entropy loss instead of the
  Euclidean distance" used by FitNets (:mod:`reproductions.romero2015`). Here each channel's spatial
  map is turned into a distribution by a softmax over its H*W positions and the student's
  distribution is fitted to the teacher's by cross-entropy, at the outputs of the first two stages;
  then the whole student is fine-tuned on the labels.

Claim (abstract): DK2PNet reaches accuracy close to the state of the art with dramatically fewer
parameters on CIFAR-10/100, MNIST and SVHN. No relative number was confirmed, so the paper's claim
has no checks; recorded are ``distillation_gain_pp`` (the DK student with KP minus the same DK
student trained on the labels alone, same fine-tuning schedule), ``accuracy_change_pp`` (the KP
student minus the teacher), ``param_compression``, ``flop_reduction`` and ``speedup`` (measured CPU
latency, teacher / DK student) of the decomposed student against the teacher.

Harness differs: Fashion-MNIST subsampled, a short budget of optimizer steps, no augmentation; the teacher is the shared
conv teacher (:func:`atlas.harness.teachers.conv_teacher`) and the student has the teacher's architecture with
every conv layer but the first replaced by its DK form (``rank`` dominant kernels per input
channel), trained from scratch; the student's stage widths equal the teacher's, so no regressor is
needed for KP. Both DK students get the same number of optimizer steps on the same data: the KP
student spends ``kp.steps`` of the ``student.steps`` on the pre-regression and the rest on
fine-tuning, so any gain is not from extra updates.

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "not reproduced", with
budgets counted in epochs and the verdict decided by the mean alone. The verdict rules have changed since (CONTRIBUTING.md, "Verdict history"): a different verdict
comes from them, not from a change of the method.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, measure, reproduction
from atlas.harness.convnets import (
    data_note,
    forward_stages,
    layers_upto,
    remaining_steps,
    student_sgd,
    teacher_stage_outputs,
    train_conv_student,
)
from atlas.harness.teachers import CONV_TEACHER, ConvTeacherTraining, conv_teacher


class Config(Profile):
    conv_teacher: ConvTeacherTraining
    rank: int  # dominant kernels per input channel
    kp_stages: list[int]  # the stages whose feature maps the pre-regression matches
    kp: TrainConfig  # knowledge pre-regression of the layers up to the last KP stage
    student: TrainConfig  # each DK student's whole budget; the KP one fine-tunes with what KP left



PROFILES = {
    "smoke": {
        **CONV_TEACHER["smoke"], "seeds": 1, "rank": 1, "kp_stages": [0, 1],
        "kp": student_sgd(4, 128), "student": student_sgd(11, 128),
    },
    "quick": {
        # Both DK students get ``student.steps`` optimizer steps; the KP one spends ``kp.steps`` of them
        # on the pre-regression and the rest on fine-tuning. 240 steps fit the 90 s budget (400 took
        # 124 s cold on 2 cores: a DK student costs about as much per step as the teacher).
        **CONV_TEACHER["quick"], "seeds": 3, "rank": 1, "kp_stages": [0, 1],
        "kp": student_sgd(66, 64), "student": student_sgd(240, 64),
    },
    "paper": {
        **CONV_TEACHER["paper"], "seeds": 3, "rank": 2, "kp_stages": [0, 1],
        "kp": student_sgd(11719, 128), "student": student_sgd(74219, 128, schedule="step"),
    },
}


class DominantKernelConv(nn.Module):
    """A k x k convolution whose kernels, per input channel, lie in the span of ``rank`` dominant
    kernels: grouped k x k conv (``rank`` maps per input channel) then a 1x1 conv."""

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__()
        cin, cout = conv.in_channels, conv.out_channels
        self.dominant = nn.Conv2d(cin, cin * rank, conv.kernel_size, conv.stride, conv.padding, groups=cin, bias=False)
        self.combine = nn.Conv2d(cin * rank, cout, 1, bias=conv.bias is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.dominant(x))


def dominant_kernel_net(model: nn.Module, rank: int) -> nn.Module:
    """A fresh copy of a staged conv net with every conv layer but the first in DK form (freshly
    initialised: the student is trained from scratch)."""
    student = copy.deepcopy(model)
    first = True
    for i, layer in enumerate(student.features):
        if isinstance(layer, nn.Conv2d):
            if first:
                layer.reset_parameters()
                first = False
            else:
                student.features[i] = DominantKernelConv(layer, rank)
        elif isinstance(layer, nn.BatchNorm2d):
            layer.reset_parameters()
            layer.reset_running_stats()
    for layer in student.classifier:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    return student


def spatial_cross_entropy(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """KP's loss: each channel's H*W map as a softmax distribution over positions; cross-entropy of
    the student's from the teacher's, averaged over channels and examples."""
    p_t = F.softmax(teacher_map.flatten(2), dim=2)
    log_p_s = F.log_softmax(student_map.flatten(2), dim=2)
    return -(p_t * log_p_s).sum(2).mean()


def knowledge_pre_regression(run: Run, student: nn.Module, teacher: nn.Module) -> float:
    """Train the student's layers up to the last KP stage to fit the teacher's feature maps there."""
    stages = run.config["kp_stages"]
    targets = teacher_stage_outputs(run, teacher, stages)
    last = {"loss": float("nan")}

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        s = forward_stages(model, x, upto=max(stages))[1]
        value = sum(spatial_cross_entropy(s[i], targets[i][idx.to(targets[i].device)]) for i in stages)
        last["loss"] = value.item()
        return value

    run.train(student, run.dataset().train, run.train_config("kp"), desc="DK student (pre-regression)",
              loss_fn=loss, params=layers_upto(student, max(stages)))
    return last["loss"]


@reproduction("wang2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    teacher = conv_teacher(run)
    rank = run.config["rank"]

    plain = train_conv_student(run, dominant_kernel_net(teacher, rank).to(run.device), "DK student (labels)")
    kp = dominant_kernel_net(teacher, rank).to(run.device)
    kp_loss = knowledge_pre_regression(run, kp, teacher)
    finetune = remaining_steps(run, "kp")
    kp = train_conv_student(run, kp, "DK student (KP + fine-tuning)", steps=finetune)

    acc_teacher = run.accuracy(teacher, data.test)
    acc_plain, acc_kp = run.accuracy(plain, data.test), run.accuracy(kp, data.test)
    size = measure.compression_metrics(teacher, kp, data.input_shape)
    speedup = measure.latency_ms(teacher, data.input_shape) / measure.latency_ms(kp, data.input_shape)
    run.record(
        "cifar10-dkpr",
        model=f"teacher vgg-small x{run.config['conv_teacher']['width']} -> DK student (rank {rank})",
        metrics={
            "teacher_accuracy": acc_teacher, "baseline_accuracy": acc_teacher,
            "student_accuracy": acc_plain, "accuracy": acc_kp,
            "distillation_gain_pp": acc_kp - acc_plain, "accuracy_change_pp": acc_kp - acc_teacher,
            "kp_loss": kp_loss, "params": size["params"], "param_compression": size["param_compression"],
            "flops": size["flops"], "flop_reduction": size["flop_reduction"], "speedup": speedup,
        },
        differs=(f"{data_note(run)}, "
                 f"both DK students {run.config['student']['steps']} steps (KP {run.config['kp']['steps']} + "
                 f"fine-tuning {finetune}), no augmentation; "
                 "DK read as per-input-channel rank-r kernels; KP as spatial-softmax cross-entropy"),
    )
