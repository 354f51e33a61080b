"""How long an example is, on the two axes of 2D bucketing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from nemo_emmett.data.examples import (
    Example,
    is_audio,
    source_lang,
    source_text,
    subword_sampling,
    target_lang,
    target_text,
)
from nemo_emmett.parts.subword_sampling import SubwordSampling


class TokenEncoder(Protocol):
    """What length counting needs of a tokenizer (``parts.text_processor.TextProcessor`` has it): the
    ids the model receives for a source and for a target, languages given. With the ``subword_sampling``
    transform they also take ``sampling=`` (``parts.subword_sampling.SubwordSampling``); it is passed only
    when an example carries one, so a tokenizer without it serves every run without that transform."""

    def source_ids(self, text: str, source_lang: str | None = None) -> list[int]: ...
    def target_ids(self, text: str, target_lang: str | None = None) -> list[int]: ...


class TokenCounter:
    """Counts ids with the run's tokenizer, the one the model reads, exactly as collation builds them
    (``data/dataset.py``: ``source_ids`` for a text source, ``target_ids`` for the target, specials,
    EOS and forced language codes included): bucket lengths are then the lengths the model sees.
    Picklable when the tokenizer is (``TextProcessor`` is)."""

    def __init__(self, text: TokenEncoder):
        self.text = text

    def source(self, text: str, source_lang: str, sampling: SubwordSampling | None = None) -> int:
        return len(self.text.source_ids(text, source_lang=source_lang, **sampling_kw(sampling)))

    def target(self, text: str, target_lang: str, sampling: SubwordSampling | None = None) -> int:
        return len(self.text.target_ids(text, target_lang=target_lang, **sampling_kw(sampling)))


def sampling_kw(sampling: SubwordSampling | None) -> dict[str, Any]:
    """``{"sampling": sampling}`` for a sampled example, else nothing (see :class:`TokenEncoder`)."""
    return {} if sampling is None else {"sampling": sampling}


@dataclass
class LengthMeasure:
    """(input length, output length) of an example in comparable units.

    Audio input: duration / ``token_equivalent_duration`` (seconds of speech per input token,
    e.g. 0.08 for a FastConformer with 8x subsampling of 10 ms frames). Text input: the source ids
    the encoder receives. Output: the target ids the decoder must produce (for ST the translation,
    never the source transcript), EOS and a forced language code included. An example that carries a
    subword sampling (the ``subword_sampling`` transform) is counted in its sampled segmentation, the one
    collation builds.

    ``count_tokens``: a :class:`TokenCounter` (the run's tokenizer: the units of the collated batch),
    or a plain ``Callable[[str], int]`` applied to both texts (tests, benchmarks: words, say).
    """

    count_tokens: object  # TokenCounter | Callable[[str], int]; typed loosely so the dataclass stays picklable
    token_equivalent_duration: float = 0.08

    def __post_init__(self) -> None:
        if self.token_equivalent_duration <= 0:
            raise ValueError(f"token_equivalent_duration must be > 0, got {self.token_equivalent_duration}")

    def __call__(self, ex: Example) -> tuple[float, float]:
        count = self.count_tokens
        sampling = subword_sampling(ex)
        if isinstance(count, TokenCounter):
            out = float(count.target(target_text(ex), target_lang(ex), sampling))
        else:
            out = float(count(target_text(ex)))
        if is_audio(ex):
            return ex.duration / self.token_equivalent_duration, out
        if isinstance(count, TokenCounter):
            return float(count.source(source_text(ex), source_lang(ex), sampling)), out
        return float(count(source_text(ex))), out
