"""MGCM, modular gradient conflict mitigation (arXiv 2409.15911), in reading order:

- ``config.py``: ``model.mgcm`` (:class:`MGCMConfig`) and the trainer settings it takes over;
- ``projection.py``: the arithmetic on hand-made vectors (:func:`pair_stats`, the update
  :func:`subtract_projection_`, :func:`project_auxiliary`, :func:`combine`);
- ``grouping.py``: which parameter tensors form a module (:func:`group_parameters`);
- ``backward.py``: the projection inside the backward pass (hooks, no per-task gradient copies);
- ``sync.py``: the projection of synchronised per-task gradients (MAMMOTH's component sync);
- ``stats.py``: conflict statistics over a logging window;
- ``model.py``: what the step needs of a model (protocols; ``models/`` implements them);
- ``step.py``: :class:`MGCMStep`, the manual-optimization step that wires them together;
- ``conflict_plot.py``: the conflict plot of the logged windows (a Lightning callback; not imported here).

Importing the package loads torch, not Lightning.
"""

from nemo_emmett.mgcm.config import MGCMConfig, prepare_trainer_config
from nemo_emmett.mgcm.grouping import DEFAULT_MODULE_TYPES, GRANULARITIES, group_parameters, module_type
from nemo_emmett.mgcm.projection import (
    PairStats,
    combine,
    pair_stats,
    project_auxiliary,
    subtract_projection_,
)
from nemo_emmett.mgcm.stats import STAT_FIELDS, summarize
from nemo_emmett.mgcm.step import MGCMStep

__all__ = [
    "DEFAULT_MODULE_TYPES",
    "GRANULARITIES",
    "STAT_FIELDS",
    "MGCMConfig",
    "MGCMStep",
    "PairStats",
    "combine",
    "group_parameters",
    "module_type",
    "pair_stats",
    "prepare_trainer_config",
    "project_auxiliary",
    "subtract_projection_",
    "summarize",
]
