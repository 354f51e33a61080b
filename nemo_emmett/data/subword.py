"""Subword regularization as a training transform: each drawn example gets its own sampled segmentation.

The transform does not tokenize: it attaches a :class:`~nemo_emmett.parts.subword_sampling.SubwordSampling`
(alpha, nbest_size and a seed drawn from the example's generator, ``data/transform.py``) to the example
(:func:`~nemo_emmett.data.examples.subword_sampling`). Bucketing (``data/lengths.py``) and collation
(``data/dataset.py``) then both encode the source and target with it, so the lengths a batch is bucketed
by are the lengths it is collated to, and the same example drawn in another epoch is segmented anew.
Validation examples never carry it: they are encoded with the best segmentation."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import ClassVar

from nemo_emmett.data.examples import Example, with_subword_sampling
from nemo_emmett.data.transform import Rejected, Transform
from nemo_emmett.parts.subword_sampling import MAX_SEED
from nemo_emmett.parts.subword_sampling import SubwordSampling as Sampling


@dataclass(frozen=True)
class SubwordSampling(Transform):
    """Subword regularization of the source and target texts, training only: one of the SentencePiece
    n-best segmentations drawn with probability ~ p^alpha (``parts/subword_sampling.py``). Needs a
    SentencePiece unigram tokenizer."""

    NAME: ClassVar[str] = "subword_sampling"
    alpha: float = 0.1
    """The smoothing of the segmentation probabilities (small: close to uniform over the candidates;
    large: close to the best one)."""
    nbest_size: int = -1
    """-1: from the 64 best segmentations (``NBEST_CAP``); k >= 2: from the k best (at most 512)."""

    def __post_init__(self) -> None:
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, int | float) or not math.isfinite(a) or a <= 0:
            raise ValueError(f"alpha must be a finite number > 0, got {a!r}")
        k = self.nbest_size
        if isinstance(k, bool) or not isinstance(k, int) or not (k == -1 or k >= 2):
            raise ValueError(f"nbest_size must be -1 (the whole lattice) or an integer >= 2, got {k!r} "
                             "(SentencePiece does not sample with 0 or 1)")

    def __call__(self, example: Example, rng: random.Random) -> Example | Rejected:
        return with_subword_sampling(example, Sampling(float(self.alpha), self.nbest_size, rng.randint(0, MAX_SEED)))
