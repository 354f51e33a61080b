"""From a :class:`DataConfig` and the run's tokenizer to everything the loaders need: sources,
weights, buckets, curriculum.

Built once in the main process (it reads length statistics); the result is small and picklable,
so dataloader workers receive it as it is. It never writes data: the sources must exist (the demo
corpus is built, and a tokenizer trained, at start-up: ``nemo_emmett/startup.py``), and lengths are
counted with the tokenizer the model uses."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import nemo_emmett.data.examples as ex_
from nemo_emmett.data.bucketing import (
    BinEstimate,
    BucketGrid,
    batch_sizes_for_budget,
    estimate_bins_2d,
    load_bucket_file,
)
from nemo_emmett.data.config import BucketConfig, DataConfig
from nemo_emmett.data.lengths import LengthMeasure, TokenCounter, TokenEncoder
from nemo_emmett.data.sampler import ModalityBuckets
from nemo_emmett.data.shar import check_folder, count_examples, list_shards, read_shard
from nemo_emmett.data.sources import (
    SourceSpec,
    check_folder_direction,
    normalize_weights,
    temperature_weights,
)
from nemo_emmett.data.transforms import describe, parse_transforms

log = logging.getLogger(__name__)


@dataclass
class DataPlan:
    train: list[SourceSpec]
    weights: list[float]
    validation: list[SourceSpec]
    measure: LengthMeasure
    buckets: dict[str, ModalityBuckets]
    estimates: dict[str, BinEstimate] = field(default_factory=dict)
    lengths: dict[str, np.ndarray] = field(default_factory=dict)
    """(N, 2) (input, output) lengths per modality of the examples the bins were estimated from."""
    introduce_at_draw: list[int] = field(default_factory=list)
    """Per source, the per-slot draw count at which it joins the mix (:func:`introduce_at_draws`); empty: all at 0."""

    def summary(self) -> str:
        lines = ["Data mix (source, direction, examples, weight):"]
        for s, w in zip(self.train, self.weights):
            late = f"  from step {s.introduce_at_step}" if s.introduce_at_step else ""
            lines.append(f"  {s.name:<24} {s.direction:<14} {s.num_examples:>8} {w:8.3f}{late}")
            if s.transforms:
                lines.append(f"    transforms: {describe(s.transforms)}")
        for modality, mb in self.buckets.items():
            est = self.estimates.get(modality)
            note = f" (estimated from {est.num_examples} examples, {est.num_outliers} outliers)" if est else ""
            lines.append(f"{modality} buckets (max_input, max_output) -> batch size{note}:")
            lines.extend(f"  {i:>3}: ({a:7.1f}, {b:6.1f}) -> {bs}" for i, ((a, b), bs) in
                         enumerate(zip(mb.grid.bins, mb.batch_sizes)))
        return "\n".join(lines)


def resolve_sources(raw: list[dict[str, Any] | SourceSpec], what: str, *,
                    allow_incomplete: bool = False) -> list[SourceSpec]:
    """Parsed sources, each folder checked complete (its marker, ``data/marker.py``; with
    ``allow_incomplete``: a warning instead of the error) and holding the source's direction (its marker
    or ``<task>_<src>-<tgt>`` name, :func:`~nemo_emmett.data.sources.check_folder_direction`), and its
    ``num_examples`` counted when absent."""
    specs = []
    for i, d in enumerate(raw):
        if isinstance(d, SourceSpec):  # shallow: its transforms stay parsed
            d = {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
        try:
            spec = SourceSpec(**d)
        except TypeError as e:
            raise ValueError(f"data.{what}[{i}]: {e}; expected keys of SourceSpec "
                             "(name, path, task, source_lang, target_lang, dataset, weight, num_examples, "
                             "introduce_at_step, transforms)") from e
        if what == "validation_sources" and spec.transforms:
            raise ValueError(f"data.{what}[{i}] ({spec.name!r}): transforms are for training only (validation is "
                             "scored on every example as it is); remove its transforms")
        check_folder_direction(spec, check_folder(spec.path, allow_incomplete=allow_incomplete), f"data.{what}[{i}]")
        if spec.num_examples is None:
            spec = SourceSpec(**{**d, "num_examples": count_examples(spec.path, allow_incomplete=True)})
        specs.append(spec)
    return specs


def with_default_transforms(specs: list[SourceSpec], default: list[dict[str, Any]]) -> list[SourceSpec]:
    """Each source with its transforms: its own, else ``data.transforms`` (``default``)."""
    parsed = parse_transforms(default, "data.transforms") or ()
    return [s if s.transforms is not None else dataclasses.replace(s, transforms=parsed) for s in specs]


def source_weights(specs: list[SourceSpec], temperature: float) -> list[float]:
    given = [s.weight is not None for s in specs]
    if all(given):
        return normalize_weights([s.name for s in specs], [s.weight for s in specs])
    if any(given):
        raise ValueError("give a weight to every training source or to none (then sizes and temperature decide): "
                         f"sources without one: {[s.name for s in specs if s.weight is None]}")
    return temperature_weights([s.num_examples for s in specs], temperature)


def draws_per_batch(buckets: dict[str, ModalityBuckets], lengths: dict[str, np.ndarray],
                    modality_shares: dict[str, float]) -> float:
    """Expected multiplexer draws per training batch: ``1 / sum_b q_b / bs_b`` over every bucket ``b``
    of every modality, where ``q_b`` is the modality's share of the mix times the fraction of its
    measured ``lengths`` (N, 2) that land in ``b`` (uniform over its buckets when none were measured).
    Examples that fit no bucket count as draws without a batch."""
    rate = 0.0  # batches per draw
    for modality, mb in buckets.items():
        measured = lengths.get(modality, np.zeros((0, 2)))
        if len(measured):
            picks = Counter(mb.grid.select(float(a), float(b)) for a, b in measured)
            fractions = [picks[i] / len(measured) for i in range(len(mb.grid))]
        else:
            fractions = [1.0 / len(mb.grid)] * len(mb.grid)
        rate += modality_shares.get(modality, 0.0) * sum(q / bs for q, bs in zip(fractions, mb.batch_sizes))
    return 1.0 / rate if rate > 0 else 1.0


def introduce_at_draws(specs: list[SourceSpec], draws_per_batch: float, workers_per_rank: int) -> list[int]:
    """Each source's ``introduce_at_step`` as a draw count of one (rank, worker) slot's multiplexer.

    A training step consumes one batch per rank, taken from the rank's workers in turn, so by step
    ``s`` a slot has made about ``s * draws_per_batch / workers`` draws. Approximate (the batch size
    varies by bucket, workers prefetch, gradient accumulation takes several batches per step), but a
    draw count is what the stream state holds, so resuming and replaying activate at the same draw."""
    return [math.ceil(s.introduce_at_step * draws_per_batch / max(workers_per_rank, 1)) for s in specs]


def sample_examples(specs: list[SourceSpec], per_source: int) -> list[list[ex_.Example]]:
    """The first ``per_source`` examples of each source, metadata only (no audio is read)."""
    out = []
    for s in specs:
        stream = itertools.chain.from_iterable(read_shard(sh, with_audio=False, source=s.name)
                                               for sh in list_shards(s.path))
        out.append(list(itertools.islice(stream, per_source)))
    return out


def measure_lengths(sample: list[ex_.Example], measure: LengthMeasure) -> dict[str, np.ndarray]:
    """(N, 2) arrays of (input, output) lengths per modality."""
    out = {"audio": [], "text": []}
    for e in sample:
        out["audio" if ex_.is_audio(e) else "text"].append(measure(e))
    return {m: np.asarray(v, dtype=np.float64).reshape(-1, 2) for m, v in out.items()}


def example_labels(specs: list[SourceSpec], samples: list[list[ex_.Example]]) -> dict[str, list[str]]:
    """Per modality, ``source 'name' ('path') example 'id'`` for each sampled example, in the order of
    :func:`measure_lengths` over the flattened ``samples``: what an error about a length names."""
    out: dict[str, list[str]] = {"audio": [], "text": []}
    for spec, sample in zip(specs, samples, strict=True):
        for e in sample:
            out["audio" if ex_.is_audio(e) else "text"].append(
                f"source {spec.name!r} ({spec.path!r}) example {ex_.example_id(e)!r}")
    return out


def longest(lengths: np.ndarray, labels: list[str] | None, rows: np.ndarray, limit: int = 3) -> str:
    """The ``limit`` longest (input + output) of the ``rows`` (a boolean mask), with their lengths."""
    idx = np.flatnonzero(rows)
    idx = idx[np.argsort(-lengths[idx].sum(axis=1), kind="stable")][:limit]
    return "; ".join(f"{labels[i] if labels else f'example #{i}'} (input {lengths[i, 0]:.0f}, "
                     f"output {lengths[i, 1]:.0f})" for i in idx)


def resolve_buckets(modality: str, bc: BucketConfig, lengths: np.ndarray,
                    labels: list[str] | None = None) -> tuple[ModalityBuckets, BinEstimate | None]:
    """Bins and batch sizes of one modality from its config; ``lengths``: (N, 2) for estimation, and
    ``labels`` (N,) naming each example (:func:`example_labels`) in warnings and errors.

    Estimated bins under a padded budget (``max_padded_size``, no ``batch_sizes``) leave out, besides
    the ``max_input``/``max_output`` outliers, any example longer than the budget itself (a 5,000
    token line): no bucket could hold a batch of it. The warning names them; the sampler drops and
    counts them. Bins that still exceed the budget (given ones, or a pair of edges from two examples)
    raise an error naming the bins' origin, the longest examples in them and the fix."""
    bins, batch_sizes, est = bc.bins, bc.batch_sizes, None
    where = f"data.{modality}_buckets.bins"
    if bc.bucket_file is not None:
        spec = load_bucket_file(bc.bucket_file).get(modality)
        if spec is None:
            raise ValueError(f"bucket file {bc.bucket_file!r} has no {modality!r} entry")
        bins, batch_sizes = spec["bins"], spec.get("batch_sizes", batch_sizes)
        where = f"bucket file {bc.bucket_file!r}"
    budget = bc.max_padded_size if batch_sizes is None else None
    if bins is None:
        if len(lengths) == 0:
            raise ValueError(f"no {modality} training examples to estimate {modality} bins from")
        est = estimate_bins_2d(lengths, bc.num_input_bins, bc.num_output_bins, method=bc.method,
                               max_input=bc.max_input, max_output=bc.max_output, max_total=budget)
        bins = est.bins
        where = f"bins estimated from {est.num_examples} {modality} examples"
        if est.num_outliers:
            over = np.zeros(len(lengths), dtype=bool)
            over[list(est.outlier_rows)] = True
            log.warning("%s bin estimation left out %d of %d examples as outliers (over max_input=%s, "
                        "max_output=%s or, input + output, max_padded_size=%s); training drops and counts "
                        "those no bucket holds. Longest: %s", modality, est.num_outliers, est.num_examples,
                        bc.max_input, bc.max_output, budget, longest(lengths, labels, over))
    bins = [tuple(map(float, b)) for b in bins]
    if batch_sizes is None:
        if bc.max_padded_size is None:
            raise ValueError(f"data.{modality}_buckets: give batch_sizes, bucket_file or max_padded_size")
        try:
            batch_sizes = batch_sizes_for_budget(bins, bc.max_padded_size)
        except ValueError as e:
            raise ValueError(f"data.{modality}_buckets ({where}): {e}. "
                             f"{_examples_in(bins, bc.max_padded_size, lengths, labels)}To fix: set "
                             f"data.{modality}_buckets.max_input / max_output to leave such outliers out of the "
                             "bins (training drops and counts them), or raise max_padded_size") from e
    return ModalityBuckets(BucketGrid(bins, outliers=bc.outliers), list(batch_sizes)), est


def _examples_in(bins: list[tuple[float, float]], budget: float, lengths: np.ndarray, labels: list[str] | None) -> str:
    """``Longest examples in them: ...`` for the bins over ``budget``, from the measured ``lengths``."""
    if len(lengths) == 0:
        return ""
    grid = BucketGrid(bins)
    big = {k for k, (i, o) in enumerate(bins) if i + o > budget}
    rows = np.array([grid.select(i, o) in big for i, o in lengths], dtype=bool)
    return f"Longest examples in them: {longest(lengths, labels, rows)}. " if rows.any() else ""


def check_fusion(train: list[SourceSpec], fusion: str) -> None:
    """``data.fusion=zip`` fuses an audio and a text batch into every step: both modalities need training
    sources, and each a source from step 0 (its multiplexer draws from the first step on)."""
    for modality in ("audio", "text"):
        mine = [s for s in train if s.modality == modality]
        if not mine:
            have = ", ".join(f"{s.name!r} ({s.modality})" for s in train)
            raise ValueError(f"data.fusion={fusion!r} fuses an audio and a text batch into each step, but no training "
                             f"source is {modality} (the sources: {have}); add {modality} sources or set "
                             "data.fusion=none")
        if min(s.introduce_at_step for s in mine) > 0:
            steps = {s.name: s.introduce_at_step for s in mine}
            raise ValueError(f"data.fusion={fusion!r}: every {modality} source has introduce_at_step > 0 ({steps}); "
                             f"with fusion each modality needs a source from step 0")


def build_plan(cfg: DataConfig, text: TokenEncoder) -> DataPlan:
    """The plan of ``cfg``'s sources, with lengths counted by ``text`` (the run's tokenizer)."""
    if not cfg.train_sources:
        raise ValueError("data.train_sources is empty: give sources, or let start-up fill them in "
                         "(nemo_emmett.startup.resolve_sources: from data.input_cfg, or the demo corpus when "
                         "data.demo.enabled)")
    train = with_default_transforms(resolve_sources(cfg.train_sources, "train_sources",
                                                    allow_incomplete=cfg.allow_incomplete), cfg.transforms)
    validation = resolve_sources(cfg.validation_sources, "validation_sources", allow_incomplete=cfg.allow_incomplete)
    weights = source_weights(train, cfg.size_temperature)
    if min(s.introduce_at_step for s in train) > 0:
        steps = {s.name: s.introduce_at_step for s in train}
        raise ValueError(f"every training source has introduce_at_step > 0 ({steps}): at least one must start at step 0")
    measure = LengthMeasure(TokenCounter(text), cfg.token_equivalent_duration)
    samples = sample_examples(train, cfg.estimation_examples)
    buckets, estimates = {}, {}
    lengths = measure_lengths([e for sample in samples for e in sample], measure)
    labels = example_labels(train, samples)
    for modality, bc in (("audio", cfg.audio_buckets), ("text", cfg.text_buckets)):
        if not any(s.modality == modality for s in train):
            continue
        buckets[modality], est = resolve_buckets(modality, bc, lengths[modality], labels[modality])
        if est is not None:
            estimates[modality] = est
    if cfg.fusion == "zip":
        check_fusion(train, cfg.fusion)
    introduce = []
    if any(s.introduce_at_step for s in train):
        if cfg.fusion == "zip":  # each modality's multiplexer draws for one batch of its own per step
            per_draw = {m: draws_per_batch({m: buckets[m]}, lengths, {m: 1.0}) for m in buckets}
            introduce = [introduce_at_draws([s], per_draw[s.modality], cfg.num_workers)[0] for s in train]
        else:
            shares = {m: sum(w for s, w in zip(train, weights) if s.modality == m) for m in buckets}
            introduce = introduce_at_draws(train, draws_per_batch(buckets, lengths, shares), cfg.num_workers)
    return DataPlan(train, weights, validation, measure, buckets, estimates, lengths, introduce)


def with_batch_sizes(plan: DataPlan, modality: str, batch_sizes: list[int]) -> DataPlan:
    """``plan`` with new batch sizes for the buckets of ``modality`` (one per bucket, each >= 1)."""
    if modality not in plan.buckets:
        raise KeyError(f"the data plan has no {modality!r} buckets (it has {sorted(plan.buckets)})")
    mb = plan.buckets[modality]
    if len(batch_sizes) != len(mb.grid) or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"{modality}: expected {len(mb.grid)} batch sizes >= 1 (one per bucket), got {batch_sizes}")
    return dataclasses.replace(plan, buckets={**plan.buckets,
                                              modality: ModalityBuckets(mb.grid, [int(b) for b in batch_sizes])})
