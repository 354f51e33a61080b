"""OOMptimizer (EMMeTT): the largest batch size of every 2D bucket that fits a memory budget.

``config.py`` (settings, budget) -> ``probe.py`` (one real training step on a worst-case batch,
memory measured by ``memory.py``) -> ``search.py`` (exponential growth then bisection, bucket by
bucket; ``fused.py``: fused audio + text steps under ``data.fusion: zip``) -> ``result.py`` / ``cache.py`` -> ``measure.py`` (the run-level entry point) ->
``callback.py`` (Lightning: before ``fit``, hands the sizes to the data module)."""

from nemo_emmett.oomptimizer.callback import OOMptimizer
from nemo_emmett.oomptimizer.config import OOMptimizerConfig, parse_bytes, resolve_budget
from nemo_emmett.oomptimizer.measure import ProbeSetting, measure_for_trainer, plan_batch_sizes
from nemo_emmett.oomptimizer.result import BucketResult, OOMptimizerResult
from nemo_emmett.oomptimizer.search import BucketDoesNotFit, find_max_batch

__all__ = ["BucketDoesNotFit", "BucketResult", "OOMptimizer", "OOMptimizerConfig", "OOMptimizerResult",
           "ProbeSetting", "find_max_batch", "measure_for_trainer", "parse_bytes", "plan_batch_sizes",
           "resolve_budget"]
