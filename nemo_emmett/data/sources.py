"""Named data sources: one Shar folder each, tagged with task, modality, languages and dataset."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from nemo_emmett.data.examples import AUDIO_TASKS, TASKS, direction_key
from nemo_emmett.data.transform import Transform
from nemo_emmett.data.transforms import parse_transforms


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
    transforms: tuple[Transform, ...] | None = None
    """This source's training transforms (``data/transforms.py``: a list of ``{name: ..., option: value}``),
    replacing ``data.transforms``; ``[]``: none; null: ``data.transforms``. Never applied to validation."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", parse_transforms(self.transforms, f"source {self.name!r}: transforms"))
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

    def as_config(self) -> dict[str, Any]:
        """The source as a config entry that parses back to it (``dataclasses.asdict`` would lose each
        transform's ``name``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.transforms is not None:
            out["transforms"] = [t.options() for t in self.transforms]
        return out


_FOLDER_NAME = re.compile(rf"({'|'.join(TASKS)})_([^-]+)-([^-]+)")
"""``<task>_<src>-<tgt>``, the name preparation gives each folder (``data/prepare/output.py``)."""
_KEYS = ("task", "source_lang", "target_lang")


def folder_direction(path: str | Path, marker: Mapping[str, Any] | None) -> tuple[dict[str, str], str] | None:
    """What a Shar folder says it holds: ``({task, source_lang, target_lang}, where that was read)``,
    from its completion marker's preparation summary, else from a ``<task>_<src>-<tgt>`` folder name;
    None when it says nothing (a language with a ``-`` makes a name ambiguous: not read)."""
    summary = ((marker or {}).get("extra") or {}).get("summary")
    if isinstance(summary, Mapping) and all(isinstance(summary.get(k), str) for k in _KEYS):
        return {k: summary[k] for k in _KEYS}, "its completion marker"
    m = _FOLDER_NAME.fullmatch(Path(path).name)
    if m is None:
        return None
    return dict(zip(_KEYS, m.groups())), "its name"


def check_folder_direction(spec: SourceSpec, marker: Mapping[str, Any] | None, where: str) -> None:
    """The source's ``task``/``source_lang``/``target_lang`` agree with what its folder says it holds
    (:func:`folder_direction`): a folder ``mt_en-fr`` read as en-de would train the wrong direction."""
    found = folder_direction(spec.path, marker)
    if found is None:
        return
    said, how = found
    wrong = [k for k in _KEYS if said[k] != getattr(spec, k)]
    if wrong:
        values = ", ".join(f"{k}: {getattr(spec, k)!r} but the folder {said[k]!r}" for k in wrong)
        raise ValueError(f"{where}: Shar folder {spec.path!r} holds {direction_key(*(said[k] for k in _KEYS))} "
                         f"(by {how}), but the source says {spec.direction} ({values}); fix "
                         f"{', '.join(f'{where}.{k}' for k in wrong)} or point path at the right folder")


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
