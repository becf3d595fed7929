"""Teachers shared by several distillation papers: named, configured and cached by the harness, so
that a paper imports another paper only for its method; and :func:`student_metrics`, the accuracies
every distillation claim records.

:data:`CONV_TEACHER` is the convolutional teacher of the feature-based papers (the harness's
``vgg-small`` at a width): each spreads ``CONV_TEACHER[profile]`` into its profile and declares its
``conv_teacher`` section as :class:`ConvTeacherTraining`; :func:`conv_teacher` trains it once per
profile and data set.

:data:`MLP_TEACHER` is the deep fully-connected teacher of Hinton et al. (784-1200-1200-10 with
dropout): every paper that distils from it spreads ``MLP_TEACHER[profile]`` into its own profile, so
the teacher is trained once per profile and data set (from seed 0, whatever the student's seed) and
then read from the cache by every paper and seed.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from atlas.harness import measure
from atlas.harness.data import Dataset
from atlas.harness.run import Run
from atlas.harness.training import TrainConfig

#: What determines the shared MLP teacher's weights: the data set and the ``teacher`` section.
MLP_TEACHER: dict[str, dict[str, Any]] = {
    "smoke": {
        "dataset": "digits",
        "teacher": {"steps": 60, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "dropout": 0.2},
    },
    "quick": {
        "dataset": "fashion-mnist",
        "teacher": {"steps": 700, "batch_size": 256, "optimizer": "sgd", "lr": 0.1, "dropout": 0.2},
    },
    "paper": {
        # Hinton et al. Sec. 3: MNIST, full training set (the paper also jitters the input by 2 px).
        "dataset": "mnist",
        "teacher": {"steps": 28000, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "dropout": 0.5},
    },
}


class MLPTeacherTraining(TrainConfig):
    """The ``teacher`` section of a profile that distils from :func:`mlp_teacher`: its training and
    the dropout rate of its hidden layers."""

    dropout: float = 0.0


def mlp_teacher(run: Run) -> nn.Module:
    """The 784-1200-1200-10 teacher with dropout (the run's ``teacher`` section), trained on the full
    training set once per profile and data set and reused from the cache."""
    cfg, dropout = run.train_config("teacher"), run.config["teacher"]["dropout"]
    data = run.dataset()
    return run.cached_model(
        "hinton-teacher", {"train": vars(cfg), "dropout": dropout},
        build=lambda: run.model("hinton-teacher", dropout=dropout),
        fit=lambda m: run.train(m, data.train, cfg, desc="teacher"),
        per_seed=False,
    )


class ConvTeacherTraining(TrainConfig):
    """The ``conv_teacher`` section: the harness architecture, its width, its training and its data.

    ``full_training_set``: trained on the whole training set, not on the profile's ``train_limit``
    examples that the students learn from. A profile that trains its students on a small subset for
    speed gives them a teacher that is clearly better than they can become on that subset, as the
    papers' teachers are (2-5 pp on CIFAR), instead of one trained on the same subset, which a
    student matches within about a point."""

    arch: str = "vgg-small"
    width: float = 1.0
    full_training_set: bool = False


#: What determines the shared convolutional teacher and its data. Its training section states every
#: TrainConfig field, so that no paper's own settings can change the shared teacher.
CONV_TEACHER: dict[str, dict[str, Any]] = {
    "smoke": {
        "dataset": "digits", "train_limit": None, "test_limit": None,
        "conv_teacher": {"arch": "vgg-small", "width": 0.125, "full_training_set": True,
                         "steps": 22, "lr": 0.05, "batch_size": 128,
                         "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"},
    },
    "quick": {
        "dataset": "fashion-mnist", "train_limit": 6000, "test_limit": None,
        "conv_teacher": {"arch": "vgg-small", "width": 0.1875, "full_training_set": True,
                         "steps": 562, "lr": 0.05, "batch_size": 128,
                         "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"},
    },
    "paper": {
        # CIFAR-10 with the full-width VGG-style teacher (FitNets' teacher is a 9M maxout network).
        "dataset": "cifar10", "train_limit": None, "test_limit": None,
        "conv_teacher": {"arch": "vgg-small", "width": 1.0, "full_training_set": True,
                         "steps": 62500, "lr": 0.1, "batch_size": 128,
                         "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step"},
    },
}


def conv_teacher_data(run: Run) -> Dataset:
    """The data the shared conv teacher is trained on: the whole training set where the section says
    ``full_training_set``, else the profile's (the baseline data of a claim measured against it)."""
    return run.dataset(full_train=run.config["conv_teacher"]["full_training_set"])


def conv_teacher(run: Run) -> nn.Module:
    """The shared convolutional teacher (the run's ``conv_teacher`` section), trained once per profile
    and data set (from seed 0, whatever the student's seed; on the whole training set where the section
    says ``full_training_set``) and then reused from the cache by every
    feature-based distillation paper."""
    cfg, section = run.train_config("conv_teacher"), run.config["conv_teacher"]
    arch, width = section["arch"], section["width"]
    data = conv_teacher_data(run)
    return run.cached_model(
        f"conv-teacher-{arch}", {"train": vars(cfg), "width": width, "examples": len(data.train)},
        build=lambda: run.model(arch, width=width),
        fit=lambda m: run.train(m, data.train, cfg, desc="conv teacher"),
        per_seed=False,
    )


def student_metrics(run: Run, teacher: nn.Module, students: dict[str, nn.Module], method: str,
                    labels: dict[str, str] | None = None) -> dict[str, float]:
    """The test accuracies of the teacher and of ``students`` (``"hard"``: the hard-label student), as
    every one-student distillation claim records them: ``student_accuracy`` (hard labels), ``accuracy``
    and ``distillation_gain_pp`` of the ``method`` student, ``param_compression``, and
    ``<label>_accuracy`` / ``<label>_gain_pp`` of every other student (``labels`` renames some)."""
    test = run.dataset().test
    acc = {name: run.accuracy(model, test) for name, model in students.items()}
    metrics = {
        "teacher_accuracy": run.accuracy(teacher, test), "student_accuracy": acc["hard"],
        "accuracy": acc[method], "distillation_gain_pp": acc[method] - acc["hard"],
        "param_compression": measure.count_params(teacher) / measure.count_params(students[method]),
    }
    for name, value in acc.items():
        if name not in ("hard", method):
            label = (labels or {}).get(name, name)
            metrics[f"{label}_accuracy"] = value
            metrics[f"{label}_gain_pp"] = value - acc["hard"]
    return metrics
