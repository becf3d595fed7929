"""Do Deep Convolutional Nets Really Need to be Deep and Convolutional? (Urban, Geras, Kahou, Aslan,
Wang, Caruana, Mohamed, Philipose & Richardson, ICLR 2017; arXiv:1603.05691).

Method (Sec. 2-3): Ba & Caruana's model compression (imported from :mod:`reproductions.ba2014`):
shallow students are trained to *mimic* a deep convolutional teacher by L2 regression on the
teacher's logits, ``1/2 ||g(x) - z||²`` (:func:`reproductions.ba2014.mimic_loss`). The students have
no, one or two convolutional layers (each followed by pooling) and a fully connected hidden layer;
every architecture is trained both ways, on the teacher's logits and on the 0/1 labels.

Claim (Sec. 3, Figure 1, CIFAR-10): students trained on the teacher's logits are more accurate than
the same architectures trained on the hard labels ("distillation gain" above zero at every size),
but the shallow students approach the deep teacher only when they have several convolutional
layers; fully connected students stay far behind (below 75% on CIFAR-10, where the conv students
pass 85%). Checked: ``distillation_gain_pp`` (the 2-conv mimic student minus the same net on labels)
and ``conv_over_mlp_pp`` (the best conv mimic student minus the MLP mimic student) both positive.

Harness differs: one conv teacher (the shared :func:`atlas.harness.teachers.conv_teacher`,
a small VGG-style net) instead of an ensemble of 16 deep CNNs; Fashion-MNIST subsampled (where an
MLP does much better relative to convs than on CIFAR-10, so the conv-over-MLP gap is expected to be
smaller); the transfer set is the labelled training set (the paper adds augmented and unlabelled
images: 8 million examples); a short budget of optimizer steps, the same for both objectives;
fixed hyperparameters rather than Bayesian optimisation (Adam for both objectives: with SGD at one
learning rate the mimic students' L2 loss on the logits made some diverge); students far smaller
than the paper's (up to 30M parameters); the quick profile trains the MLP and the two-conv students
only.

Recorded metrics besides the standard ones: ``<arch>_mimic_accuracy``, ``<arch>_labels_accuracy`` and
``<arch>_gain_pp`` for each student (``mlp``, ``conv1``, ``conv2``), ``conv_over_mlp_pp``.

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "not reproduced", with
budgets counted in epochs and the verdict decided by the mean alone. The verdict rules have changed since (CONTRIBUTING.md, "Verdict history"): a different verdict
comes from them, not from a change of the method.
"""

from __future__ import annotations

from collections.abc import Sequence

from atlas_reproductions.ba2014 import mimic_loss
from atlas_reproductions.hinton2015 import teacher_logits
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, Tuned, measure, reproduction
from atlas.harness.convnets import data_note, train_conv_student
from atlas.harness.teachers import CONV_TEACHER, ConvTeacherTraining, conv_teacher
from atlas.harness.training import against_targets


# Both objectives train with Adam: the mimic loss is an unbounded L2 regression on logits of scale
# ~10, whose gradients are an order of magnitude above cross-entropy's, and with SGD at the labels'
# learning rate some mimic students diverged (10% accuracy); Adam's steps do not scale with the loss.
class StudentShape(Section):
    convs: list[int]  # channels of each 3x3 conv-BN-ReLU-pool block (none: an MLP)
    hidden: int  # units of the one fully connected hidden layer


#: Why the atlas does not take its "partly" (the mimic students' gain) as the paper's; shown beside
#: the verdict.
DIAGNOSIS = """
Ba & Caruana's L2 loss on the logits (imported from ba2014) trains the mimic students; both
objectives get Adam and the same steps. With the shared teacher now trained on the whole training
set (89.27%, 1.7-4.7 pp above the label students), on seeds 100-102 (not the published seeds) the
mimic students still trail the same nets trained on labels (MLP -1.41 pp, two-conv -1.89 pp), while
the conv-over-MLP part of the claim holds (+2.5 pp). The paper's students mimic an ensemble on a
transfer set of 8 million augmented and unlabelled images, where the logits carry far more than the
0/1 labels of the same images; here the transfer set is the students' 6,000 labelled examples, on
which ba2014's MLP mimic loses as well. The atlas takes the gap to be the transfer set's size, a
part of the paper's method this quick profile does not give, not evidence against the paper's claim.
The learning rates, which the paper chose per student by Bayesian optimisation, are chosen on a
validation split (the training set's last 10,000 examples, seeds 1000-1001, benchmarks/results/tuning-cpu-amd-epyc-2core.md): 3e-3 for
the mimic students (84.74% at 1e-3, 86.66% at 3e-3, 83.81% at 1e-2) and 2e-3 for the label students
(87.69%); the mimic student then still trails by 1.0 pp on the validation split.
"""


class Config(Profile):
    conv_teacher: ConvTeacherTraining
    students: dict[str, StudentShape]  # the shallow students, by name
    student: TrainConfig  # each student's budget on the labels
    mimic: TrainConfig  # each student's budget on the mimic objective: the same steps, its own learning rate


def _adam(steps: int, batch_size: int, lr: float = 1e-3) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "adam"}


#: The mimic students' learning rate, chosen on a validation split (``benchmarks/tune.py``): the paper
#: chose every student's hyperparameters by Bayesian optimisation, separately for each objective.
TUNED = Tuned(key="mimic.lr", grid=[1e-3, 3e-3, 1e-2],
              source="Sec. 2: each student's learning rate (and more) chosen by Bayesian optimisation on held-out data")


PROFILES = {
    "smoke": {
        **CONV_TEACHER["smoke"], "seeds": 1,
        "students": {"mlp": {"convs": [], "hidden": 64}, "conv1": {"convs": [8], "hidden": 64}},
        "student": _adam(11, 128), "mimic": _adam(11, 128),
    },
    "quick": {
        # The checks need the MLP and the deepest conv student; the one-conv student is left to the
        # paper profile. 380 steps (4 passes over the 6,000 examples) fit the 90 s budget (600 took 104 s).
        **CONV_TEACHER["quick"], "seeds": 3,
        "students": {"mlp": {"convs": [], "hidden": 512}, "conv2": {"convs": [16, 32], "hidden": 128}},
        # The learning rates were chosen on a validation split (benchmarks/results/tuning-cpu-amd-epyc-2core.md):
        # the mimic students' 3e-3 of 1e-3, 3e-3 and 1e-2; the label students' 2e-3, their best of
        # 5e-4, 1e-3 and 2e-3.
        "student": _adam(380, 64, lr=2e-3), "mimic": _adam(380, 64, lr=3e-3),
    },
    "paper": {
        # Sec. 3: students with 0-4 conv layers of 32-256 channels and a wide hidden layer.
        **CONV_TEACHER["paper"], "seeds": 3,
        "students": {"mlp": {"convs": [], "hidden": 4000}, "conv1": {"convs": [128], "hidden": 1000},
                     "conv2": {"convs": [128, 256], "hidden": 1000}},
        "student": _adam(39062, 128), "mimic": _adam(39062, 128),
    },
}


class ShallowStudent(nn.Sequential):
    """``len(convs)`` blocks of 3x3 conv-BN-ReLU and 2x2 max pooling, then one fully connected ReLU
    layer of ``hidden`` units and the output layer (no convs: a one-hidden-layer MLP)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, convs: Sequence[int], hidden: int) -> None:
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for out in convs:
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        super().__init__(*layers)


def shallow_student(run: Run, name: str) -> nn.Module:
    data = run.dataset()
    return ShallowStudent(data.input_shape, data.num_classes, **run.config["students"][name]).to(run.device)


@reproduction("urban2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    teacher = conv_teacher(run)
    logits = teacher_logits(run, teacher).to(run.device)
    mimic = against_targets(logits, lambda out, target, y: mimic_loss(out, target))

    metrics: dict[str, float] = {"teacher_accuracy": run.accuracy(teacher, data.test)}
    for name in run.config["students"]:
        on_labels = train_conv_student(run, shallow_student(run, name), f"{name} (labels)")
        mimicked = train_conv_student(run, shallow_student(run, name), f"{name} (mimic)", loss_fn=mimic,
                                      section="mimic")
        metrics[f"{name}_labels_accuracy"] = run.accuracy(on_labels, data.test)
        metrics[f"{name}_mimic_accuracy"] = run.accuracy(mimicked, data.test)
        metrics[f"{name}_gain_pp"] = metrics[f"{name}_mimic_accuracy"] - metrics[f"{name}_labels_accuracy"]
        metrics[f"{name}_params"] = float(measure.count_params(mimicked))
    convs = [n for n in run.config["students"] if run.config["students"][n]["convs"]]
    main = convs[-1]  # the deepest shallow conv student
    metrics.update({
        "student_accuracy": metrics[f"{main}_labels_accuracy"], "accuracy": metrics[f"{main}_mimic_accuracy"],
        "distillation_gain_pp": metrics[f"{main}_gain_pp"],
        "conv_over_mlp_pp": max(metrics[f"{n}_mimic_accuracy"] for n in convs) - metrics["mlp_mimic_accuracy"],
    })
    run.record(
        "cifar10-shallow",
        model=f"teacher vgg-small x{run.config['conv_teacher']['width']} -> shallow students "
              + ", ".join(run.config["students"]),
        metrics=metrics,
        differs=(f"{data_note(run)}, one conv teacher, "
                 f"{run.config['student']['steps']} steps per student, transfer set = training set, no "
                 "augmentation, Adam for both objectives, each with its learning rate chosen on a validation split "
                 "(not Bayesian optimisation)"),
        diagnosis=DIAGNOSIS,
    )
