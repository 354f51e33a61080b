"""The EMMeTT data path, in reading order (``docs/architecture.md`` follows one batch through it).

``examples.py`` (a lhotse Cut or a text example, tagged with task, languages, dataset) ->
``shar.py`` (Shar folders: read, write, count) -> ``sources.py`` (a named source and its weight) ->
``stream.py`` (one source, sharded over ranks and workers, shuffled, resumable) ->
``multiplexer.py`` (the stationary weighted mix of sources) -> ``lengths.py`` (an example's 2D
length) -> ``bucketing.py`` (2D bins and batch sizes) -> ``sampler.py`` (2D bucketing sampler;
``fusion.py``: one per modality, zipped into fused steps, with ``data.fusion: zip``) -> ``plan.py`` (everything the loaders need, from the config and the run's tokenizer) ->
``dataset.py`` (collation inside dataloader workers) -> ``datamodule.py`` (Lightning; the resumable
stream). Around them: ``config.py`` (typed defaults), ``input_cfg.py`` (NeMo's dataset list as weighted,
tagged sources), ``report.py`` and ``stats.py`` (what the stream did), ``bin_plot.py`` (the buckets drawn).
Offline preparation, which writes data, is ``data/prepare/``; nothing here imports it.
"""

from nemo_emmett.data.config import DataConfig, parse_data_config
from nemo_emmett.data.datamodule import EmmettDataModule
from nemo_emmett.data.plan import DataPlan, build_plan
from nemo_emmett.data.sources import SourceSpec

__all__ = ["DataConfig", "DataPlan", "EmmettDataModule", "SourceSpec", "build_plan", "parse_data_config"]
