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

Claim (Sec. 6, Table 5, "soft targets as regularizers"): a speech model trained on 3% of the
training set overfits with hard targets (44.5% test frame accuracy against 58.9% with all the data),
while the same model trained on the soft targets of a model trained on the full set reaches 57.0%:
soft targets recover (57.0 - 44.5) / (58.9 - 44.5) = 87% of what the other 97% of the data gave.

Harness differs: the quick profile reproduces the Sec. 6 regime on Fashion-MNIST (MNIST cannot be
downloaded here). As in Table 5, the soft targets come from the *same architecture* trained on the
full training set with hard labels (the 784-800-800-10 net; trained once, from seed 0, and shared by
every seed), which is also the "all the data" end of the recovered fraction. Each seed draws its own
3% of the training set, on which the 800-800 student is trained on the hard labels and, from the
same initial weights, data order and number of optimizer steps, on the full-data model's soft
targets (the small set only: the student never sees the other 97%). Neither student is early-stopped
(the paper early-stopped its hard-target baseline; here the hard-label student's test accuracy is
flat over budgets from 300 to 1,200 steps, so early stopping would not move it). Both students are
trained with Adam: with the T²-scaled soft term at T = 20 the gradient approaches that of regressing
the teacher's logits, and SGD at the teacher's learning rate diverged.

The student budget is the one at which the *distilled* student has converged: matching soft targets
keeps improving long after the hard-label student has fitted its 1,800 examples. At 300 steps (lr
1e-3) the distilled student had recovered 0.26 of the gap; at 600 steps with lr 3e-3 it recovers
0.64, the same as at 1,200 steps with lr 1e-3 (0.67): converged at half the cost. This was measured
on seeds 100-102 (not the published seeds) and checked on the digits and on a 10,000-example
Fashion-MNIST training set (300 examples per student), where the claim also holds.

The Sec. 3 claim (full training set, 784-1200-1200 teacher with dropout, the harness's shared
:func:`atlas.harness.teachers.mlp_teacher`) needs thousands of epochs for its unregularised student
to overfit as the paper's did; it is measured by the paper profile only, which the quick profile's
60-second budget on 2 cores cannot fit.

Shared with the later distillation papers (imported from here): :func:`soft_targets`,
:func:`distillation_loss` and :func:`teacher_logits`.

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "not reproduced" for the
Sec. 3 claim (full training set, 6 student epochs: gain -0.22 pp over 3 seeds). The quick profile now
measures Sec. 6 instead, the regime in which the paper reports soft targets acting as a regulariser,
with the soft targets of the same architecture trained on all the data as in Table 5, and trains the
students until the distilled one has converged (300 steps had recovered 0.26 of the gap, 600 steps at lr
3e-3 recover 0.64, as 1,200 steps at lr 1e-3 do). Sec. 3 is measured by the paper profile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, Tuned, measure, reproduction
from atlas.harness.data import Dataset, Split
from atlas.harness.run import stable_hash
from atlas.harness.teachers import MLP_TEACHER, MLPTeacherTraining, mlp_teacher
from atlas.harness.training import against_targets


class SmallData(Section):
    fraction: float  # of the training set, drawn anew for each seed (Sec. 6: 3%)


class Config(Profile):
    temperature: float  # T of the soft targets (Sec. 3: 20)
    soft_weight: float  # weight of the T²-scaled soft term; the hard-label term gets 1 - soft_weight
    full_data_model: TrainConfig  # Sec. 6's model trained on all the data: the soft targets' source
    small_data: SmallData
    student: TrainConfig  # each of the two students
    teacher: MLPTeacherTraining | None = None  # Sec. 3's 1200-1200 teacher (paper profile)
    full_data: bool = False  # also measure Sec. 3 (full training set, the 1200-1200 teacher)


#: The temperature, which the paper tuned, chosen on a validation split (``benchmarks/tune.py``).
TUNED = Tuned(key="temperature", grid=[4.0, 8.0, 20.0],
              source="Sec. 3: T = 20 for the MNIST student; with 300 or more units per layer all temperatures "
                     "above 8 gave similar results, with 30 units 2.5 to 4 worked best")

PROFILES = {
    # ``full_data_model``: the student's architecture trained on the whole training set with hard
    # labels (Sec. 6's full-data model and source of the soft targets), trained once per profile.
    "smoke": {
        "dataset": "digits", "seeds": 2, "temperature": 20.0, "soft_weight": 0.9,
        "full_data_model": {"steps": 150, "batch_size": 64, "optimizer": "adam", "lr": 0.001},
        "small_data": {"fraction": 0.1},
        "student": {"steps": 40, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
    },
    "quick": {
        # The temperature and the students' learning rate were chosen on a validation split
        # (benchmarks/results/tuning-cpu-amd-epyc-2core.md):
        # T = 4 of 4, 8 and 20; lr = 1.5e-3, the hard-label student's best of 1.5e-3, 3e-3 and 6e-3.
        "dataset": "fashion-mnist", "seeds": 3, "temperature": 4.0, "soft_weight": 0.9,
        "full_data_model": {"steps": 1500, "batch_size": 128, "optimizer": "adam", "lr": 0.001},
        # Sec. 6: 3% of the training set.
        "small_data": {"fraction": 0.03},
        "student": {"steps": 600, "batch_size": 128, "optimizer": "adam", "lr": 0.0015},
    },
    "paper": {
        # Sec. 3: MNIST, full training set, the 1200-1200 teacher; the paper trains far longer (and
        # jitters the teacher's input). Sec. 6 as in the quick profile, on MNIST.
        **MLP_TEACHER["paper"], "seeds": 3, "temperature": 20.0, "soft_weight": 0.9,
        "full_data_model": {"steps": 28000, "batch_size": 128, "optimizer": "adam", "lr": 0.001},
        "small_data": {"fraction": 0.03},
        "student": {"steps": 28000, "batch_size": 128, "optimizer": "adam", "lr": 0.001},
        "full_data": True,
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


def train_full_data_model(run: Run) -> nn.Module:
    """Sec. 6's full-data model: the student's architecture trained on the whole training set with
    the hard labels, once per profile and data set (from seed 0), then reused from the cache. It is
    the source of the soft targets and the "all the data" end of the recovered fraction."""
    cfg = TrainConfig.from_dict(run.config["full_data_model"])
    data = run.dataset()
    return run.cached_model(
        "hinton-student-full-data", {"train": vars(cfg)},
        build=lambda: run.model("hinton-student"),
        fit=lambda m: run.train(m, data.train, cfg, desc="teacher"),
        per_seed=False,
    )


def teacher_logits(run: Run, teacher: nn.Module, split: Split | None = None) -> torch.Tensor:
    """The teacher's logits on every example of ``split`` (default: the training set), computed once
    (the transfer set)."""
    return run.predict(teacher, split if split is not None else run.dataset().train)


def small_training_set(run: Run, fraction: float) -> Dataset:
    """This seed's own random ``fraction`` of the training set (Sec. 6), with the full test set."""
    data = run.dataset()
    n = max(data.num_classes, round(fraction * len(data.train)))
    gen = torch.Generator().manual_seed(int(stable_hash([run.seed, "small-data"])[:15], 16))
    idx = torch.randperm(len(data.train), generator=gen)[:n]
    return Dataset(data.name, Split(data.train.x[idx], data.train.y[idx]), data.test, data.num_classes,
                   data.source)


def train_student_hard(run: Run, arch: str = "hinton-student", data: Dataset | None = None,
                       **kwargs) -> nn.Module:
    """The student trained on the hard labels alone: the comparison every distillation claim needs."""
    data = data or run.dataset()
    run.reseed("student")
    student = run.model(arch, data, **kwargs)
    return run.train(student, data.train, run.train_config("student"), desc="student (hard labels)")


def distil(run: Run, teacher_out: torch.Tensor, arch: str = "hinton-student", data: Dataset | None = None,
           **kwargs) -> nn.Module:
    """The student trained on the teacher's soft targets at temperature T (plus the hard labels),
    from the same initial weights and data order as :func:`train_student_hard`."""
    data = data or run.dataset()
    temperature, weight = run.config["temperature"], run.config["soft_weight"]
    loss = against_targets(teacher_out.to(run.device), lambda out, target, y: distillation_loss(
        out, target, y, temperature, weight))
    run.reseed("student")
    student = run.model(arch, data, **kwargs)
    return run.train(student, data.train, run.train_config("student"), desc="student (distilled)",
                     loss_fn=loss)


def compare_students(run: Run, teacher: nn.Module, data: Dataset) -> dict[str, float]:
    """Hard-label and distilled students on ``data``: their accuracies and the distillation gain."""
    hard = train_student_hard(run, data=data)
    distilled = distil(run, teacher_logits(run, teacher, data.train), data=data)
    acc_teacher = run.accuracy(teacher, data.test)
    acc_hard, acc_distilled = run.accuracy(hard, data.test), run.accuracy(distilled, data.test)
    return {
        "teacher_accuracy": acc_teacher,
        "student_accuracy": acc_hard,
        "accuracy": acc_distilled,
        "distillation_gain_pp": acc_distilled - acc_hard,
        "teacher_minus_student_pp": acc_teacher - acc_hard,
        "param_compression": measure.count_params(teacher) / measure.count_params(distilled),
    }


@reproduction("hinton2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    full_model = train_full_data_model(run)
    small = small_training_set(run, cfg["small_data"]["fraction"])
    m = compare_students(run, full_model, small)
    gap = m["teacher_accuracy"] - m["student_accuracy"]
    m["gap_recovered_fraction"] = m["distillation_gain_pp"] / gap if gap > 0 else float("nan")
    run.record(
        "speech-3pct-data",
        model=f"800-800 MLP on the full training set -> the same MLP on {len(small.train)} examples",
        metrics=m, baseline=("hinton-student", "student_accuracy"), baseline_data=small,
        differs=f"{cfg['small_data']['fraction']:.0%} of the training set drawn per seed; "
                f"{cfg['student']['steps']} steps for each student, {cfg['full_data_model']['steps']} for the "
                "full-data model; image classification instead of speech frames; no early stopping",
    )

    if cfg.get("full_data"):
        teacher = mlp_teacher(run)
        full = run.dataset()
        m = compare_students(run, teacher, full)
        m["test_errors_hard"] = (100 - m["student_accuracy"]) / 100 * len(full.test)
        m["test_errors_distilled"] = (100 - m["accuracy"]) / 100 * len(full.test)
        run.record(
            "mnist-student", model="teacher 1200-1200 -> student 800-800 (MLP)", metrics=m,
            baseline=("hinton-student", "student_accuracy"),
            differs=f"{cfg['student']['steps']} student steps, {cfg['teacher']['steps']} teacher steps; "
                    "no input jitter",
        )
