"""Named data sources: one Shar folder each, tagged with task, modality, languages and dataset."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nemo_emmett.data.examples import AUDIO_TASKS, TASKS, direction_key


@dataclass(frozen=True)
class SourceSpec:
    """One entry of ``data.train.sources`` / ``data.validation.sources``.

    Exactly how the multiplexer sees a dataset: language, modality and dataset are only tags,
    so one mixing mechanism covers all three.
    """

    name: str
    path: str
    task: str
    source_lang: str
    target_lang: str
    dataset: str = "default"
    weight: float | None = None
    """Sampling weight; when no source has one, weights come from sizes and the temperature."""
    num_examples: int | None = None
    """Size used for temperature weighting; counted from the shards when absent."""
    modality: str | None = None
    """``audio`` or ``text``; derived from the task when absent."""
    introduce_at_step: int = 0
    """Curriculum: the source joins the mix at this training step (weight 0 before it, the others
    renormalised); 0: from the start. Approximate: converted to a draw count (``data.pipeline``)."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"source {self.name!r}: task {self.task!r} is not one of {TASKS}")
        expected = "audio" if self.task in AUDIO_TASKS else "text"
        if self.modality is None:
            object.__setattr__(self, "modality", expected)
        elif self.modality != expected:
            raise ValueError(f"source {self.name!r}: modality {self.modality!r} does not match task {self.task!r}")
        if self.weight is not None and not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"source {self.name!r}: weight must be a finite number > 0, got {self.weight!r}")
        step = self.introduce_at_step
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"source {self.name!r}: introduce_at_step must be an integer >= 0, got {step!r}")

    @property
    def direction(self) -> str:
        return direction_key(self.task, self.source_lang, self.target_lang)


def temperature_weights(sizes: Sequence[int], temperature: float) -> list[float]:
    """p_i = n_i^(1/T) / sum_j n_j^(1/T): T=1 follows corpus sizes, large T tends to uniform."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if any(n <= 0 for n in sizes):
        raise ValueError(f"every source needs at least one example for temperature weighting, got sizes {list(sizes)}")
    scaled = [n ** (1.0 / temperature) for n in sizes]
    total = sum(scaled)
    return [s / total for s in scaled]


def normalize_weights(names: Sequence[str], weights: Sequence[float]) -> list[float]:
    """Weights scaled to sum to one; each must be finite and > 0 (the error names the source)."""
    for name, w in zip(names, weights, strict=True):
        if not (isinstance(w, int | float) and math.isfinite(w) and w > 0):
            raise ValueError(f"source {name!r}: weight must be a finite number > 0, got {w!r}")
    total = float(sum(weights))
    return [w / total for w in weights]


def sources_for_rank(directions: Sequence[str], rank_directions: Sequence[Sequence[str]],
                     rank: int, *, required: bool = True) -> list[tuple[int, int, int]]:
    """The data sources a rank reads: those whose direction (``mt:en-de``) is one of its tasks'.
    Returns ``(source index, this rank's index among the ranks reading it, how many read it)``:
    ranks that share a task split its sources between them."""
    out = []
    for i, d in enumerate(directions):
        readers = [r for r, ds in enumerate(rank_directions) if d in ds]
        if rank in readers:
            out.append((i, readers.index(rank), len(readers)))
    if not out and required:
        raise ValueError(f"rank {rank} trains {sorted(rank_directions[rank])} but no data source has one of "
                         f"those directions (sources: {sorted(set(directions))})")
    return out
