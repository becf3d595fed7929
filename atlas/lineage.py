"""The literature's lineage as the code states it: which reproductions a reproduction imports.

Torch-free on purpose (it reads source files with :mod:`ast`), so the site and the registry share it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "atlas_reproductions"


def imported_reproductions(path: Path) -> list[str]:
    """Names of ``reproductions.X`` modules that ``path`` imports, in order of appearance."""
    if not path.exists():
        return []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                names = [a.name for a in node.names]
            elif node.module.startswith(PACKAGE + "."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith(PACKAGE + ".")]
        for name in names:
            if name not in found and not name.startswith("_"):
                found.append(name)
    return found
