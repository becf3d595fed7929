"""Sub-commands of ``atlas``: one module each, found by ``atlas.cli``."""
