"""Compression Atlas: a reproducibility atlas for the deep-network compression literature."""

from pathlib import Path

__version__ = "0.1.0"

_PACKAGE = Path(__file__).resolve().parent


def _checkout() -> Path | None:
    root = _PACKAGE.parent
    return root if (root / "papers.yaml").is_file() and (root / "reproductions").is_dir() else None


#: The checkout this atlas runs from (papers.yaml, reproductions/ and results/ beside atlas/; an
#: editable install is one), or None for an installed package, whose files are never written.
CHECKOUT: Path | None = _checkout()

#: Where papers.yaml and the published results/ are read from: the checkout, else the copies an
#: installed package carries in ``atlas/_data`` (pyproject.toml maps them there when the wheel is
#: built). The reproductions are the package ``atlas_reproductions``: see
#: :func:`atlas.manifest.reproductions_dir`.
ROOT: Path = CHECKOUT or _PACKAGE / "_data"
