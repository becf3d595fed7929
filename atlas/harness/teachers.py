"""Teachers shared by several distillation papers: named, configured and cached by the harness, so
that a paper imports another paper only for its method.

:data:`MLP_TEACHER` is the deep fully-connected teacher of Hinton et al. (784-1200-1200-10 with
dropout): every paper that distils from it spreads ``MLP_TEACHER[profile]`` into its own profile, so
the teacher is trained once per profile and data set (from seed 0, whatever the student's seed) and
then read from the cache by every paper and seed.
"""

from __future__ import annotations

from typing import Any

from torch import nn

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


def mlp_teacher(run: Run) -> nn.Module:
    """The 784-1200-1200-10 teacher with dropout (the run's ``teacher`` section), trained on the full
    training set once per profile and data set and reused from the cache."""
    section = dict(run.config["teacher"])
    dropout = section.pop("dropout", 0.0)
    cfg = TrainConfig.from_dict(section)
    data = run.dataset()
    return run.cached_model(
        "hinton-teacher", {"train": vars(cfg), "dropout": dropout},
        build=lambda: run.model("hinton-teacher", dropout=dropout),
        fit=lambda m: run.train(m, data.train, cfg, desc="teacher"),
        per_seed=False,
    )
