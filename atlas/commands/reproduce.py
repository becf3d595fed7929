"""``atlas reproduce KEY``: run a paper's reproduction on the shared harness and show reported vs
reproduced with the verdict."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from atlas import manifest
from atlas.catalogue import CATEGORIES, load_catalogue
from atlas.errors import AtlasError, ReproductionError
from atlas.results import PROFILE_NAMES, Record

NAME = "reproduce"
HELP = "run a paper's reproduction and compare it with the paper's reported claims"
DESCRIPTION = """Run KEY's reference implementation on the shared harness (or reuse its record when the
configuration and code are unchanged), judge each reported claim by its stated tolerance on the 95%
interval over seeds, and print reported vs reproduced. Runs with other seeds, another data set or a
smaller training set are written beside the published record, never over it. Exit status: 0 when
every run finished (whatever the verdict), 1 when --strict and a claim was not reproduced, 2+ on
errors."""


#: The harness's data sets: the keys of ``atlas.harness.data.DATASETS``, named here so that a typo is
#: refused before torch is imported (tests/test_reproduce_args.py keeps the two equal).
DATASETS = ("cifar10", "cifar100", "digits", "fashion-mnist", "mnist", "svhn")
SEED_MAX = 2**32 - 1  # numpy's seed range


def parse_seeds(text: str) -> list[int]:
    """``5`` (seeds 0-4), ``10-14`` (a range, inclusive) or ``0,3,7`` (a list). ``0`` is refused, not
    read as the profile's default nor as seed 0: the message points to ``--seed 0``."""
    text = text.strip()
    if text == "0":
        raise argparse.ArgumentTypeError("'0' is not a seed count (N >= 1); for seed 0 alone use --seed 0")
    seeds: list[int] = []
    if re.fullmatch(r"\d+", text) and int(text) >= 1:
        seeds = list(range(int(text)))
    elif (m := re.fullmatch(r"(\d+)-(\d+)", text)) and int(m[1]) <= int(m[2]):
        seeds = list(range(int(m[1]), int(m[2]) + 1))
    elif re.fullmatch(r"\d+(,\d+)+", text) and len(set(text.split(","))) == len(text.split(",")):
        seeds = [int(s) for s in text.split(",")]
    if not seeds or len(seeds) > 1000 or max(seeds) > SEED_MAX:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a seed count (N >= 1), a range (10-14) or a list of distinct seeds (0,3,7)"
            f" of at most 1000 seeds in 0..{SEED_MAX}"
        )
    return seeds


def parse_seed(text: str) -> int:
    """One seed: an integer in 0..2**32-1."""
    if not re.fullmatch(r"\d+", text.strip()) or int(text) > SEED_MAX:
        raise argparse.ArgumentTypeError(f"'{text}' is not a seed (an integer in 0..{SEED_MAX})")
    return int(text)


def parse_device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``: what the harness runs on (checked before torch is imported)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device the harness runs on (cpu, cuda or cuda:N)")
    return text


def _positive(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive number of examples")
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("keys", nargs="*", metavar="KEY", help="paper keys (see `atlas list`)")
    p.add_argument("--all", action="store_true", help="every paper that has a reproduction")
    p.add_argument("--category", choices=CATEGORIES, help="every reproduced paper of a category")
    p.add_argument(
        "--profile",
        default="quick",
        choices=PROFILE_NAMES,
        help="smoke (seconds), quick (default: about a minute on 2 CPU cores), paper (the paper's setting; GPU)",
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=parse_seed, help="run this one seed (no interval: checks stay inconclusive)")
    seeds.add_argument("--seeds", type=parse_seeds, metavar="N|A-B|A,B,..",
                       help="a count N >= 1 (seeds 0..N-1; 0 is refused: seed 0 alone is --seed 0), "
                       "a range (10-14) or a list (0,3,7)")
    p.add_argument("--device", default="cpu", type=parse_device, help="cpu (default), cuda or cuda:N")
    p.add_argument("--dataset", choices=DATASETS, help="run on another harness data set")
    p.add_argument("--train-size", type=_positive, metavar="N",
                   help="train on the first N training examples only (budgets are steps, so unchanged)")
    p.add_argument("--data-dir", type=Path, help="where data sets live (default $ATLAS_DATA_DIR)")
    p.add_argument("--download", action="store_true", help="download a missing data set (checksummed)")
    p.add_argument("--force", action="store_true", help="rerun even if an up-to-date record exists")
    p.add_argument(
        "--results-dir", type=Path, help="where records are written (default: results/ or $ATLAS_RESULTS_DIR)"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when any claim is not reproduced")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local (default: in this process, seed after seed) or ray (each paper and seed a "
                        "Ray task; needs the [cluster] extra)")
    p.add_argument("--address", help="with --executor ray: a running Ray cluster (e.g. ray://head:10001 or "
                                     "auto); without it Ray starts a local one")
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
    return args.keys


def check_keys(keys: list[str]) -> None:
    """Refuse a key the catalogue lacks (exit 3, with the closest keys) or that the registry has no
    reproduction of (exit 5), from the catalogue and the registry's torch-free manifest: a typo is
    reported at once rather than after torch and every reproduction have loaded."""
    catalogue = load_catalogue()
    found = manifest.load()
    for key in keys:
        catalogue.get(key)
        if key in found.broken:
            raise ReproductionError(f"reproductions/{key}.py failed to import: {found.broken[key]}",
                                    hint=f"fix the file; `python -c 'import atlas_reproductions.{key}'` "
                                         "shows the traceback")
        if key not in found:
            raise ReproductionError(
                f"paper '{key}' has no reproduction yet (no reproductions/{key}.py)",
                hint=f"reproduced so far: {', '.join(found.entries)}",
            )


def run(args: argparse.Namespace) -> int:
    if not (args.keys or args.all or args.category):
        raise AtlasError("name a paper key, --category C or --all", hint="e.g. atlas reproduce hinton2015")
    check_keys(args.keys)
    # torch is imported here, after the arguments are checked, so that `atlas list`, `--help` and a
    # mistyped argument stay fast.
    from atlas.harness.runner import Request, reproduce
    from atlas.reference import load_references
    from atlas.report import claim_verdict_lines, record_summary, reported_text, verdicts
    from atlas.verdict import NOT_REPRODUCED, PARTLY

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise AtlasError(
                f"--device {args.device}: no CUDA device is available here", hint="use --device cpu"
            )
    keys = _keys(args)
    catalogue = load_catalogue()
    seeds = [args.seed] if args.seed is not None else args.seeds
    records: list[Record] = []
    failed = 0

    def request(key: str) -> Request:
        return Request(key, args.profile, seeds, args.device, args.dataset, args.data_dir, args.download,
                       args.force, args.results_dir, progress=not args.quiet, train_size=args.train_size)

    def report(key: str, record: Record, note: str) -> None:
        records.append(record)
        judged = verdicts([record], catalogue, load_references())[key]
        print(f"\n{key}: {judged.verdict}  ({record_summary(record)}; {note})")
        for claim_id, cv in judged.claims.items():
            outcome = record.outcome(claim_id)
            if outcome is None:
                continue
            claim = catalogue.get(key).claim(claim_id)
            print(f"  [{claim_id}] reported: {reported_text(claim) or claim.metric} ({claim.model} / "
                  f"{claim.dataset}; {claim.source})")
            print("\n".join(claim_verdict_lines(outcome, cv)))
        print(f"record: {record.path}")

    if args.executor == "ray":
        failed = _run_on_ray(args, [request(key) for key in keys], report)
        keys = []
    for n, key in enumerate(keys, 1):

        def on_seed(i: int, seed: int, key: str = key, n: int = n) -> None:
            if not args.quiet:
                print(f"[{n}/{len(keys)}] {key} ({args.profile}) seed {seed}", file=sys.stderr, flush=True)

        try:
            record, reused = reproduce(request(key), catalogue=catalogue, on_seed=on_seed)
        except AtlasError as exc:
            if len(keys) == 1:
                raise
            print(f"error: {key}: {exc}", file=sys.stderr)
            failed += 1
            continue
        report(key, record, "reused: unchanged config and code; --force reruns" if reused else "ran now")
    if failed:
        return 2
    if args.strict:
        all_judged = verdicts(records, catalogue, load_references())
        if any(cv.verdict in (NOT_REPRODUCED, PARTLY) for v in all_judged.values() for cv in v.claims.values()):
            return 1
    return 0


def _run_on_ray(args: argparse.Namespace, requests: list, report) -> int:
    """Run ``requests`` as Ray tasks (:mod:`atlas.cluster`), one progress bar over the finished tasks;
    report each paper's record and count the papers that failed."""
    from tqdm import tqdm

    from atlas import cluster
    from atlas.harness import registry
    from atlas.harness.runner import default_seeds

    total = sum(len(r.seeds) if r.seeds is not None else len(default_seeds(registry.get(r.key), r.profile))
                for r in requests)
    bar = tqdm(total=total, desc="tasks", unit="task", disable=args.quiet or not sys.stderr.isatty(),
               file=sys.stderr)

    def on_done(key: str, seed: int, error: str | None) -> None:
        bar.update(1)
        if error:
            print(f"error: {key} seed {seed}: {error}", file=sys.stderr, flush=True)

    try:
        outcomes = cluster.reproduce(requests, address=args.address, on_done=on_done)
    finally:
        bar.close()
    failed = 0
    for outcome in outcomes:
        if outcome.record is None:
            failed += 1
            print(f"error: {outcome.key}: no record ({'; '.join(outcome.errors or ['not run'])})", file=sys.stderr)
        else:
            report(outcome.key, outcome.record, "reused: unchanged config and code; --force reruns"
                   if outcome.reused else "ran now on Ray")
    return failed
