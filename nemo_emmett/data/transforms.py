"""Transforms per training source: the known names, parsing a config's list, and the pipeline the sampler runs.

A list is written in the data config, for every training source (``data.transforms``) or for one
(``train_sources[i].transforms``, which replaces the default), e.g.::

    transforms:
      - {name: filter_length, min_tokens: 1, max_tokens: 200}
      - {name: subword_sampling, alpha: 0.1, nbest_size: -1}

Entries run in the order given; the first that rejects an example ends it (``data/filtered/<reason>``).
Every option not written takes the default of the transform's dataclass (:data:`TRANSFORMS`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from nemo_emmett.data.examples import Example
from nemo_emmett.data.filters import (
    FilterLength,
    FilterNumerals,
    FilterPunctuation,
    FilterRatio,
    FilterRepetition,
)
from nemo_emmett.data.subword import SubwordSampling
from nemo_emmett.data.transform import Rejected, Transform, example_rng

TRANSFORMS: dict[str, type[Transform]] = {t.NAME: t for t in (
    FilterLength, FilterRatio, FilterRepetition, FilterNumerals, FilterPunctuation, SubwordSampling)}
"""Every transform by its config ``name``."""


def parse_transform(raw: Mapping[str, Any] | Transform, where: str) -> Transform:
    """One config entry (``{name: ..., option: value}``) as its transform; errors start with ``where``
    and name the bad key or value and what is known."""
    if isinstance(raw, Transform):
        return raw
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ValueError(f"{where}: expected a mapping with a 'name' (one of {', '.join(TRANSFORMS)}), got {raw!r}")
    options = {str(k): v for k, v in raw.items() if k != "name"}
    name = raw["name"]
    cls = TRANSFORMS.get(name)
    if cls is None:
        raise ValueError(f"{where}: unknown transform name {name!r}; known: {', '.join(TRANSFORMS)}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{where} ({name}): unknown option(s) {unknown}; {name} takes "
                         f"{', '.join(known) if known else 'no options'}")
    try:
        return cls(**options)
    except ValueError as e:
        raise ValueError(f"{where} ({name}): {e}") from e


def parse_transforms(raw: Sequence[Mapping[str, Any] | Transform] | None, where: str) -> tuple[Transform, ...] | None:
    """A config's transform list as transforms (None stays None: "not given")."""
    if raw is None:
        return None
    if isinstance(raw, str | Mapping) or not isinstance(raw, Sequence):
        raise ValueError(f"{where}: expected a list of transforms ({{name: ..., ...}}), got {raw!r}")
    return tuple(parse_transform(t, f"{where}[{i}]") for i, t in enumerate(raw))


def describe(transforms: Sequence[Transform]) -> str:
    """``filter_length(max_tokens=200), subword_sampling`` for the data plan's summary: options that differ
    from the defaults."""
    out = []
    for t in transforms:
        changed = {k: v for k, v in t.options().items() if k != "name" and v != type(t)().options()[k]}
        out.append(f"{t.NAME}({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else t.NAME)
    return ", ".join(out)


@dataclass(frozen=True)
class SourceTransforms:
    """What the sampler of one (rank, worker) slot runs on each draw: the transforms of the source it came
    from, with that draw's generator (:func:`~nemo_emmett.data.transform.example_rng`). Stateless, so
    the sampler's checkpoint is all it needs to repeat itself; picklable (dataloader workers)."""

    names: tuple[str, ...]
    """The multiplexer's source names, by index."""
    transforms: tuple[tuple[Transform, ...], ...]
    """Each source's transforms, by index."""
    seed: int
    slot: int

    def __post_init__(self) -> None:
        if len(self.names) != len(self.transforms):
            raise ValueError(f"{len(self.names)} sources but {len(self.transforms)} transform lists")

    def __call__(self, source: int, example: Example, draw: int) -> Example | Rejected:
        steps = self.transforms[source]
        if not steps:
            return example
        rng = example_rng(self.seed, self.slot, self.names[source], draw)
        for step in steps:
            example = step(example, rng)
            if isinstance(example, Rejected):
                return example
        return example

    @property
    def empty(self) -> bool:
        return not any(self.transforms)
