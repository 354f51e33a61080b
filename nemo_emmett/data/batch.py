"""The collated batch: the one contract between the data path and every model, the OOMptimizer and MGCM.

Built by :func:`nemo_emmett.data.dataset.collate` (real examples) and
:func:`nemo_emmett.oomptimizer.worst_case.worst_case_batch` (a bucket's synthetic worst case), and
nowhere else. A batch is homogeneous in modality: an audio batch has ``audio`` and no ``source_ids``,
a text batch the other way round; a field that does not apply is ``None``. Every tensor and list
field has one row per example (B), so slicing rows (:meth:`TranslationBatch.take_rows`) needs no
knowledge of which fields exist.

Lightning moves it to the device (``move_data_to_device`` rebuilds dataclasses field by field),
so it has no ``to``; it is not frozen because Lightning refuses frozen dataclasses.

With ``data.fusion: zip`` a training step receives a :class:`FusedBatch`: the next audio batch and the
next text batch, each still homogeneous (validation batches are never fused)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

BATCH_LEVEL = ("modality", "bucket")
"""Fields that describe the whole batch; every other field has one row per example."""


@dataclass
class TranslationBatch:
    modality: str
    """``audio`` or ``text``: which inputs the examples have."""
    bucket: int
    """The 2D bucket the sampler formed the batch in (-1: not from a bucket, e.g. the worst case)."""
    ids: list[str]
    """(B) example ids, unique within a source."""
    tasks: list[str]
    """(B) task per example (``st``, ``asr``, ``mt``); an audio batch may mix ST and ASR."""
    source_langs: list[str]
    """(B) source language per example."""
    target_langs: list[str]
    """(B) target language per example."""
    source_texts: list[str]
    """(B) source text (the transcript for audio), ``""`` where there is none."""
    target_texts: list[str]
    """(B) reference translation (or transcript for ASR): what validation scores against."""
    audio: torch.Tensor | None = None
    """(B, T) float waveforms at the data sampling rate, zero-padded; audio batches only."""
    audio_lens: torch.Tensor | None = None
    """(B,) samples of each waveform."""
    target_ids: torch.Tensor | None = None
    """(B, U) target token ids ending in EOS, padded with the tokenizer's pad id; with a tokenizer."""
    target_lens: torch.Tensor | None = None
    """(B,) target tokens of each example, EOS included."""
    prompt_ids: torch.Tensor | None = None
    """(B, P) prompt ids (the target-language tag, empty for a task without one), padded."""
    prompt_lens: torch.Tensor | None = None
    """(B,) prompt tokens of each example (may be 0)."""
    source_ids: torch.Tensor | None = None
    """(B, S) source token ids, padded; text batches only."""
    source_lens: torch.Tensor | None = None
    """(B,) source tokens of each example."""
    transcript_ids: torch.Tensor | None = None
    """(B, S) source transcript ids, padded; audio batches only (the speech encoder's CTC target)."""
    transcript_lens: torch.Tensor | None = None
    """(B,) transcript tokens of each example."""

    def __len__(self) -> int:
        """B, the number of examples."""
        return len(self.ids)

    @property
    def directions(self) -> list[tuple[str, str, str]]:
        """(B) (task, source_lang, target_lang) per example: what routing and per-direction metrics key on."""
        return list(zip(self.tasks, self.source_langs, self.target_langs))

    def take_rows(self, index: torch.Tensor) -> TranslationBatch:
        """The examples ``index`` (N,) in that order: every per-example tensor and list sliced, the
        batch-level fields kept. Padding columns stay (the lengths say what is real)."""
        rows = index.tolist()

        def pick(value: torch.Tensor | list | None) -> torch.Tensor | list | None:
            if value is None:
                return None
            if isinstance(value, torch.Tensor):
                return value[index.to(value.device)]  # (B, ...) -> (N, ...)
            return [value[i] for i in rows]

        per_example = {f.name: pick(getattr(self, f.name)) for f in fields(self) if f.name not in BATCH_LEVEL}
        return replace(self, **per_example)


@dataclass
class FusedBatch:
    """One training step's two batches under ``data.fusion: zip``: the next audio batch (ST, ASR) and the
    next text batch (MT), each from its own modality's bucketed stream, so that the step's loss (and
    MGCM's per-task shares) covers every task. Like lhotse's ``ZipSampler(merge_batches=False)``
    behind NeMo's ``sampler_fusion: zip``; Lightning moves it to the device field by field."""

    audio: TranslationBatch
    text: TranslationBatch

    def __post_init__(self) -> None:
        for name in ("audio", "text"):
            got = getattr(self, name).modality
            if got != name:
                raise ValueError(f"FusedBatch.{name} must be a {name} batch, got a {got} batch")

    @property
    def parts(self) -> tuple[TranslationBatch, TranslationBatch]:
        return self.audio, self.text

    def __len__(self) -> int:
        """Examples of both batches."""
        return len(self.audio) + len(self.text)

    @property
    def ids(self) -> list[str]:
        """(B_audio + B_text) example ids, the audio batch's first (the order of every per-example view)."""
        return self.audio.ids + self.text.ids

    @property
    def tasks(self) -> list[str]:
        return self.audio.tasks + self.text.tasks

    @property
    def directions(self) -> list[tuple[str, str, str]]:
        return self.audio.directions + self.text.directions


def batch_parts(batch: TranslationBatch | FusedBatch) -> tuple[TranslationBatch, ...]:
    """The homogeneous batches of a training step: one, or a fused step's two."""
    return batch.parts if isinstance(batch, FusedBatch) else (batch,)
