"""The shared harness: data, models, training, measurement, typed profiles, and the registry of
reproductions. A reproduction imports what it needs from here::

    from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction
"""

from atlas.harness import controls, measure
from atlas.harness.profiles import Profile, Section, Tuned
from atlas.harness.registry import reproduction
from atlas.harness.run import Run
from atlas.harness.training import TrainConfig

__all__ = ["controls", "Profile", "Run", "Section", "TrainConfig", "Tuned", "measure", "reproduction"]
