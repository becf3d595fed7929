"""Reference accuracies (``atlas calibrate``): a harness model trained long on a data set, the bar a
run's baseline must come within :data:`~atlas.reference.CONVERGENCE_MARGIN_PP` of for its
accuracy checks to be able to fail."""

from __future__ import annotations

import datetime as dt
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from atlas import __version__, results
from atlas.harness import data as data_mod
from atlas.harness import models, training
from atlas.harness.training import TrainConfig
from atlas.provenance import device_description, git_commit
from atlas.reference import REFERENCE_RECIPE, ReferenceRecord, find, load_references, save_reference


def calibrate(model: str, spec: dict[str, Any], dataset: str, train_size: int | None, test_size: int | None,
              *, seeds: list[int], data_dir: Path | None = None, device: str = "cpu",
              reference_root: Path | None = None,
              on_seed: Callable[[int], None] | None = None) -> tuple[ReferenceRecord, Path]:
    """Train ``model`` with :data:`REFERENCE_RECIPE` on the first ``train_size`` training examples
    of ``dataset`` once per seed, test on the first ``test_size``, and save the reference record."""
    full = data_mod.load_dataset(dataset, data_dir=data_dir)
    data = full.limited(train_size, test_size)
    cfg = TrainConfig.from_dict(REFERENCE_RECIPE)
    accs = []
    started = time.perf_counter()
    for seed in seeds:
        if on_seed:
            on_seed(seed)
        gen = training.seed_everything(seed)
        net = models.build(model, data.input_shape, data.num_classes, **spec).to(device)
        training.train(net, data.train, cfg, generator=gen, device=device, desc=f"reference {model}")
        accs.append(training.accuracy(net, data.test, device=device))
    ref = ReferenceRecord(
        model=model, spec=spec, dataset=dataset, train_size=len(data.train), test_size=len(data.test),
        recipe=dict(REFERENCE_RECIPE), seeds=seeds, accuracy=results.Metric(values=accs),
        provenance={**git_commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "torch": torch.__version__, "python": platform.python_version(), "atlas": __version__,
                    "device": device_description(device),
                    "wall_time_s": round(time.perf_counter() - started, 2)},
    )
    return ref, save_reference(ref, reference_root)


def missing_baselines(records: list[results.Record], reference_root: Path | None = None) -> list[results.Baseline]:
    """The baselines of ``records`` that no reference covers yet (each once)."""
    refs = load_references(reference_root)
    out: list[results.Baseline] = []
    for record in records:
        for outcome in record.outcomes:
            base = outcome.baseline
            if base is not None and find(base, refs) is None and base not in out:
                out.append(base)
    return out
