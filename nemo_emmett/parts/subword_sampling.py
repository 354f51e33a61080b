"""Subword regularization (Kudo, 2018): one sampled SentencePiece segmentation, reproducible from its seed.

The draw is ours, not SentencePiece's: :func:`sampled_ids` takes the ``nbest_size`` best segmentations of
the unigram lattice with their log-probabilities (``nbest_encode``, deterministic) and picks one with
probability proportional to ``p^alpha`` (Kudo's l-best sampling) with a ``random.Random(seed)``. So a
segmentation depends only on (text, alpha, nbest_size, seed), in any process. SentencePiece's own
``enable_sampling`` draws from a generator that ``set_random_generator_seed`` does not make reproducible
across processes (measured with sentencepiece 0.2.3: the same model, text and seed gave different
segmentations in different processes), which would break exact resume: a resumed run is a new process.
The data path derives the seed from the checkpointed stream position (``data/transform.py``)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

MAX_SEED = 2**32 - 2
"""SentencePiece's seed is a uint32, and 2**32 - 1 means "no seed" (its ``kDefaultSeed``)."""


@dataclass(frozen=True)
class SubwordSampling:
    """How to sample one text's segmentation: ``alpha``, the smoothing of the segmentations' probabilities
    (``p^alpha``: 0 uniform, 1 the model's own), ``nbest_size``, how many best segmentations to draw from
    (-1: :data:`NBEST_CAP`), and the ``seed`` that fixes the draw."""

    alpha: float
    nbest_size: int
    seed: int

    def for_target(self) -> SubwordSampling:
        """The target side's sampling: same parameters, another seed (the source keeps ``seed``)."""
        return replace(self, seed=(self.seed + 1) % (MAX_SEED + 1))


NBEST_CAP = 64
"""``nbest_size: -1`` (the whole lattice in SentencePiece) samples among this many best segmentations
(SentencePiece's limit is 512)."""


def sample_index(scores: list[float], alpha: float, seed: int) -> int:
    """Index of one candidate drawn with probability proportional to ``exp(alpha * score)`` (scores are
    log-probabilities: ``p^alpha``), by ``random.Random(seed)``."""
    top = max(scores)
    weights = [math.exp(alpha * (s - top)) for s in scores]  # shifted: no overflow, same proportions
    return random.Random(seed).choices(range(len(scores)), weights=weights)[0]


def sampled_ids(sp: Any, text: str, sampling: SubwordSampling) -> list[int]:
    """The ids of one sampled segmentation of ``text`` by the ``sentencepiece.SentencePieceProcessor`` ``sp``
    (a unigram model: BPE has no n-best list to draw from)."""
    k = NBEST_CAP if sampling.nbest_size < 0 else min(sampling.nbest_size, 512)
    if k <= 1 or not text:
        return sp.encode(text)
    try:
        nbest = sp.nbest_encode(text, return_type="proto", nbest_size=k).nbests
    except RuntimeError as e:
        raise ValueError(f"subword_sampling needs a unigram SentencePiece model (it samples from its n-best "
                         f"segmentations); this model gave: {e}") from e
    pick = nbest[sample_index([n.score for n in nbest], sampling.alpha, sampling.seed)]
    return [p.id for p in pick.pieces]
