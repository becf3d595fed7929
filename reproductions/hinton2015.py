"""Distilling the Knowledge in a Neural Network (Hinton, Vinyals & Dean, 2015; arXiv:1503.02531).

Method (Sec. 2): a small *student* is trained to match the *soft targets* of a large *teacher*, the
teacher's class probabilities softened by a temperature T, ``q_i = exp(z_i/T) / sum_j exp(z_j/T)``.
The objective is a weighted sum of the cross-entropy with the soft targets, computed at the same T
in the student, and the ordinary cross-entropy with the true labels at T = 1. The soft term's
gradients scale as 1/T², so it is multiplied by T² to keep the two terms' relative weight when T
changes.

Claim (Sec. 3, MNIST): a 784-1200-1200-10 teacher (dropout, jitter) makes 67 test errors; a
784-800-800-10 student trained on the hard labels makes 146, the same student trained to match the
teacher's soft targets at T = 20 makes 74, so distillation removes 72 of the 10,000 test errors
(+0.72 percentage points of accuracy).

Harness differs: the quick profile uses Fashion-MNIST (MNIST cannot be downloaded here), a few
epochs instead of thousands, dropout without jitter for the teacher, and a plain (unregularised)
student as in the paper. Both students (hard labels and distilled) are trained with Adam: with the
T²-scaled soft term at T = 20 the gradient approaches that of regressing the teacher's logits, and
SGD at the teacher's learning rate diverged (the distilled student ended at chance). What is
compared is the relative claim: the gain of the distilled student over the same student trained on
hard labels, on the same data and schedule.

Shared with the later distillation papers (imported from here): :func:`soft_targets`,
:func:`distillation_loss`, :func:`train_teacher` (trained once per profile and cached) and
:func:`teacher_logits`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from atlas.harness import Run, measure, reproduction

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 1, "batch_size": 64, "lr": 0.05, "optimizer": "sgd",
        "teacher": {"epochs": 3, "dropout": 0.2}, "student": {"epochs": 3, "optimizer": "adam", "lr": 0.001},
        "temperature": 20.0, "soft_weight": 0.9,
    },
    "quick": {
        "dataset": "fashion-mnist", "seeds": 3, "batch_size": 128, "lr": 0.05, "optimizer": "sgd",
        # The teacher must be clearly better than the student for its soft targets to carry anything:
        # trained once per profile, so it can afford far more epochs than the students.
        "teacher": {"epochs": 20, "dropout": 0.2}, "student": {"epochs": 6, "optimizer": "adam", "lr": 0.001},
        "temperature": 20.0, "soft_weight": 0.9,
    },
    "paper": {
        # Sec. 3: MNIST, full training set; the paper trains far longer (and jitters the teacher's input).
        "dataset": "mnist", "seeds": 3, "batch_size": 128, "lr": 0.05, "optimizer": "sgd",
        "teacher": {"epochs": 60, "dropout": 0.5}, "student": {"epochs": 60, "optimizer": "adam", "lr": 0.001},
        "temperature": 20.0, "soft_weight": 0.9,
    },
}


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The softened class probabilities ``softmax(z / T)``."""
    return F.softmax(logits / temperature, dim=1)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, soft_weight: float) -> torch.Tensor:
    """``soft_weight * T² * CE(q_teacher(T), q_student(T)) + (1 - soft_weight) * CE(labels, student)``.

    The soft term is written as a KL divergence, which differs from the cross-entropy by the
    teacher's entropy, a constant for the student."""
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), soft_targets(teacher_logits, temperature),
                    reduction="batchmean") * temperature**2
    hard = F.cross_entropy(student_logits, labels)
    return soft_weight * soft + (1.0 - soft_weight) * hard


def train_teacher(run: Run) -> nn.Module:
    """The 784-1200-1200-10 teacher with dropout, trained once per profile and data set (from seed
    0, whatever the student's seed) and then reused from the cache by every distillation paper."""
    cfg = run.train_config("teacher")
    dropout = run.config["teacher"].get("dropout", 0.0)
    data = run.dataset()
    return run.cached_model(
        "hinton-teacher", {"train": vars(cfg), "dropout": dropout},
        build=lambda: run.model("hinton-teacher", dropout=dropout),
        fit=lambda m: run.train(m, data.train, cfg, desc="teacher"),
        per_seed=False,
    )


def teacher_logits(run: Run, teacher: nn.Module) -> torch.Tensor:
    """The teacher's logits on every training example, computed once (the transfer set)."""
    return run.predict(teacher, run.dataset().train)


def train_student_hard(run: Run, arch: str = "hinton-student", **kwargs) -> nn.Module:
    """The student trained on the hard labels alone: the comparison every distillation claim needs."""
    student = run.model(arch, **kwargs)
    return run.train(student, run.dataset().train, run.train_config("student"), desc="student (hard labels)")


def distil(run: Run, teacher_out: torch.Tensor, arch: str = "hinton-student", **kwargs) -> nn.Module:
    """The student trained on the teacher's soft targets at temperature T (plus the hard labels)."""
    temperature, weight = run.config["temperature"], run.config["soft_weight"]
    teacher_out = teacher_out.to(run.device)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return distillation_loss(model(x), teacher_out[idx], y, temperature, weight)

    student = run.model(arch, **kwargs)
    return run.train(student, run.dataset().train, run.train_config("student"), desc="student (distilled)",
                     loss_fn=loss)


@reproduction("hinton2015", profiles=PROFILES)
def reproduce(run: Run) -> None:
    data = run.dataset()
    teacher = train_teacher(run)
    hard = train_student_hard(run)
    distilled = distil(run, teacher_logits(run, teacher))
    acc_teacher = run.accuracy(teacher, data.test)
    acc_hard = run.accuracy(hard, data.test)
    acc_distilled = run.accuracy(distilled, data.test)
    run.record(
        "mnist-student",
        model="teacher 1200-1200 -> student 800-800 (MLP)",
        metrics={
            "teacher_accuracy": acc_teacher,
            "student_accuracy": acc_hard,
            "accuracy": acc_distilled,
            "distillation_gain_pp": acc_distilled - acc_hard,
            "teacher_minus_student_pp": acc_teacher - acc_hard,
            "test_errors_hard": (100 - acc_hard) / 100 * len(data.test),
            "test_errors_distilled": (100 - acc_distilled) / 100 * len(data.test),
            "param_compression": measure.count_params(teacher) / measure.count_params(distilled),
        },
        differs=f"{run.config['student']['epochs']} student epochs, "
                f"{run.config['teacher']['epochs']} teacher epochs; no input jitter",
    )
