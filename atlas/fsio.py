"""Files the atlas writes: one atomic write (readers see the old file or the new one, never a part)
and the cache folder. Torch-free, so that every command can use it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def default_cache_dir() -> Path:
    """``$ATLAS_CACHE_DIR``, or ``~/.cache/compression-atlas``: data sets, trained models, locks."""
    return Path(os.environ.get("ATLAS_CACHE_DIR", Path.home() / ".cache" / "compression-atlas"))


def atomic_write(path: Path | str, data: str | bytes, *, check: Callable[[Path], None] | None = None) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file in the same
    folder, flushed to disk, then renamed over ``path`` (keeping an existing file's permissions).
    ``check(tmp)`` may inspect the file as written and raise to keep the old one. A failure leaves
    ``path`` as it was and no temporary file behind (a killed writer leaves ``.NAME.*.tmp``, which
    :func:`temporary_files` finds)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check(Path(tmp))
        if path.exists():
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_files(path: Path) -> list[Path]:
    """The temporary files that writers of ``path`` killed mid-write left beside it."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))
