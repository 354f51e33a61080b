"""Subword regularization (Kudo, 2018): one sampled SentencePiece segmentation, reproducible from its seed.

SentencePiece draws from one process-wide random generator; :func:`sampled_ids` reseeds it before every
call (``set_random_generator_seed``, which sentencepiece >= 0.2 applies to the next call), so a
segmentation depends only on (text, alpha, nbest_size, seed), never on what was encoded before. The
data path derives the seed from the checkpointed stream position (``data/transform.py``), which keeps
resume exact. Collation runs in one thread per dataloader worker, so the reseed-then-encode pair is
never interleaved."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

MAX_SEED = 2**32 - 2
"""SentencePiece's seed is a uint32, and 2**32 - 1 means "no seed" (its ``kDefaultSeed``)."""


@dataclass(frozen=True)
class SubwordSampling:
    """How to sample one text's segmentation: SentencePiece's ``alpha`` (unigram: the smoothing of the
    lattice probabilities; BPE: the dropout probability) and ``nbest_size`` (-1: the whole lattice,
    k >= 2: among the k best), and the ``seed`` that fixes the draw."""

    alpha: float
    nbest_size: int
    seed: int

    def for_target(self) -> SubwordSampling:
        """The target side's sampling: same parameters, another seed (the source keeps ``seed``)."""
        return replace(self, seed=(self.seed + 1) % (MAX_SEED + 1))


def sampled_ids(sp: Any, text: str, sampling: SubwordSampling) -> list[int]:
    """The ids of one sampled segmentation of ``text`` by the ``sentencepiece.SentencePieceProcessor`` ``sp``."""
    import sentencepiece as spm

    spm.set_random_generator_seed(sampling.seed % (MAX_SEED + 1))
    return sp.encode(text, enable_sampling=True, alpha=sampling.alpha, nbest_size=sampling.nbest_size)
