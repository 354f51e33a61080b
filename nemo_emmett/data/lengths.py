"""How long an example is, on the two axes of 2D bucketing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nemo_emmett.data.examples import Example, is_audio, source_text, target_text


class TokenEncoder(Protocol):
    """What length counting needs of a tokenizer (``parts.text_processor.TextProcessor`` has it)."""

    def encode(self, text: str) -> list[int]: ...


class TokenCounter:
    """Counts the tokens of a text with the run's tokenizer, the one the model reads: bucket lengths
    are then the lengths the model sees. Picklable when the tokenizer is (``TextProcessor`` is)."""

    def __init__(self, text: TokenEncoder):
        self.text = text

    def __call__(self, text: str) -> int:
        return len(self.text.encode(text))


class SentencePieceCounter:
    """Counts SentencePiece tokens of a text; picklable (the model loads lazily in each process)."""

    def __init__(self, model_path: str | Path):
        self.model_path = str(model_path)
        if not Path(self.model_path).is_file():
            raise FileNotFoundError(f"SentencePiece model {self.model_path!r} does not exist")
        self._sp = None

    def __call__(self, text: str) -> int:
        if self._sp is None:
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_file=self.model_path)
        return len(self._sp.encode(text))

    def __getstate__(self) -> dict:
        return {"model_path": self.model_path, "_sp": None}


@dataclass
class LengthMeasure:
    """(input length, output length) of an example in comparable units.

    Audio input: duration / ``token_equivalent_duration`` (seconds of speech per input token,
    e.g. 0.08 for a FastConformer with 8x subsampling of 10 ms frames). Text input: source
    tokens. Output: tokens of the text the model must produce, i.e. the *target* (for ST the
    translation, never the source transcript).
    """

    count_tokens: object  # Callable[[str], int]; typed loosely so the dataclass stays picklable
    token_equivalent_duration: float = 0.08

    def __post_init__(self) -> None:
        if self.token_equivalent_duration <= 0:
            raise ValueError(f"token_equivalent_duration must be > 0, got {self.token_equivalent_duration}")

    def __call__(self, ex: Example) -> tuple[float, float]:
        out = float(self.count_tokens(target_text(ex)))
        if is_audio(ex):
            return ex.duration / self.token_equivalent_duration, out
        return float(self.count_tokens(source_text(ex))), out
