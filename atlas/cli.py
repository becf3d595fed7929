"""The ``atlas`` command. Each sub-command lives in ``atlas/commands/<name>.py`` and exposes
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; this module finds them."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from atlas import __version__, commands
from atlas.errors import AtlasError


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every sub-command, or with only the sub-command ``only`` (so that a command
    whose module imports little, such as ``reproduce``, checks its arguments without the others'
    imports: pandas and the like)."""
    parser = argparse.ArgumentParser(
        prog="atlas",
        description="Compression Atlas: look up a compression paper, reproduce it, cite and compare it.",
    )
    parser.add_argument("--version", action="version", version=f"atlas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if only is not None and info.name != only.replace("-", "_"):
            continue
        module = importlib.import_module(f"atlas.commands.{info.name}")
        if not hasattr(module, "run"):
            continue
        cmd = sub.add_parser(
            module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    modules = {m.name for m in pkgutil.iter_modules(commands.__path__)}
    named = bool(argv) and "_" not in argv[0] and argv[0].replace("-", "_") in modules
    parser = build_parser(argv[0] if named else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except AtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
