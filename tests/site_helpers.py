"""Shared by the site's tests (tests/test_site.py, tests/test_site_*.py): build the site once per test
session (``mkdocs build --strict`` in a subprocess, into a temporary folder) against a results folder
that holds one known record, or against the published records, serve a built site on 127.0.0.1, and
drive a headless Chromium over the DevTools protocol (:class:`DevTools`)."""

from __future__ import annotations

import fcntl
import functools
import http.server
import json
import os
import resource
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

#: The site's build dependencies (the [site] extra): module -> what it is.
SITE_EXTRA = {"mkdocs": "the [site] extra", "material": "mkdocs-material", "mkdocs_gen_files": "mkdocs-gen-files"}


def require_site_extra() -> None:
    """Skip the calling test module when the site cannot be built here (call it at module level)."""
    import pytest

    for module, what in SITE_EXTRA.items():
        pytest.importorskip(module, reason=f"the site needs {what}: pip install -e '.[site]'")


def hinton_site_data(tmp_path_factory: Any) -> Any:
    """The site's data (:class:`atlas.site.data.SiteData`): the catalogue with the fixture's record of
    hinton2015 (mnist-student: gain 0.7333, 0.8333, 0.9333) in a fresh results folder."""
    from atlas.site.data import collect

    results = tmp_path_factory.mktemp("hinton-results")
    write_hinton_record(results)
    return collect(results)


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


class DevTools:
    """A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: the
    browser reads commands on its fd 3 and answers on fd 4, NUL-terminated JSON), so no WebSocket client is
    needed. One tab: :meth:`open` a URL at a viewport size, :meth:`evaluate` JavaScript in it (a promise is
    awaited). ``wait_s`` only guards against a browser that stops answering; no result depends on it."""

    def __init__(self, chromium: str, profile: Path, wait_s: float = 120) -> None:
        self.wait_s = wait_s
        self._next = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._log = profile / "chromium.log"
        to_browser, self._to_browser = (_high_fd(fd) for fd in os.pipe())
        self._from_browser, from_browser = (_high_fd(fd) for fd in os.pipe())
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-dev-shm-usage", "--disk-cache-size=1",
                f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        # bash puts the pipe's ends on the fds Chromium reads (dash takes no fd above 9)
        with open(self._log, "w") as log:
            self._proc = subprocess.Popen(
                ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}', chromium, *args],
                pass_fds=(to_browser, from_browser), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        os.close(to_browser)
        os.close(from_browser)
        target = self.call("Target.createTarget", {"url": "about:blank"}, tab=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 tab=False)["sessionId"]
        self.call("Page.enable")

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], self.wait_s)
            chunk = os.read(self._from_browser, 1 << 16) if ready else b""
            if not chunk:
                raise AssertionError(f"chromium stopped answering:\n{self._log.read_text()[-2000:]}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, *, tab: bool = True) -> Any:
        """Send a command (to the tab, else to the browser) and return its result."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if tab:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _wait_event(self, method: str) -> None:
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method:
                    del self._events[: i + 1]
                    return
            self._events.append(self._message())

    def open(self, url: str, width: int = 1280, height: int = 900) -> None:
        """Load ``url`` in a ``width`` x ``height`` viewport and wait for its load event."""
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self._events.clear()
        self.call("Page.navigate", {"url": url})
        self._wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise's resolved value)."""
        reply = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                               "returnByValue": True})
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression[:200]}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", tab=False)
        except (AssertionError, OSError):
            self._proc.kill()
        self._proc.wait(timeout=60)
        os.close(self._to_browser)
        os.close(self._from_browser)


def _high_fd(fd: int) -> int:
    """``fd`` moved above 9, so that the shell's ``3<&N 4>&M`` cannot overwrite one end with the other."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high
