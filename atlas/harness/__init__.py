"""The shared harness: data, models, training, measurement, and the registry of reproductions.

A reproduction imports what it needs from here::

    from atlas.harness import Run, measure, reproduction
"""

from atlas.harness import measure
from atlas.harness.registry import reproduction
from atlas.harness.run import Run

__all__ = ["Run", "measure", "reproduction"]
