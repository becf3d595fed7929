"""Compression Atlas: a reproducibility atlas for the deep-network compression literature."""

from pathlib import Path

__version__ = "0.1.0"

#: The repository root (where papers.yaml, reproductions/ and results/ live).
ROOT = Path(__file__).resolve().parent.parent
