"""``atlas reproduce KEY``: run a paper's reproduction on the shared harness and show reported vs
reproduced with the verdict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atlas.catalogue import load_catalogue
from atlas.errors import AtlasError
from atlas.results import PROFILE_NAMES, Record

NAME = "reproduce"
HELP = "run a paper's reproduction and compare it with the paper's reported claims"
DESCRIPTION = """Run KEY's reference implementation on the shared harness (or reuse its record when the
configuration and code are unchanged), judge each reported claim by its stated tolerance and print
reported vs reproduced. Exit status: 0 when every run finished (whatever the verdict), 1 when
--strict and a claim was not reproduced, 2+ on errors."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("keys", nargs="*", metavar="KEY", help="paper keys (see `atlas list`)")
    p.add_argument("--all", action="store_true", help="every paper that has a reproduction")
    p.add_argument("--category", help="every reproduced paper of a category (e.g. distillation)")
    p.add_argument(
        "--profile",
        default="quick",
        choices=PROFILE_NAMES,
        help="smoke (seconds), quick (default: minutes on 2 CPU cores), paper (the paper's setting; GPU)",
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="run this one seed")
    seeds.add_argument("--seeds", type=int, metavar="N", help="run seeds 0..N-1 and report mean and std")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    p.add_argument(
        "--dataset", help="run on another harness data set (digits, fashion-mnist, mnist, cifar10, ...)"
    )
    p.add_argument("--data-dir", type=Path, help="where data sets live (default $ATLAS_DATA_DIR)")
    p.add_argument("--download", action="store_true", help="download a missing data set (checksummed)")
    p.add_argument("--force", action="store_true", help="rerun even if an up-to-date record exists")
    p.add_argument(
        "--results-dir", type=Path, help="where records are written (default: results/ or $ATLAS_RESULTS_DIR)"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when any claim is not reproduced")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _keys(args: argparse.Namespace) -> list[str]:
    from atlas.harness import registry

    catalogue = load_catalogue()
    available = registry.discover()
    if args.all:
        return list(available)
    if args.category:
        keys = [p.key for p in catalogue.filter(category=args.category) if p.key in available]
        if not keys:
            raise AtlasError(f"no reproduced paper in category '{args.category}'")
        return keys
    if not args.keys:
        raise AtlasError("name a paper key, --category C or --all", hint="e.g. atlas reproduce hinton2015")
    return args.keys


def run(args: argparse.Namespace) -> int:
    # torch is imported here, not at start-up, so that `atlas list` and `--help` stay fast.
    from atlas.harness.runner import Request, reproduce
    from atlas.report import outcome_rows, render_rows
    from atlas.verdict import NOT_REPRODUCED

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise AtlasError(
                f"--device {args.device}: no CUDA device is available here", hint="use --device cpu"
            )
    keys = _keys(args)
    seeds = [args.seed] if args.seed is not None else (list(range(args.seeds)) if args.seeds else None)
    records: list[Record] = []
    failed = 0
    for n, key in enumerate(keys, 1):

        def on_seed(i: int, seed: int, key: str = key, n: int = n) -> None:
            if not args.quiet:
                print(f"[{n}/{len(keys)}] {key} ({args.profile}) seed {seed}", file=sys.stderr, flush=True)

        req = Request(
            key,
            args.profile,
            seeds,
            args.device,
            args.dataset,
            args.data_dir,
            args.download,
            args.force,
            args.results_dir,
            progress=not args.quiet,
        )
        try:
            record, reused = reproduce(req, on_seed=on_seed)
        except AtlasError as exc:
            if len(keys) == 1:
                raise
            print(f"error: {key}: {exc}", file=sys.stderr)
            failed += 1
            continue
        records.append(record)
        note = (
            "reused (unchanged config and code; --force reruns)"
            if reused
            else f"{record.provenance['wall_time_s']:.1f} s"
        )
        print(f"\n{key} ({record.profile}, seeds {record.seeds}): {record.verdict}  [{note}]")
        print(f"record: {record.path}")
    if records:
        print()
        print(render_rows(outcome_rows(records, load_catalogue()), "table"))
    if failed:
        return 2
    if args.strict and any(o.verdict == NOT_REPRODUCED for r in records for o in r.outcomes):
        return 1
    return 0
