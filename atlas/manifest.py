"""What the registry knows of every reproduction, without importing torch: the manifest.

The registry (:mod:`atlas.harness.registry`, which imports every reproduction) is the one source of
truth; :func:`write` stores what it found in ``reproductions/manifest.json`` (key, file, docstring,
validated profiles, the papers each builds on, and the SHA-256 of every file), and :func:`load` reads
it back for ``atlas list``, ``atlas show`` and the site. A manifest whose files no longer match the
``reproductions/`` folder (a paper added, edited or removed since) is rebuilt from the registry when
it is loaded, so it never answers for code that changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from atlas.fsio import atomic_write

#: The folder of the reproduction files (installed as the package ``atlas_reproductions``).
REPRODUCTIONS_DIR = Path(__file__).resolve().parent.parent / "reproductions"
FILE_NAME = "manifest.json"


def reproductions_dir() -> Path:
    """``reproductions/`` of a checkout, or the installed ``atlas_reproductions`` package."""
    if REPRODUCTIONS_DIR.is_dir():
        return REPRODUCTIONS_DIR
    import importlib.util

    spec = importlib.util.find_spec("atlas_reproductions")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("neither reproductions/ nor the package atlas_reproductions is installed")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass
class Entry:
    """One registered reproduction, as the registry saw it."""

    key: str
    file: str  # the file's name in reproductions/ (its key + ".py")
    doc: str
    profiles: dict[str, dict[str, Any]]
    builds_on: list[str]
    built_upon_by: list[str] = field(default_factory=list)

    @property
    def display_path(self) -> str:
        return f"reproductions/{self.file}"


@dataclass
class Manifest:
    entries: dict[str, Entry]
    broken: dict[str, str]  # file stem -> why it failed to import
    files: dict[str, str]  # file name -> SHA-256, for every .py of reproductions/

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)


def file_hashes(folder: Path | None = None) -> dict[str, str]:
    folder = folder or reproductions_dir()
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.py"))}


def write(entries: dict[str, Entry], broken: dict[str, str], folder: Path | None = None) -> Manifest:
    """Store the registry's view (``entries``, ``broken``) beside the files it describes."""
    folder = folder or reproductions_dir()
    for entry in entries.values():
        entry.built_upon_by = sorted(k for k, e in entries.items() if entry.key in e.builds_on)
    manifest = Manifest(dict(sorted(entries.items())), dict(sorted(broken.items())), file_hashes(folder))
    payload = {"entries": {k: asdict(e) for k, e in manifest.entries.items()},
               "broken": manifest.broken, "files": manifest.files}
    text = json.dumps(payload, indent=1, sort_keys=True) + "\n"
    path = folder / FILE_NAME
    try:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write(path, text)
    except OSError:  # an installed, read-only package: the manifest is used from memory
        pass
    return manifest


def _read(path: Path) -> Manifest | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        return Manifest({k: Entry(**e) for k, e in payload["entries"].items()}, payload["broken"],
                        payload["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load(*, refresh: bool = True) -> Manifest:
    """The manifest; rebuilt from the registry (importing the reproductions) when it is missing or
    does not match the files of ``reproductions/`` and ``refresh`` allows it."""
    folder = reproductions_dir()
    current = _read(folder / FILE_NAME)
    if current is not None and current.files == file_hashes(folder):
        return current
    if not refresh and current is not None:
        return current
    from atlas.harness import registry  # imports torch and every reproduction

    return registry.write_manifest()
