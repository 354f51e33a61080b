"""Typed data configuration: the one place where data defaults live.

Hydra composes ``cfg.data`` on top of :class:`DataConfig` (``nemo_emmett/config_store.py``; unknown keys
are errors); :func:`parse_data_config` turns it, or a plain dict, into the dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_emmett.data.prepare.demo import DemoCorpusConfig


@dataclass
class BucketConfig:
    """2D buckets of one modality. Batch sizes come from, in order of precedence: ``bucket_file``,
    ``batch_sizes``, ``max_padded_size``."""

    bins: list[list[float]] | None = None
    """Explicit [[max_input, max_output], ...]; estimated from the training data when null."""
    num_input_bins: int = 6
    num_output_bins: int = 3
    method: str = "min_padding"
    """Bin edges: 'min_padding' (least total padding, exact) or 'equal_count'."""
    max_input: float | None = None
    """Examples longer than this (input units) are outliers for bin estimation."""
    max_output: float | None = None
    batch_sizes: list[int] | None = None
    max_padded_size: float | None = 2000.0
    """Budget per batch in padded elements: batch_size * (max_input + max_output)."""
    bucket_file: str | None = None
    """JSON with bins and batch sizes, from examples/estimate_bins.py or the OOMptimizer."""
    outliers: str = "drop"
    """'drop' (counted and logged) or 'nearest' (the smallest larger bucket that holds it)."""


@dataclass
class DemoConfig(DemoCorpusConfig):
    """The embedded demo corpus (:class:`DemoCorpusConfig`: its sizes, seed, languages, voices), used when
    ``train_sources`` is empty."""

    enabled: bool = True
    """Build (once, cached) and use the demo corpus when no sources are given."""


@dataclass
class TokenizerConfig:
    model_path: str | None = None
    """A SentencePiece .model; when null, one is trained on the training text and cached."""
    vocab_size: int = 512
    sample_examples: int = 20000
    """How many training examples (spread over sources) to train it on."""


@dataclass
class DataConfig:
    train_sources: list[dict[str, Any]] = field(default_factory=list)
    """Each: name, path, task, source_lang, target_lang, dataset, weight | num_examples; optionally
    ``introduce_at_step: N`` (joins the mix at about step N: a curriculum). Empty: the demo corpus."""
    validation_sources: list[dict[str, Any]] = field(default_factory=list)
    demo: DemoConfig = field(default_factory=DemoConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    temperature: float = 1.0
    """Source weights p_i ~ n_i^(1/T) for sources without an explicit weight; a higher T flattens the mix."""
    seed: int = 1234
    """The data stream's seed (the model's initialisation uses the top-level ``seed``)."""
    jitter: float = 0.5
    """0: strict smooth round robin over sources; < 1: random order with bounded drift from the weights."""
    shuffle_buffer: int = 1000
    token_equivalent_duration: float = 0.08
    """Seconds of speech counted as one input token for bucketing (8x subsampled 10 ms frames, the
    perception's ``subsampling_factor``)."""
    audio_buckets: BucketConfig = field(default_factory=BucketConfig)
    text_buckets: BucketConfig = field(default_factory=lambda: BucketConfig(num_input_bins=4))
    """Text inputs (tokens) span a narrower range than speech inputs (frames): fewer input bins."""
    estimation_examples: int = 2000
    """Examples read per source to estimate bins."""
    max_wait: int = 20000
    """A bucket whose oldest example waited this many draws is emitted early (bounds resume replay)."""
    num_workers: int = 2
    val_batch_size: int = 32
    sampling_rate: int = 16000
    """Audio is resampled to this rate on loading; composed configs tie it to ``model.perception.sample_rate``."""


def parse_data_config(cfg: DictConfig | dict[str, Any] | DataConfig) -> DataConfig:
    """Validate a Hydra/dict data config against :class:`DataConfig`; errors name the bad key."""
    if isinstance(cfg, DataConfig):
        return cfg
    if isinstance(cfg, DictConfig):  # resolve ${...} against the full config the node belongs to
        cfg = OmegaConf.to_container(cfg, resolve=True)
    schema = OmegaConf.structured(DataConfig)
    merged = OmegaConf.merge(schema, OmegaConf.create(cfg))
    return OmegaConf.to_object(merged)
