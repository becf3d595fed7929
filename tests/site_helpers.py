"""Shared by the site's tests (tests/test_site.py, tests/test_site_*.py): build the site once per test
session (``mkdocs build --strict`` in a subprocess, into a temporary folder) against a results folder
that holds one known record, or against the published records, and serve a built site on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import atlas
from atlas.results import Metric, Outcome, Record, save

#: the measured number the fixture record carries, looked for on the built pages
HINTON_GAIN = 0.8333


@dataclass
class Built:
    site: Path
    results: Path
    wall_s: float
    cpu_s: float
    log: str


def write_hinton_record(results: Path) -> Path:
    """A published (quick-profile) record for hinton2015 with a reproduced verdict."""
    outcome = Outcome(
        claim="mnist-student",
        model="teacher 1200-1200 -> student 800-800 (MLP)",
        dataset="fashion-mnist",
        metrics={
            "distillation_gain_pp": Metric(values=[0.7333, 0.8333, 0.9333]),
            "param_compression": Metric(values=[2.185, 2.185, 2.185]),
            "accuracy": Metric(values=[87.9, 88.1, 88.3]),
        },
        differs="6 student epochs on Fashion-MNIST, not 3000 on MNIST (test fixture)",
    )
    record = Record(
        key="hinton2015", profile="quick", config={"dataset": "fashion-mnist"}, config_hash="c" * 64,
        code_hash="d" * 64, seeds=[0, 1, 2], outcomes=[outcome],
        provenance={
            "commit": "0123456789ab", "dirty": False, "date": "2026-11-25T12:00:00+00:00", "profile": "quick",
            "seeds": [0, 1, 2], "dataset": "fashion-mnist", "torch": "2.13.0+cpu", "python": "3.11.7",
            "device": "cpu", "wall_time_s": 42.0, "config_hash": "c" * 64, "code_hash": "d" * 64,
            "command": "atlas reproduce hinton2015",
        },
    )
    return save(record, results / "hinton2015" / "quick.json")


def build(out: Path, results: Path) -> Built:
    """``mkdocs build --strict`` of the repository's site into ``out``."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", DISABLE_MKDOCS_2_WARNING="true",
               ATLAS_RESULTS_DIR=str(results))
    env.pop("ATLAS_SITE_SMOKE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=atlas.ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"mkdocs build --strict failed ({proc.returncode}):\n{log[-6000:]}")
    return Built(out, results, wall, cpu, log)


_BUILT: dict[str, Built] = {}


def built_site(base: Path) -> Built:
    """The site built once per test session (``base``: the session's temporary folder)."""
    if "site" not in _BUILT:
        results = base / "site-results"
        write_hinton_record(results)
        _BUILT["site"] = build(base / "site-public", results)
    return _BUILT["site"]


def published_site(base: Path) -> Built:
    """The site built once per test session from the published records (``results/`` of the checkout),
    as readers get it."""
    if "published" not in _BUILT:
        _BUILT["published"] = build(base / "published-public", atlas.ROOT / "results")
    return _BUILT["published"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
