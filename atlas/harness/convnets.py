"""Staged convolutional nets, shared by the feature-based distillation papers (FitNets, attention
transfer, neuron selectivity transfer, knowledge pre-regression, shallow students): the thin or
shallow student net, each stage's feature map, the frozen teacher's maps computed once, and a
student's training budget. Plumbing only: every paper's own loss stays in the paper's file.

A *staged* net has a ``features`` sequence in which every 2x2 max pool closes a stage, and a
``classifier``; the harness's ``vgg-small`` teacher and :class:`ConvNet` both have this layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from atlas.harness.models import ConvNet
from atlas.harness.profiles import Profile, Section
from atlas.harness.run import Run
from atlas.harness.teachers import ConvTeacherTraining
from atlas.harness.training import TrainConfig


class ConvStudentShape(Section):
    """The ``student_net`` section: a :class:`~atlas.harness.models.ConvNet` student's shape."""

    chans: list[int]  # channels of the student's stages
    per_stage: int  # conv layers per stage


class ConvStudentProfile(Profile):
    """The sections every paper that distils the shared conv teacher into one staged-conv student
    declares; a paper's ``Config`` adds its method's own keys."""

    conv_teacher: ConvTeacherTraining
    student_net: ConvStudentShape
    student: TrainConfig  # every student's budget


def student_sgd(steps: int, batch_size: int, lr: float = 0.05, **extra: float | str) -> dict[str, Any]:
    """A conv student's training section: SGD (momentum 0.9) with weight decay 5e-4, the recipe of the
    CIFAR papers; ``extra`` sets other :class:`~atlas.harness.training.TrainConfig` fields."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4, **extra}


def conv_student(run: Run, chans: Sequence[int], per_stage: int) -> ConvNet:
    """A fresh :class:`~atlas.harness.models.ConvNet` (the harness model ``staged-conv``) for the
    run's data set."""
    return run.model("staged-conv", chans=list(chans), per_stage=per_stage)


def forward_stages(model: nn.Module, x: torch.Tensor, upto: int | None = None
                   ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """Run a staged net and return its logits and each stage's output feature map, taken after the
    stage's last ReLU and before its pool (the "group outputs" the feature-based papers match). With
    ``upto = i`` it stops after stage ``i`` and returns no logits."""
    stages: list[torch.Tensor] = []
    for layer in model.features:
        if isinstance(layer, nn.MaxPool2d):
            stages.append(x)
            if upto is not None and len(stages) > upto:
                return None, stages
        x = layer(x)
    return model.classifier(x), stages


def stage_channels(model: nn.Module) -> list[int]:
    """Channels of each stage's output feature map."""
    chans, c = [], None
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):
            c = layer.out_channels
        elif isinstance(layer, nn.MaxPool2d):
            chans.append(c)
    return chans


def layers_upto(model: nn.Module, stage: int) -> list[nn.Parameter]:
    """Parameters of the layers up to and including stage ``stage``."""
    params: list[nn.Parameter] = []
    seen = 0
    for layer in model.features:
        if isinstance(layer, nn.MaxPool2d):
            seen += 1
            if seen > stage:
                break
        params.extend(layer.parameters())
    return params


@torch.no_grad()
def teacher_stages(teacher: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The (frozen, eval-mode) teacher's stage feature maps on a batch."""
    teacher.eval()
    return forward_stages(teacher, x)[1]


@torch.no_grad()
def teacher_stage_outputs(run: Run, teacher: nn.Module, stages: Sequence[int]) -> dict[int, torch.Tensor]:
    """The frozen teacher's feature maps at ``stages`` for every training example, computed once (the
    training data are not augmented, so they do not change): a loss looks them up by the batch's
    example indices instead of running the teacher at every step. Computed once per process for a
    shared teacher (:meth:`Run.shared_output`)."""
    split = run.dataset().train

    def compute() -> dict[int, torch.Tensor]:
        out: dict[int, list[torch.Tensor]] = {i: [] for i in stages}
        for start in range(0, len(split), 256):
            maps = teacher_stages(teacher, split.x[start:start + 256].to(run.device))
            for i in stages:
                out[i].append(maps[i])
        return {i: torch.cat(m) for i, m in out.items()}

    return run.shared_output(teacher, split, f"stage outputs {list(stages)}", compute)


def train_conv_student(run: Run, student: nn.Module, desc: str,
                       loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
                       | None = None, section: str = "student", steps: int | None = None, **hooks) -> nn.Module:
    """Train a student on the full training set with the profile's ``section`` budget (``steps``
    optimizer steps if given: the second stage of a two-stage method); without ``loss_fn``, on the
    hard labels (cross-entropy)."""
    if loss_fn is not None:
        hooks["loss_fn"] = loss_fn
    cfg = run.train_config(section, **({} if steps is None else {"steps": steps}))
    return run.train(student, run.dataset().train, cfg, desc=desc, **hooks)



def train_student_net(run: Run, desc: str,
                      loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
                      | None = None) -> nn.Module:
    """A fresh student of the run's ``student_net`` shape, trained with the ``student`` budget
    (:func:`train_conv_student`)."""
    net = run.config["student_net"]
    return train_conv_student(run, conv_student(run, net["chans"], net["per_stage"]), desc, loss_fn=loss_fn)

def remaining_steps(run: Run, first_stage: str) -> int:
    """The steps left of the ``student`` budget after a first stage of ``first_stage`` steps: a
    two-stage student gets the same number of optimizer steps in all as the one-stage students."""
    total, first = run.config["student"]["steps"], run.config[first_stage]["steps"]
    if first >= total:
        raise ValueError(f"'{first_stage}' steps ({first}) must be fewer than the student's ({total})")
    return total - first


def data_note(run: Run) -> str:
    """The data of the run's teacher and students, for a record's ``differs``: e.g. ``fashion-mnist
    (the teacher on the whole training set, the students on train_limit 6000)``."""
    cfg = run.config
    limit = f"train_limit {cfg.get('train_limit')}"
    if cfg["conv_teacher"]["full_training_set"] and cfg.get("train_limit") is not None:
        return f"{cfg['dataset']} (the teacher on the whole training set, the students on {limit})"
    return f"{cfg['dataset']} ({limit})"


def record_student_claim(run: Run, claim: str, metrics: dict[str, float], *, differs: str,
                         diagnosis: str = "") -> None:
    """Record a one-student claim of the run's ``student_net`` against the shared conv teacher, its
    gain measured over the hard-label student: the baseline whose convergence the verdict checks."""
    cfg, net = run.config, run.config["student_net"]
    teacher = cfg["conv_teacher"]
    run.record(
        claim,
        model=(f"teacher {teacher['arch']} x{teacher['width']} -> student {len(net['chans']) * net['per_stage']} "
               f"conv {'-'.join(map(str, net['chans']))}"),
        metrics=metrics,
        differs=f"{data_note(run)}, {cfg['student']['steps']} student steps, no augmentation; {differs}",
        diagnosis=diagnosis,
        baseline=("staged-conv", "student_accuracy"),
        baseline_spec={"chans": list(net["chans"]), "per_stage": net["per_stage"]},
    )
