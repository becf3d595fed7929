"""The registry of reproductions: every module in ``reproductions/`` that decorates a function with
:func:`reproduction` is found by itself (as timm registers its models), so adding a paper touches only
its own file and its entry in papers.yaml."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from atlas import manifest
from atlas.errors import ReproductionError
from atlas.harness.profiles import Profile, validate_profile
from atlas.lineage import PACKAGE, imported_reproductions
from atlas.results import PROFILE_NAMES

if TYPE_CHECKING:
    from atlas.harness.run import Run



@dataclass
class Reproduction:
    key: str
    fn: Callable[[Run], None]
    profiles: dict[str, dict[str, Any]]  # validated, every default filled in
    config: type[Profile]
    module_name: str
    path: Path
    doc: str = ""
    _lineage: list[str] | None = field(default=None, repr=False)

    @property
    def builds_on(self) -> list[str]:
        """Keys of the reproductions this file imports directly (the paper's lineage)."""
        if self._lineage is None:
            self._lineage = imported_reproductions(self.path)
        return self._lineage

    def lineage(self) -> list[str]:
        """Every reproduction this one builds on, transitively, nearest first."""
        return [p.stem for p in lineage_files(self.path)[1:]]

    def code_files(self) -> list[Path]:
        """This file and the files of every reproduction it builds on."""
        return lineage_files(self.path)


HARNESS_DIR = Path(__file__).resolve().parent


def lineage_files(path: Path) -> list[Path]:
    """``path`` and every reproduction file it imports, transitively."""
    files, stack = [], [path]
    while stack:
        current = stack.pop(0)
        if current in files or not current.exists():
            continue
        files.append(current)
        stack.extend(current.parent / f"{k}.py" for k in imported_reproductions(current))
    return files


def files_hash(paths: list[Path]) -> str:
    """SHA-256 over the harness's source and ``paths`` (names and contents)."""
    digest = hashlib.sha256()
    for p in [*paths, *sorted(HARNESS_DIR.glob("*.py"))]:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    return digest.hexdigest()


def code_hash_of(path: Path) -> str:
    """The hash of the code a reproduction file runs: it, the files it builds on, the harness."""
    return files_hash(lineage_files(path))


_REGISTRY: dict[str, Reproduction] = {}
_BROKEN: dict[str, str] = {}  # module name -> why it failed to import
_DISCOVERED = False


def reproduction(key: str, *, profiles: dict[str, dict[str, Any]],
                 config: type[Profile]) -> Callable[[Callable[[Run], None]], Callable[[Run], None]]:
    """Register ``fn`` as the reproduction of paper ``key``, in the file ``reproductions/<key>.py``.

    ``config`` is the paper's :class:`~atlas.harness.profiles.Profile` (every setting and its type);
    ``profiles`` are its ``smoke``, ``quick`` and ``paper`` profiles, each validated against it here,
    so that an unknown or missing key is refused at import with paper, profile and key."""
    if set(profiles) != set(PROFILE_NAMES):
        raise ReproductionError(
            f"reproduction '{key}' must declare the profiles {', '.join(PROFILE_NAMES)}; got {sorted(profiles)}"
        )
    if not (isinstance(config, type) and issubclass(config, Profile)):
        raise ReproductionError(f"reproduction '{key}': config= must be a subclass of atlas.harness.Profile")
    validated = {name: validate_profile(key, name, config, dict(values)) for name, values in profiles.items()}

    def wrap(fn: Callable[[Run], None]) -> Callable[[Run], None]:
        module = importlib.import_module(fn.__module__)
        path = Path(module.__file__ or "")
        if path.stem != key:
            raise ReproductionError(f"{path.name} registers the key '{key}': a reproduction's key is its file's "
                                    f"name (rename the file to {key}.py or the key to '{path.stem}')")
        if key in _REGISTRY and _REGISTRY[key].path != path:
            raise ReproductionError(f"two reproductions claim the key '{key}': {_REGISTRY[key].path} and {path}")
        _REGISTRY[key] = Reproduction(key, fn, validated, config, fn.__module__, path,
                                      (module.__doc__ or "").strip())
        return fn

    return wrap


def discover() -> dict[str, Reproduction]:
    """Import every module of the ``reproductions`` package once and return the registry."""
    global _DISCOVERED
    if not _DISCOVERED:
        package: ModuleType = importlib.import_module(PACKAGE)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):
                continue
            try:
                importlib.import_module(f"{PACKAGE}.{info.name}")
            except Exception as exc:  # one broken file must not stop every other paper
                _BROKEN[info.name] = f"{type(exc).__name__}: {exc}"
        _DISCOVERED = True
    return dict(sorted(_REGISTRY.items()))


def get(key: str) -> Reproduction:
    registry = discover()
    if key not in registry and key in _BROKEN:
        raise ReproductionError(f"reproductions/{key}.py failed to import: {_BROKEN[key]}",
                                hint=f"fix the file; run `python -c 'import {PACKAGE}.{key}'` for the traceback")
    if key not in registry:
        close = difflib.get_close_matches(key, list(registry), n=3, cutoff=0.6)
        hint = f"did you mean: {', '.join(close)}?" if close else f"reproduced so far: {', '.join(registry)}"
        raise ReproductionError(f"paper '{key}' has no reproduction yet (no reproductions/{key}.py)", hint=hint)
    return registry[key]


def write_manifest() -> manifest.Manifest:
    """Discover every reproduction and store the registry's view for torch-free readers."""
    entries = {
        key: manifest.Entry(key=key, file=r.path.name, doc=r.doc, profiles=r.profiles,
                            builds_on=[k for k in r.builds_on if k != key])
        for key, r in discover().items()
    }
    return manifest.write(entries, dict(_BROKEN))
