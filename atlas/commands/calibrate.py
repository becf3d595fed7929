"""``atlas calibrate``: measure the reference accuracy of harness models, the bar that tells a
converged baseline from one whose budget was too short."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from atlas.errors import AtlasError

NAME = "calibrate"
HELP = "train harness models long to measure the reference accuracies that baselines are checked against"
DESCRIPTION = """Without --model: calibrate every baseline named by a record in the results folder that
has no reference yet. With --model and --dataset: that model (with --spec JSON, e.g. '{"dropout": 0.2}'),
on the first --train-size / --test-size examples. References are written to results/reference/
(or $ATLAS_REFERENCE_DIR); each holds per-seed accuracies, the recipe and provenance."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="a harness model (see atlas/harness/models.py)")
    p.add_argument("--spec", default="{}", help="the model's keyword arguments as JSON")
    p.add_argument("--dataset", help="a harness data set")
    p.add_argument("--train-size", type=int, help="the first N training examples (default: all)")
    p.add_argument("--test-size", type=int, help="the first N test examples (default: all)")
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 (default 2)")
    p.add_argument("--results-dir", type=Path, help="records whose baselines to calibrate")
    p.add_argument("--data-dir", type=Path, help="where data sets live (default $ATLAS_DATA_DIR)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dry-run", action="store_true", help="list what would be calibrated")


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise AtlasError(f"--seeds {args.seeds}: need at least one seed")
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as exc:
        raise AtlasError(f"--spec is not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise AtlasError("--spec must be a JSON object of keyword arguments")
    from atlas import results
    from atlas.harness import models
    from atlas.harness.calibrate import calibrate, missing_baselines

    if args.model:
        if not args.dataset:
            raise AtlasError("--model needs --dataset")
        if args.model not in models.MODELS:
            raise AtlasError(f"unknown harness model '{args.model}'", hint=f"known: {', '.join(models.MODELS)}")
        todo = [(args.model, spec, args.dataset, args.train_size, args.test_size)]
    else:
        problems: list[results.StaleRecord] = []
        records = results.load_all(args.results_dir, problems)
        for problem in problems:  # its baseline is not known: said, and the others go on
            print(f"warning: skipped an unreadable record: {problem}", file=sys.stderr)
        todo = [(b.model, b.spec, b.dataset, b.train_size, b.test_size) for b in missing_baselines(records)]
        if not todo:
            print("every baseline in the records has a reference")
            return 0
    seeds = list(range(args.seeds))
    for model, mspec, dataset, n_train, n_test in todo:
        label = f"{model} {mspec or ''} on {dataset} (train {n_train or 'all'}, test {n_test or 'all'})"
        if args.dry_run:
            print(f"would calibrate {label}")
            continue
        ref, path = calibrate(model, mspec, dataset, n_train, n_test, seeds=seeds, data_dir=args.data_dir,
                              device=args.device,
                              on_seed=lambda s, label=label: print(f"{label}: seed {s}", file=sys.stderr))
        print(f"{label}: {ref.accuracy.interval.text()} % -> {path}")
    return 0
