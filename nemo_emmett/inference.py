"""Translate text lines, audio files, Shar folders or NeMo manifests with a trained model, and score.

Every entry point builds the same examples and batches as training (``collate(..., text=model.text)``)
and calls ``model.translate_batch``. Within a chunk of ``chunk_batches * batch_size`` examples,
batches are formed from examples of similar length (less padding, faster decoding); results
always come back in input order. The model runs in eval mode under ``torch.inference_mode()``
on the device of its parameters.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import move_data_to_device
from tqdm.auto import tqdm

import nemo_emmett.data.examples as ex_
from nemo_emmett.data.dataset import collate
from nemo_emmett.data.examples import Example, make_audio_example, make_text_example
from nemo_emmett.data.sampler import Batch
from nemo_emmett.parts.metrics import ScoreAccumulator, score_signatures, scored_target_langs, signature_text

TRANSLATE_DATASET = "inference"


def translate_examples(model: Any, examples: Iterable[Example], *, batch_size: int = 32, chunk_batches: int = 16,
                       total: int | None = None, progress: bool = True, desc: str = "translating") -> list[str]:
    """One hypothesis per example (audio and text may be mixed), in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from nemo_emmett.export import model_sampling_rate

    sampling_rate = model_sampling_rate(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    hyps: list[str] = []
    try:
        with torch.inference_mode(), tqdm(total=total, desc=desc, unit="ex", disable=not progress) as bar:
            for chunk in _chunks(examples, batch_size * chunk_batches):
                out: list[str | None] = [None] * len(chunk)
                for part in _length_sorted_batches(chunk, batch_size):
                    batch = _batch([chunk[i] for i in part])
                    inputs = move_data_to_device(collate(batch, sampling_rate=sampling_rate, text=model.text), device)
                    for i, hyp in zip(part, model.translate_batch(inputs), strict=True):
                        out[i] = hyp
                    bar.update(len(part))
                hyps.extend(out)  # type: ignore[arg-type]
    finally:
        model.train(was_training)
    return hyps


def check_direction(model: Any, task: str, source_lang: str, target_lang: str) -> None:
    """Before decoding: an error naming the direction when the model cannot know it, listing what it
    knows. A modular model knows the directions of its task table; another model, whose prompt names
    the target language, knows the languages whose tag is one token of its tokenizer
    (:meth:`~nemo_emmett.parts.text_processor.TextProcessor.language_tags`; none: nothing to check).
    A language it never saw would otherwise decode to nothing, silently."""
    key = ex_.direction_key(task, source_lang, target_lang)
    tasks = getattr(model, "tasks", None)
    if isinstance(tasks, dict):  # a modular model (mammoth/routing.py)
        if key not in tasks:
            raise ValueError(f"direction {key}: the model has no task for it; its tasks: {sorted(tasks)}")
        return
    template = model.text.prompt_template
    if "{target_lang}" not in template:
        return
    known = model.text.language_tags()
    if known and target_lang not in known:
        raise ValueError(f"target language {target_lang!r} ({key}): the model never saw it; it knows {known} "
                         f"(the language tags of its tokenizer, for its prompt {template!r})")


def translate_texts(model: Any, lines: Sequence[str], source_lang: str, target_lang: str, *,
                    batch_size: int = 32, progress: bool = True) -> list[str]:
    """Text MT of each line (``source_lang`` -> ``target_lang``)."""
    exs = (make_text_example(example_id=f"line-{i}", source_text=line.strip(), target_text="",
                             source_lang=source_lang, target_lang=target_lang, dataset=TRANSLATE_DATASET)
           for i, line in enumerate(lines))
    return translate_examples(model, exs, batch_size=batch_size, total=len(lines), progress=progress)


def translate_audio(model: Any, paths: Sequence[str | Path], source_lang: str, target_lang: str | None = None, *,
                    task: str = "st", batch_size: int = 16, progress: bool = True) -> list[str]:
    """Speech translation (``task="st"``) or transcription (``"asr"``; the target language is the
    source language) of each audio file, resampled to the model's sampling rate."""
    if task not in ex_.AUDIO_TASKS:
        raise ValueError(f"task must be one of {ex_.AUDIO_TASKS} for audio, got {task!r}")
    target = source_lang if task == "asr" else target_lang
    if target is None:
        raise ValueError("speech translation needs a target language")
    exs = (audio_example(p, source_lang=source_lang, target_lang=target, task=task) for p in paths)
    return translate_examples(model, exs, batch_size=batch_size, total=len(paths), progress=progress)


def translate_shar(model: Any, shar_dir: str | Path, *, batch_size: int = 32,
                   progress: bool = True) -> tuple[list[str], list[str], list[str]]:
    """``(hyps, refs, keys)`` over a Shar folder (audio or text), with the task and languages stored
    on each example; ``keys`` are ``"<task>:<src>-<tgt>"`` (see :func:`score`)."""
    from nemo_emmett.data.shar import count_examples, read_shar_dir

    refs: list[str] = []
    keys: list[str] = []
    hyps = translate_examples(model, _tap(read_shar_dir(shar_dir), refs, keys), batch_size=batch_size,
                              total=count_examples(shar_dir), progress=progress)
    return hyps, refs, keys


def translate_manifest(model: Any, manifest: str | Path, *, task: str = "st", source_lang: str | None = None,
                       target_lang: str | None = None, batch_size: int = 16,
                       progress: bool = True) -> tuple[list[str], list[str] | None, list[str]]:
    """``(hyps, refs, keys)`` over a NeMo manifest (``audio_filepath``, ``text`` = transcript, optional
    ``answer``/``target_text`` = translation, optional ``source_lang``/``target_lang``; the
    arguments are defaults for records without them). ``refs`` is None when some record has no
    reference for ``task`` (no translation for ``st``)."""
    from nemo_emmett.data.prepare.bitext import ManifestOptions, read_audio_rows

    if task not in ex_.AUDIO_TASKS:
        raise ValueError(f"task must be one of {ex_.AUDIO_TASKS} for audio, got {task!r}")
    exs, has_refs = [], True
    for row in read_audio_rows(ManifestOptions(str(manifest), source_lang=source_lang, target_lang=target_lang)):
        tgt_lang = row.source_lang if task == "asr" else row.target_lang
        if tgt_lang is None:
            raise ValueError(f"{row.where}: no target_lang (give the field or --target-lang)")
        ref = row.transcript if task == "asr" else row.translation
        has_refs = has_refs and ref is not None
        exs.append(audio_example(row.audio_path, source_lang=row.source_lang, target_lang=tgt_lang, task=task,
                                 transcript=row.transcript, target_text=ref or ""))
    hyps = translate_examples(model, exs, batch_size=batch_size, total=len(exs), progress=progress)
    return hyps, [ex_.target_text(e) for e in exs] if has_refs else None, [ex_.direction(e) for e in exs]


def audio_example(path: str | Path, *, source_lang: str, target_lang: str, task: str, transcript: str = "",
                  target_text: str = "") -> Example:
    """An audio example over a whole file; an unreadable or empty (0 samples) file is an error that names it."""
    from lhotse import Recording

    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"audio file {path!r} does not exist")
    try:
        rec = Recording.from_file(path, recording_id=path)
    except Exception as e:
        raise ValueError(f"cannot read audio file {path!r}: {e}") from e
    if rec.num_samples == 0:  # would reach the preprocessor as an empty signal (an IndexError there)
        raise ValueError(f"audio file {path!r} has no samples (0 s of audio): nothing to translate; "
                         "expected at least one sample (remove the file from the input)")
    return make_audio_example(recording=rec, transcript=transcript, source_lang=source_lang,
                              target_text=target_text, target_lang=target_lang, task=task,
                              dataset=TRANSLATE_DATASET, cut_id=path)


def score(hyps: Sequence[str], refs: Sequence[str], keys: Sequence[str]) -> dict[str, float]:
    """Corpus scores per key (``bleu/<key>``, ``chrf/<key>``, ``wer/<key>`` for asr, ``bleu/avg``)."""
    if not len(hyps) == len(refs) == len(keys):
        raise ValueError(f"{len(hyps)} hypotheses, {len(refs)} references and {len(keys)} keys: they must match")
    acc = ScoreAccumulator()
    for key in dict.fromkeys(keys):
        idx = [i for i, k in enumerate(keys) if k == key]
        acc.update(key, [hyps[i] for i in idx], [refs[i] for i in idx])
    return acc.compute()


def format_scores(scores: dict[str, float], keys: Sequence[str]) -> str:
    """One line per direction: ``st:en-de  n=100  BLEU 23.41  chrF 51.20  [WER 12.3%]``, then the
    sacrebleu signatures of those scores (``BLEU signature nrefs:1|...|tok:13a|..., chrF signature ...``)."""
    counts = Counter(keys)
    lines = []
    for key in sorted(counts):
        if f"bleu/{key}" not in scores:
            continue
        line = f"{key}  n={counts[key]}  BLEU {scores[f'bleu/{key}']:.2f}  chrF {scores[f'chrf/{key}']:.2f}"
        if f"wer/{key}" in scores:
            line += f"  WER {100 * scores[f'wer/{key}']:.1f}%"
        lines.append(line)
    if lines:
        lines.append(signature_text(scored_target_langs(scores)))
    return "\n".join(lines)


def scores_record(scores: dict[str, float], keys: Sequence[str]) -> dict[str, object]:
    """The scores as JSON-ready data: ``{"scores": {"bleu/st:en-de": ...}, "counts": {"st:en-de": n},
    "signatures": {"bleu": ..., "chrf": ...}}`` (sacrebleu's, :func:`~nemo_emmett.parts.metrics.score_signatures`)."""
    return {"scores": dict(sorted(scores.items())), "counts": dict(sorted(Counter(keys).items())),
            "signatures": score_signatures(scored_target_langs(scores))}


# ---- helpers -----------------------------------------------------------------------------------
def _tap(examples: Iterable[Example], refs: list[str], keys: list[str]) -> Iterator[Example]:
    for e in examples:
        refs.append(ex_.target_text(e))
        keys.append(ex_.direction(e))
        yield e


def _chunks(items: Iterable[Example], size: int) -> Iterator[list[Example]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _input_length(e: Example) -> float:
    return e.duration if ex_.is_audio(e) else float(len(ex_.source_text(e)))


def _length_sorted_batches(chunk: list[Example], batch_size: int) -> Iterator[list[int]]:
    """Index lists of homogeneous batches, longest first (an out-of-memory shows up at once)."""
    for audio in (True, False):
        idx = sorted((i for i, e in enumerate(chunk) if ex_.is_audio(e) == audio),
                     key=lambda i: _input_length(chunk[i]), reverse=True)
        for start in range(0, len(idx), batch_size):
            yield idx[start : start + batch_size]


def _batch(exs: list[Example]) -> Batch:
    lengths = [(_input_length(e), 0.0) for e in exs]
    return Batch(modality="audio" if ex_.is_audio(exs[0]) else "text", bucket=0,
                 max_input=max(i for i, _ in lengths), max_output=0.0, examples=exs, lengths=lengths)

