"""On-the-fly filters of bad parallel pairs: length, length ratio, repetitions, numerals, punctuation.

Each filter is a :class:`~nemo_emmett.data.transform.Transform` that keeps the example or rejects it
with its reason (``data/filtered/<reason>``); the checks themselves are pure functions of the two
texts, beside the class that uses them. They read the source text (an audio example's transcript)
and the target text, so they apply to speech sources too. "Tokens" are whitespace-separated words
(the text as it is stored, before the run's tokenizer), "chars" are characters. In the spirit of
OpusFilter's ``LengthFilter``, ``LengthRatioFilter``, ``RepetitionFilter``, ``NonZeroNumeralsFilter``
and ``TerminalPunctuationFilter``, and MAMMOTH's ``filtertoolong``, but each a yes/no rule with its
threshold, not a score."""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import nemo_emmett.data.examples as ex_
from nemo_emmett.data.examples import Example
from nemo_emmett.data.transform import Rejected, Transform, positive

UNITS = ("tokens", "chars")
"""What lengths and repetitions count: whitespace-separated words or characters."""


def units(text: str, unit: str) -> Sequence[str]:
    """``text`` as a sequence of ``unit`` (:data:`UNITS`)."""
    return text.split() if unit == "tokens" else text


def check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")


def texts(example: Example) -> tuple[str, str]:
    return ex_.source_text(example), ex_.target_text(example)


# ---- length ---------------------------------------------------------------------------------

def within(n: int, low: int | None, high: int | None) -> bool:
    return (low is None or n >= low) and (high is None or n <= high)


def check_bounds(low_name: str, low: int | None, high_name: str, high: int | None) -> None:
    positive(low_name, low, allow_none=True)
    positive(high_name, high, allow_none=True)
    if low is not None and high is not None and low > high:
        raise ValueError(f"{low_name}={low} > {high_name}={high}: no example could pass")


@dataclass(frozen=True)
class FilterLength(Transform):
    """Rejects a pair either of whose sides has fewer than ``min_*`` or more than ``max_*`` tokens or
    characters (null: no bound)."""

    NAME: ClassVar[str] = "filter_length"
    min_tokens: int | None = 1
    max_tokens: int | None = 200
    min_chars: int | None = None
    max_chars: int | None = None

    def __post_init__(self) -> None:
        check_bounds("min_tokens", self.min_tokens, "max_tokens", self.max_tokens)
        check_bounds("min_chars", self.min_chars, "max_chars", self.max_chars)

    def __call__(self, example: Example, rng: random.Random) -> Example | Rejected:
        for text in texts(example):
            if not (within(len(text.split()), self.min_tokens, self.max_tokens)
                    and within(len(text), self.min_chars, self.max_chars)):
                return Rejected("length")
        return example


# ---- length ratio ---------------------------------------------------------------------------

def length_ratio(a: int, b: int) -> float:
    """The longer side over the shorter one (>= 1); one empty side: infinite; both empty: 1."""
    if min(a, b) == 0:
        return 1.0 if a == b else float("inf")
    return max(a, b) / min(a, b)


@dataclass(frozen=True)
class FilterRatio(Transform):
    """Rejects a pair whose longer side is more than ``max_ratio`` times as long as the shorter one."""

    NAME: ClassVar[str] = "filter_ratio"
    max_ratio: float = 3.0
    unit: str = "tokens"

    def __post_init__(self) -> None:
        positive("max_ratio", self.max_ratio, integer=False, minimum=1)
        check_unit(self.unit)

    def __call__(self, example: Example, rng: random.Random) -> Example | Rejected:
        a, b = (len(units(t, self.unit)) for t in texts(example))
        return Rejected("length_ratio") if length_ratio(a, b) > self.max_ratio else example


# ---- repetitions ----------------------------------------------------------------------------

def longest_repeat(seq: Sequence[str], min_ngram: int, max_ngram: int) -> int:
    """The most consecutive copies of any n-gram of ``seq`` (``min_ngram <= n <= max_ngram``): ``a b a b
    a b`` holds ``a b`` 3 times. For each n, a run of r positions with ``seq[i] == seq[i + n]`` is the
    n-gram at its start followed by r // n more copies; 1 for a sequence with no repeat (0 if empty)."""
    best = 1 if seq else 0
    for n in range(min_ngram, max_ngram + 1):
        run = 0
        for i in range(len(seq) - n):
            run = run + 1 if seq[i] == seq[i + n] else 0
            best = max(best, run // n + 1)
    return best


@dataclass(frozen=True)
class FilterRepetition(Transform):
    """Rejects a pair either of whose sides repeats one n-gram of tokens (or characters) more than
    ``max_repeats`` times in a row (``ha ha ha ha`` with ``max_repeats: 3``): degenerate crawled text."""

    NAME: ClassVar[str] = "filter_repetition"
    max_repeats: int = 3
    min_ngram: int = 1
    max_ngram: int = 4
    unit: str = "tokens"

    def __post_init__(self) -> None:
        positive("max_repeats", self.max_repeats, minimum=1)
        check_bounds("min_ngram", self.min_ngram, "max_ngram", self.max_ngram)
        positive("min_ngram", self.min_ngram, minimum=1)
        check_unit(self.unit)

    def __call__(self, example: Example, rng: random.Random) -> Example | Rejected:
        for text in texts(example):
            if longest_repeat(units(text, self.unit), self.min_ngram, self.max_ngram) > self.max_repeats:
                return Rejected("repetition")
        return example


# ---- numerals -------------------------------------------------------------------------------

_NUMBER = re.compile(r"\d+")


def numerals(text: str) -> list[str]:
    """The runs of digits of ``text``, as ASCII digits, sorted: ``"1,000 in 2024"`` -> ``["000", "1",
    "2024"]``. Sorting lets a translation reorder them (dates); splitting at every non-digit lets it
    write ``1,000`` as ``1.000`` or ``1 000`` and ``3.5`` as ``3,5``."""
    return sorted("".join(str(unicodedata.digit(c)) for c in run) for run in _NUMBER.findall(text))


@dataclass(frozen=True)
class FilterNumerals(Transform):
    """Rejects a pair whose sides hold different numbers (:func:`numerals`): a misaligned line, or a
    translation that lost or changed a figure."""

    NAME: ClassVar[str] = "filter_numerals"

    def __call__(self, example: Example, rng: random.Random) -> Example | Rejected:
        source, target = texts(example)
        return Rejected("numerals") if numerals(source) != numerals(target) else example


# ---- punctuation ----------------------------------------------------------------------------

TERMINALS = {"?": "question", "？": "question", "؟": "question", ";": "question", "!": "exclamation",
             "！": "exclamation", ".": "stop", "。": "stop", "।": "stop", "…": "stop"}
"""Sentence-final marks by kind; ``;`` is the Greek question mark (after NFKC, like ``U+037E``)."""


def terminal(text: str) -> str | None:
    """The kind of ``text``'s final mark (:data:`TERMINALS`; quotes and closing brackets after it skipped), or None."""
    stripped = unicodedata.normalize("NFKC", text).rstrip()
    while stripped and (stripped[-1] in "\"'" or unicodedata.category(stripped[-1]) in ("Pe", "Pf", "Pi")):
        stripped = stripped[:-1].rstrip()
    return TERMINALS.get(stripped[-1:]) if stripped else None


def punctuation_count(text: str) -> int:
    return sum(unicodedata.category(c).startswith("P") for c in text)


def punctuation_ratio(source: str, target: str) -> float:
    """(more punctuation marks + 1) / (fewer + 1): >= 1, smoothed so that one stray comma is no mismatch."""
    a, b = punctuation_count(source) + 1, punctuation_count(target) + 1
    return max(a, b) / min(a, b)


@dataclass(frozen=True)
class FilterPunctuation(Transform):
    """Rejects a pair whose sides end differently (``terminal``: a question against a statement, a
    full stop against none; reason ``terminal_punctuation``) or whose punctuation counts differ by more
    than ``max_ratio`` (:func:`punctuation_ratio`; null: not checked; reason ``punctuation_ratio``)."""

    NAME: ClassVar[str] = "filter_punctuation"
    terminal: bool = True
    max_ratio: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.terminal, bool):
            raise ValueError(f"terminal must be true or false, got {self.terminal!r}")
        positive("max_ratio", self.max_ratio, allow_none=True, integer=False, minimum=1)
        if not self.terminal and self.max_ratio is None:
            raise ValueError("terminal=false and max_ratio=null: the filter checks nothing")

    def __call__(self, example: Example, rng: random.Random) -> Example | Rejected:
        source, target = texts(example)
        if self.terminal and terminal(source) != terminal(target):
            return Rejected("terminal_punctuation")
        if self.max_ratio is not None and punctuation_ratio(source, target) > self.max_ratio:
            return Rejected("punctuation_ratio")
        return example
