"""Transferring Knowledge from a RNN to a DNN (Chan, Ke & Lane, Interspeech 2015; arXiv:1504.01483).

Method: a recurrent acoustic model (the teacher) is trained first; its posteriors over the output
classes, frame by frame, are the *soft alignments*. A feed-forward DNN (the student) is then trained
on those soft targets with the Kullback-Leibler divergence ``KL(p_RNN || p_DNN)`` instead of on the
hard (forced) alignments with cross-entropy. The DNN, cheaper to run and without recurrence, closes
much of the gap to the RNN.

Claim (abstract; Sec. 4, WSJ eval92): the DNN trained on the RNN's soft alignments reaches 3.93% word
error rate against 4.54% for the same DNN trained on hard alignments (more than 13% relative). The
relative quantity checked is ``distillation_gain_pp``: the soft-target DNN's accuracy minus the
hard-label DNN's accuracy, same data and schedule (WER treated as 100 minus an accuracy).

Harness differs (the closest honest analogue; not comparable in absolute terms): there is no speech
here, so the sequence task is built from the data set's images, each image read row by row as a
sequence (28 time steps of 28 features on Fashion-MNIST, 8 of 8 on digits). The teacher is a small
one-layer GRU over the rows, trained once per profile on the labels and cached
(:meth:`Run.cached_model`, shared by every seed); its classifier reads the last hidden state. The
student is an MLP on the flattened image (the DNN's "context window" is the whole sequence); the
hard-label and the soft-target DNN start from the same weights, see the data in the same order and
get the same optimizer steps (the hard-label one is the declared baseline, harness ``mlp``). The paper's soft alignments are *per-frame* posteriors
of a frame-level acoustic model; here there is one label per sequence, so the targets are the RNN's
*sequence-level* posteriors. The KL term is Hinton et al.'s soft-target loss at temperature 1 with
no hard-label term (imported from :mod:`reproductions.hinton2015`).

Metrics besides the harness's standard ones: ``params_teacher`` (the GRU's parameter count),
``params_student``.

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "not reproduced", with
budgets counted in epochs and the verdict decided by the mean alone. The verdict rules have changed since (CONTRIBUTING.md, "Verdict history"): a different verdict
comes from them, not from a change of the method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from atlas_reproductions.hinton2015 import distillation_loss
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, measure, reproduction
from atlas.harness.teachers import student_metrics
from atlas.harness.training import against_targets


class RNNTeacher(TrainConfig):
    """The RNN teacher's training and its shape."""

    cell: Literal["gru", "lstm"]  # the recurrent cell
    hidden: PositiveInt  # units of its one recurrent layer


class DNN(Section):
    hidden: list[PositiveInt]  # the DNN student's hidden layers


class Config(Profile):
    rnn: RNNTeacher  # the RNN teacher, trained once per profile on the hard labels
    dnn: DNN  # the DNN student's shape
    student: TrainConfig  # each DNN alike: on the hard labels and on the RNN's posteriors


PROFILES = {
    # Budgets in optimizer steps. The RNN teacher is trained once per profile (shared by every seed);
    # the hard-label DNN and the soft-target DNN get the same ``student`` budget.
    "smoke": {
        "dataset": "digits", "seeds": 2,
        "rnn": {"cell": "gru", "hidden": 32, "steps": 67, "batch_size": 64, "optimizer": "adam", "lr": 0.02},
        "dnn": {"hidden": [128, 128]},
        "student": {"steps": 67, "batch_size": 64, "optimizer": "sgd", "lr": 0.05},
    },
    "quick": {
        # Teacher 1,875 steps of 128 (4 passes over the 60,000 images), DNNs 1,400 (3 passes): 3 seeds
        # fit the 90 s budget (DNNs of 1,875 steps took 95 s cold on 2 cores).
        "dataset": "fashion-mnist", "seeds": 3,
        "rnn": {"cell": "gru", "hidden": 128, "steps": 1875, "batch_size": 128, "optimizer": "adam", "lr": 0.003},
        "dnn": {"hidden": [256, 256]},
        "student": {"steps": 1400, "batch_size": 128, "optimizer": "sgd", "lr": 0.05},
    },
    "paper": {
        # Still the row-sequence analogue (no speech corpus in the harness), at full length
        # (14,063 / 28,125 steps = 30 / 60 epochs).
        "dataset": "mnist", "seeds": 3,
        "rnn": {"cell": "lstm", "hidden": 256, "steps": 14063, "batch_size": 128, "optimizer": "adam", "lr": 0.001},
        "dnn": {"hidden": [1024, 1024, 1024]},
        "student": {"steps": 28125, "batch_size": 128, "optimizer": "sgd", "lr": 0.05},
    },
}


class RowRNN(nn.Module):
    """A recurrent classifier that reads an image (C, H, W) as H time steps of C*W features and
    classifies from its last hidden state."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int, cell: str = "gru") -> None:
        super().__init__()
        c, _, w = input_shape
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(c * w, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    @staticmethod
    def rows(x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H, C*W): one time step per image row."""
        n, c, h, w = x.shape
        return x.permute(0, 2, 1, 3).reshape(n, h, c * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.rows(x))
        return self.head(out[:, -1])


def train_rnn_teacher(run: Run) -> nn.Module:
    """The RNN teacher trained on the hard labels, once per profile and data set (from seed 0,
    cached and shared by every seed, as the paper's one RNN is for its DNNs)."""
    cfg = run.train_config("rnn")
    cell, hidden = run.config["rnn"]["cell"], run.config["rnn"]["hidden"]
    data = run.dataset()
    return run.cached_model(
        "chan2015-rnn", {"train": vars(cfg), "cell": cell, "hidden": hidden},
        build=lambda: RowRNN(data.input_shape, data.num_classes, hidden, cell),
        fit=lambda m: run.train(m, data.train, cfg, desc=f"{cell.upper()} teacher"),
        per_seed=False,
    )


def dnn(run: Run) -> nn.Module:
    """The DNN student, built from the ``"dnn"`` random stream: the hard-label and the soft-target
    DNN start from the same weights and see the data in the same order."""
    run.reseed("dnn")
    return run.model("mlp", hidden=run.config["dnn"]["hidden"])


def train_dnn_hard(run: Run) -> nn.Module:
    """The DNN trained on the hard labels with cross-entropy: the comparison."""
    return run.train(dnn(run), run.dataset().train, run.train_config("student"), desc="DNN (hard labels)")


def train_dnn_soft(run: Run, rnn_logits: torch.Tensor) -> nn.Module:
    """The DNN trained on the RNN's posteriors with KL(p_RNN || p_DNN) alone (T = 1, no hard term)."""
    loss = against_targets(rnn_logits.to(run.device), lambda out, target, y: distillation_loss(
        out, target, y, temperature=1.0, soft_weight=1.0))
    return run.train(dnn(run), run.dataset().train, run.train_config("student"), desc="DNN (soft RNN targets)",
                     loss_fn=loss)


@reproduction("chan2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    rnn = train_rnn_teacher(run)
    students = {"hard": train_dnn_hard(run), "soft": train_dnn_soft(run, run.predict(rnn, data.train))}
    cfg = run.config
    run.record(
        "wsj-dnn",
        model=f"{cfg['rnn']['cell'].upper()}-{cfg['rnn']['hidden']} over image rows -> "
              f"MLP {'-'.join(map(str, cfg['dnn']['hidden']))}",
        metrics={
            **student_metrics(run, rnn, students, "soft"),
            "params_teacher": measure.count_params(rnn),
            "params_student": measure.count_params(students["soft"]),
        },
        baseline=("mlp", "student_accuracy"), baseline_spec={"hidden": list(cfg["dnn"]["hidden"])},
        differs="row-sequence image classification instead of speech (one label per sequence: the RNN's "
                "sequence-level posteriors stand in for per-frame soft alignments); small GRU teacher; "
                f"{cfg['rnn']['steps']} teacher steps, {cfg['student']['steps']} steps of batch {cfg['student']['batch_size']} "
                "for each DNN; accuracy instead of word error rate",
    )
