"""Typed data configuration: the one place where data defaults live.

Hydra composes ``cfg.data`` on top of :class:`DataConfig` (``nemo_emmett/config_store.py``; unknown keys
are errors); :func:`parse_data_config` turns it, or a plain dict, into the dataclass."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

from num2words import num2words
from omegaconf import DictConfig, OmegaConf

from nemo_emmett.data.batch_groups import BATCH_BY
from nemo_emmett.data.transforms import parse_transforms

log = logging.getLogger(__name__)


@dataclass
class BucketConfig:
    """2D buckets of one modality. Batch sizes come from, in order of precedence: ``bucket_file``,
    ``batch_sizes``, ``max_padded_size``."""

    bins: list[Any] | None = None
    """Explicit [[max_input, max_output], ...] (ints or floats; held as floats); estimated from the
    training data when null. Typed ``list[Any]`` because OmegaConf refuses an int in a nested float
    list (``[[10, 12]]``); :meth:`__post_init__` checks each pair."""
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
    outliers: str = "nearest"
    """An example its input bin has no bucket for (output too long for that bin): 'nearest' places it
    in the smallest bucket that holds it; 'drop' (a strict grid) drops it. Examples no bucket holds
    are dropped under both, counted (``data/dropped_no_bucket``) and logged with the largest bucket."""

    def __post_init__(self) -> None:
        if self.bins is not None:
            self.bins = [bin_pair(b, i) for i, b in enumerate(self.bins)]


def bin_pair(value: Any, index: int) -> list[float]:
    """``[max_input, max_output]`` as floats; the error names the entry and what was expected."""
    pair = list(value) if isinstance(value, list | tuple) else None
    if pair is None or len(pair) != 2 or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in pair):
        raise ValueError(f"bins[{index}]: expected [max_input, max_output] (two numbers), got {value!r}")
    return [float(x) for x in pair]


FUSION_MODES = ("none", "zip")
"""``data.fusion`` values (:attr:`DataConfig.fusion`)."""

MIN_VAL_NUMBER = 10
"""Single digits are never held out of the demo corpus: a model cannot translate a digit word it has never seen."""


@dataclass
class DemoCorpusConfig:
    """The corpus; also the data config's ``demo`` block (``data.config.DemoConfig`` adds ``enabled``),
    so these defaults are the demo every default config trains on."""

    root: str | None = None
    """Where the corpus goes; None: ``${NEMO_EMMETT_CACHE:-~/.cache/nemo_emmett}/demo/<key>``."""
    seed: int = 1234
    """Drives the split, the sampled numbers and the voices."""
    num_train: int = 800
    """Distinct training numbers spoken (each clip is shared by the ASR and every ST source)."""
    num_val: int = 100
    """Held-out numbers, the same for every validation source, never seen in training."""
    num_mt_train: int = 900
    """Training pairs per MT direction (drawn from all non-validation numbers)."""
    max_number: int = 999
    """Numbers come from ``0..max_number`` (999: short, regular targets a tiny model learns in minutes;
    9999 adds the four-digit numbers)."""
    speech_lang: str = "en"
    """Language of the speech and of the ASR targets; must be in ``languages``."""
    languages: tuple[str, ...] = ("en", "de", "fr", "es")
    """Written languages (num2words codes): ST goes speech_lang -> each other; MT both ways."""
    mt_all_pairs: bool = False
    """Also MT between every two non-speech languages (de-fr, fr-de, ...)."""
    voices: tuple[str, ...] = ("en-us", "en-gb", "en-gb-x-rp")
    """espeak-ng voices, one drawn per number."""
    speed_wpm: tuple[int, int] = (140, 190)
    """Inclusive range of speaking rates (words per minute)."""
    pitch: tuple[int, int] = (35, 65)
    """Inclusive range of espeak-ng pitch (0-99)."""
    sampling_rate: int = 16000
    shard_size: int = 250
    """Examples per Shar shard."""
    num_workers: int = 2
    """Synthesis processes (does not change the content)."""

    def __post_init__(self) -> None:
        # OmegaConf and YAML hand over lists; tuples keep the cache key stable and the config hashable.
        self.languages = tuple(self.languages)
        self.voices = tuple(self.voices)
        self.speed_wpm = tuple(self.speed_wpm)
        self.pitch = tuple(self.pitch)
        if self.speech_lang not in self.languages:
            raise ValueError(f"speech_lang {self.speech_lang!r} must be one of languages {self.languages}")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"languages has duplicates: {self.languages}")
        for lang in self.languages:
            try:
                num2words(0, lang=lang)
            except NotImplementedError as e:
                raise ValueError(f"num2words does not support language {lang!r}") from e
        if not self.voices:
            raise ValueError("voices must name at least one espeak-ng voice")
        for name, (lo, hi) in (("speed_wpm", self.speed_wpm), ("pitch", self.pitch)):
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if self.max_number < MIN_VAL_NUMBER:
            raise ValueError(f"max_number must be >= {MIN_VAL_NUMBER}, got {self.max_number}")
        if min(self.num_train, self.num_val, self.num_mt_train) < 1:
            raise ValueError("num_train, num_val and num_mt_train must each be >= 1")
        if self.num_val > self.max_number + 1 - MIN_VAL_NUMBER:
            raise ValueError(
                f"num_val={self.num_val} exceeds the {self.max_number + 1 - MIN_VAL_NUMBER} "
                f"numbers in {MIN_VAL_NUMBER}..{self.max_number}"
            )
        free = self.max_number + 1 - self.num_val
        if max(self.num_train, self.num_mt_train) > free:
            raise ValueError(
                f"num_train={self.num_train} / num_mt_train={self.num_mt_train}: only {free} "
                f"numbers are left for training in 0..{self.max_number}"
            )

    def content_fields(self) -> dict[str, Any]:
        """Everything that determines the corpus content (not where it lives or how fast it builds, nor
        what a subclass such as the data config's ``DemoConfig`` adds)."""
        d = {f.name: getattr(self, f.name) for f in fields(DemoCorpusConfig)}
        del d["root"], d["num_workers"]
        return d


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
    transforms: list[dict[str, Any]] = field(default_factory=list)
    """Training transforms of every training source that gives none of its own (``transforms:`` in a source
    replaces these): filters (``filter_length``, ``filter_ratio``, ``filter_repetition``, ``filter_numerals``,
    ``filter_punctuation``; each rejected example counted as ``data/filtered/<reason>``) and
    ``subword_sampling``; each ``{name: ..., option: value}``, in order (``data/transforms.py``). Validation
    sources are never transformed."""
    tasks: list[str] | None = None
    """Train and validate on the sources of these tasks only (``[mt]``: a text-only run on a corpus that
    also has speech, as stage 1 of ``recipes/forgetting.py``); null: every source. The sources left out are
    logged; a filter that leaves no training source is an error."""
    allow_incomplete: bool = False
    """Read a source folder that lacks its completion marker (``<folder>.complete.json``, written last by
    ``emmett-prepare``) or whose shards disagree with it, with a warning, instead of stopping with an
    error: such a folder is usually a preparation that was killed half-way, and training on it would use
    part of the data without a word. Re-running ``emmett-prepare`` is the fix; this is the way around."""
    demo: DemoConfig = field(default_factory=DemoConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    input_cfg: Any = None
    """NeMo's dataset list instead of ``train_sources`` (``nemo/collections/common/data/lhotse/cutset.py``):
    entries of type ``lhotse_shar``, ``nemo``, ``nemo_tarred``, ``txt_pair`` and ``group`` (nested, with its
    own ``input_cfg``), each with a ``weight`` and ``tags`` (task, source_lang, target_lang, dataset), or the
    path of a YAML file holding that list. Start-up turns it into ``train_sources`` with NeMo's shares of the
    mix as weights (``data/input_cfg.py``), converting entries that are not our Shar into cached Shar folders,
    except NeMo's dict of shard files or URLs, which is streamed in place from a small cached listing
    (``data/prepare/nemo_inputs.py``, ``data/shard_list.py``). Null: ``train_sources``."""
    reweight_temperature: Any = None
    """NeMo's ``reweight_temperature``, for ``input_cfg`` only: each level's weights become w_i^T / sum w_j^T
    (a number for every nesting level, or a list of one per level, outermost first). T=1 keeps the
    weights, T=0 equalises them, T<1 favours the small ones: the *opposite* direction of ``size_temperature``."""
    size_temperature: float = 1.0
    """Weights of ``train_sources`` without an explicit weight, from their sizes: p_i ~ n_i^(1/T); a higher T
    flattens the mix (T=1 follows the sizes). Not NeMo's ``reweight_temperature`` (w^T, where lower flattens)."""
    temperature: float | None = None
    """Deprecated spelling of ``size_temperature`` (renamed so that it cannot be mistaken for NeMo's
    ``reweight_temperature``, which goes the other way); still read, with a warning."""
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
    log_batch_ids: str | None = None
    """Debug: append a JSON line per training batch the model receives, ``{"batch": n, "ids": [...]}`` (n counts
    from 1 over the whole run, resumes included), to this file: which examples each step trained on."""
    sampling_rate: int = 16000
    """Audio is resampled to this rate on loading; composed configs tie it to ``model.perception.sample_rate``."""
    fusion: str = "none"
    """How a training step's batch is made. ``none``: one homogeneous batch (audio: ST and ASR, or text:
    MT) from one multiplexed stream of all sources. ``zip`` (NeMo's ``sampler_fusion: zip``): the next
    audio batch *and* the next text batch, each from its own modality's multiplexer and 2D buckets
    (both resumable), fused into one step (``data/fusion.py``), so that ST, ASR and MT gradients meet
    in every step (MGCM then projects MT too). Needs audio and text training sources."""
    batch_by: str = "mixed"
    """Which examples share a training batch (``data/batch_groups.py``): ``mixed``, any of one modality;
    ``task``, one task (ST, ASR or MT); ``direction``, one direction; ``components``, directions that run
    exactly the same components of a modular model (MAMMOTH's one task per step: routing runs one pass
    instead of one sub-batch per direction; for a model whose directions share everything it is ``mixed``).
    Source shares are unchanged; batches of one group wait longer to fill (``max_wait`` bounds it).
    MGCM compares tasks inside a step: with ``task`` or finer, combine it with ``fusion: zip``."""

    def __post_init__(self) -> None:
        if self.temperature is not None:
            if self.size_temperature not in (1.0, self.temperature):
                raise ValueError(f"data.temperature={self.temperature} and data.size_temperature={self.size_temperature}"
                                 ": give only data.size_temperature (temperature is its deprecated spelling)")
            log.warning("data.temperature is deprecated: it is data.size_temperature (p_i ~ n_i^(1/T)), not NeMo's "
                        "reweight_temperature (w_i^T); write data.size_temperature=%s", self.temperature)
            self.size_temperature, self.temperature = float(self.temperature), None
        parse_transforms(self.transforms, "data.transforms")  # errors at composition, naming the entry
        if self.batch_by not in BATCH_BY:
            raise ValueError(f"data.batch_by: unknown value {self.batch_by!r}; expected one of {', '.join(BATCH_BY)}")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"data.fusion: unknown mode {self.fusion!r}; expected one of {', '.join(FUSION_MODES)}")


def parse_data_config(cfg: DictConfig | dict[str, Any] | DataConfig) -> DataConfig:
    """Validate a Hydra/dict data config against :class:`DataConfig`; errors name the bad key."""
    if isinstance(cfg, DataConfig):
        return cfg
    if isinstance(cfg, DictConfig):  # resolve ${...} against the full config the node belongs to
        cfg = OmegaConf.to_container(cfg, resolve=True)
    schema = OmegaConf.structured(DataConfig)
    merged = OmegaConf.merge(schema, OmegaConf.create(cfg))
    return OmegaConf.to_object(merged)
