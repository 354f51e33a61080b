"""What a transform is: a small typed object that turns one training example into another, or rejects it.

A transform is its own config: a frozen dataclass whose fields are its options, with their defaults
(``data/transforms.py`` names every known one). The sampler applies a source's transforms to each
example it draws, before measuring it (``data/sampler.py``), so bucketing sees what collation will
tokenize, and a rejected example is counted under its reason (``data/filtered/<reason>``), never
dropped silently. Validation examples are never transformed.

Randomness comes only from the ``rng`` the pipeline hands over, seeded from ``(data seed, slot,
source, draw index)`` (:func:`example_rng`): all of it is in the checkpointed sampler state, so a
resumed or replayed stream transforms every example exactly as before. MAMMOTH's transforms
(``mammoth/transforms/transform.py``) instead return ``None`` for a filtered example and count in a
shared statistics object, and seed one global generator per worker; a noise transform (BART, MASS)
fits here as one more subclass that edits the texts with ``rng``."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import ClassVar

from nemo_emmett.data.examples import Example


@dataclass(frozen=True)
class Rejected:
    """A transform's verdict that the example must not be trained on, and why (the counter's name)."""

    reason: str


@dataclass(frozen=True)
class Transform(ABC):
    """One step of a source's transform list. Subclasses are frozen dataclasses: their fields are the
    options (validated in ``__post_init__``, errors naming the option and its value), ``NAME`` is the
    ``name:`` of the config entry."""

    NAME: ClassVar[str]

    @abstractmethod
    def __call__(self, example: Example, rng: random.Random) -> Example | Rejected:
        """The transformed example (a new object: the input is never edited) or :class:`Rejected`."""

    def options(self) -> dict[str, object]:
        """The config entry of this transform: ``{"name": NAME, option: value, ...}``."""
        return {"name": self.NAME, **{f.name: getattr(self, f.name) for f in fields(self)}}


def example_rng(seed: int, slot: int, source: str, draw: int) -> random.Random:
    """The generator of one drawn example's transforms: a pure function of the data seed, the (rank,
    worker) slot, the source's name and the sampler's draw index (a string seed is hashed with SHA-512,
    the same in every process, unlike ``hash``)."""
    return random.Random(f"{seed}/{slot}/{source}/{draw}")


def positive(name: str, value: object, *, allow_none: bool = False, integer: bool = True, minimum: float = 0) -> None:
    """``value`` is a number >= ``minimum`` (an int when ``integer``; None when ``allow_none``), else an
    error naming the option and the value."""
    if value is None and allow_none:
        return
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value != value or value < minimum:
        what = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {what} >= {minimum}{' or null' if allow_none else ''}, got {value!r}")
