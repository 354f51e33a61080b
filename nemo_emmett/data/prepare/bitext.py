"""Convert common corpus layouts into Shar folders, one per (dataset, task, direction).

Layouts: line-aligned bitext (plain or .gz; many pairs through :mod:`nemo_emmett.data.prepare.templates`),
NeMo JSON manifests and tsv files with audio paths. Output, under ``<out_dir>/<dataset>/``::

    mt_en-de/                text Shar (text.NNNNNN.jsonl.gz)
    mt_en-de.complete.json   its completion marker, written last (``data/marker.py``)
    st_en-de/                audio Shar (cuts.NNNNNN.jsonl.gz + recording.NNNNNN.tar)
    summary.json             per folder: examples, dropped (per reason, and where), hours, tokens
    sources.yaml             the folders as tagged sources, to paste into a data config

Each folder is written under a temporary name and renamed into place when it is complete
(``output.py``); a re-run skips complete folders and redoes unfinished ones. The reports and
markers sit outside the shard folders because a stray file inside one breaks Shar reading.
Example ids are ``<dataset>-<src>-<tgt>-<lineno>`` (line number in the input file, from 1).
Bad input fails before anything is written where it can be checked up front (missing files,
unequal line counts, language codes); errors name the file (and line); nothing is dropped without
being counted in the summary.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from lhotse import Recording
from lhotse.serialization import open_best
from tqdm import tqdm

import nemo_emmett.data.examples as E
from nemo_emmett.data.prepare.output import DatasetOutput, FolderSummary, PrepareOptions
from nemo_emmett.data.prepare.templates import Mode, Pair, check_lang_code, corpus_paths

log = logging.getLogger(__name__)

@dataclass
class BitextOptions:
    src_template: str
    tgt_template: str
    pairs: list[Pair]
    mode: Mode = "directional"


@dataclass
class ManifestOptions:
    """A NeMo JSON manifest (one JSON object a line); relative audio paths are relative to its folder."""

    path: str
    audio_key: str = "audio_filepath"
    transcript_key: str = "text"
    translation_keys: tuple[str, ...] = ("answer", "target_text")  # first present: translation (st); none: asr
    source_lang_key: str = "source_lang"
    target_lang_key: str = "target_lang"
    source_lang: str | None = None  # for records without (or with an empty) language key
    target_lang: str | None = None


@dataclass
class TsvOptions(ManifestOptions):
    """A tab-separated file whose header row names the columns (the keys); no quoting."""

    audio_key: str = "audio"
    transcript_key: str = "transcript"
    translation_keys: tuple[str, ...] = ("translation",)  # optional column; without it every row is asr


@dataclass
class AudioRow:
    """One audio record from a manifest or tsv; ``where`` is ``file:line`` for messages."""

    where: str
    lineno: int
    audio_path: str
    transcript: str
    translation: str | None
    source_lang: str
    target_lang: str | None


def read_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """``(lineno, raw line)`` of a plain or .gz file; a broken file (truncated, bad CRC, not gzip)
    is an error naming it and the line it broke after."""
    lineno = 0
    try:
        with open_best(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                yield lineno, line
    except (EOFError, zlib.error, OSError) as e:
        what = "gzip file" if str(path).endswith(".gz") else "file"
        raise ValueError(f"{path}: cannot read it after line {lineno} ({type(e).__name__}: {e}); "
                         f"expected a complete, valid {what}") from e


def read_bitext(src_path: str, tgt_path: str, max_lines: int | None = None) -> Iterator[tuple[int, str, str]]:
    """``(lineno, source, target)`` of two line-aligned files (plain or .gz), lines stripped (and a
    UTF-8 byte order mark at the start of a file)."""
    for (lineno, s), (_, t) in zip(read_lines(src_path), read_lines(tgt_path)):
        if max_lines is not None and lineno > max_lines:
            return
        yield lineno, _decode(s, src_path, lineno), _decode(t, tgt_path, lineno)


def count_lines(path: str) -> int:
    """Lines in a plain or .gz file (a last line without a newline counts)."""
    return sum(1 for _ in read_lines(path))


def read_records(opts: ManifestOptions) -> Iterator[tuple[int, dict | None]]:
    """``(lineno, record)`` of a manifest, or of a tsv when ``opts`` is :class:`TsvOptions`;
    ``record`` is None for a blank line."""
    path = _existing(opts.path, "tsv file" if isinstance(opts, TsvOptions) else "Manifest")
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a byte order mark is not text
        if isinstance(opts, TsvOptions):
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(rows, None)
            if not header:
                raise ValueError(f"{path}: no header row; a tsv needs one naming its columns")
            for lineno, values in enumerate(rows, start=2):
                if values and len(values) != len(header):
                    raise ValueError(f"{path}:{lineno}: {len(values)} tab-separated fields, "
                                     f"but the header row has {len(header)}: {header}")
                yield lineno, dict(zip(header, values)) if values else None
            return
        for lineno, line in enumerate(f, start=1):
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from e
            if not isinstance(record, dict | None):
                raise ValueError(f"{path}:{lineno}: a manifest line must be a JSON object")
            yield lineno, record


def read_audio_rows(opts: ManifestOptions, max_lines: int | None = None) -> Iterator[AudioRow]:
    """The audio records of a manifest or tsv; blank lines are skipped."""
    first_line = 2 if isinstance(opts, TsvOptions) else 1
    for lineno, rec in read_records(opts):
        if max_lines is not None and lineno - first_line >= max_lines:
            return
        if rec is None:
            continue
        where = f"{opts.path}:{lineno}"
        for key in (opts.audio_key, opts.transcript_key):
            if key not in rec:
                raise ValueError(f"{where}: no {key!r} field (found {sorted(rec)})")
        if rec.get("offset"):
            raise ValueError(f"{where}: 'offset' is not supported; cut the audio into one file per example")
        translation = next((rec[k] for k in opts.translation_keys if k in rec), None)
        yield AudioRow(
            where=where,
            lineno=lineno,
            audio_path=_resolve(rec[opts.audio_key], opts.path),
            transcript=str(rec[opts.transcript_key]).strip(),
            translation=None if translation is None else str(translation).strip(),
            source_lang=_lang(rec.get(opts.source_lang_key) or opts.source_lang, "source_lang", where),
            target_lang=_lang(rec.get(opts.target_lang_key) or opts.target_lang, "target_lang", where,
                              required=False),
        )


def prepare_bitext(bitext: BitextOptions, opts: PrepareOptions) -> list[FolderSummary]:
    """Text MT folders ``mt_<src>-<tgt>`` for every direction in ``bitext.pairs``."""
    paths = corpus_paths(bitext.src_template, bitext.tgt_template, bitext.pairs, bitext.mode)
    totals: dict[str, int] = {}
    for (src, tgt), (sp, tp) in paths.items():  # check everything before writing anything
        for p in (sp, tp):
            if p not in totals:
                totals[p] = count_lines(_existing(p, f"Bitext file for {src}-{tgt}"))
        if totals[sp] != totals[tp]:
            raise ValueError(f"Bitext sides differ in length for {src}-{tgt}: {sp!r} has {totals[sp]} lines, "
                             f"{tp!r} has {totals[tp]}")
    with DatasetOutput(opts) as out:
        todo = out.start([("mt", src, tgt) for src, tgt in paths])
        for (src, tgt), (sp, tp) in paths.items():
            key = ("mt", src, tgt)
            if key not in todo:
                continue
            out.open_folder(key)
            total = min(totals[sp], opts.max_lines or totals[sp])
            lines = read_bitext(sp, tp, opts.max_lines)
            for lineno, s, t in tqdm(lines, total=total, desc=f"{opts.dataset} {src}-{tgt}", disable=not opts.progress):
                empty = [f"{p}:{lineno}" for p, text in ((sp, s), (tp, t)) if not text]
                if empty:
                    out.drop_empty(key, empty[0])
                    continue
                example_id = f"{opts.dataset}-{src}-{tgt}-{lineno}"
                out.write(E.make_text_example(example_id=example_id, source_text=s, target_text=t,
                                              source_lang=src, target_lang=tgt, dataset=opts.dataset))
            out.finish_folder(key)  # complete and in place before the next direction starts
    return out.summaries


def prepare_audio(listing: ManifestOptions, opts: PrepareOptions) -> list[FolderSummary]:
    """ST folders (records with a translation) and ASR folders (without) from a manifest or tsv.
    Audio with 0 samples is dropped (counted as ``empty_audio``); multi-channel audio is stored as
    the mean of its channels (counted, warned once per folder); the sampling rate is kept (loading
    resamples to ``data.sampling_rate``)."""
    keys = {row.lineno: _audio_key(row) for row in read_audio_rows(listing, opts.max_lines)}  # no audio read
    with DatasetOutput(opts) as out:
        todo = set(out.start(list(keys.values())))
        rows = read_audio_rows(listing, opts.max_lines)
        for row in tqdm(rows, desc=opts.dataset, unit="ex", disable=not opts.progress):
            key = keys[row.lineno]
            if key not in todo:
                continue
            task, _, tgt_lang = key
            if not row.transcript or row.translation == "":
                out.drop_empty(key, row.where)
                continue
            cut_id = f"{opts.dataset}-{row.source_lang}-{tgt_lang}-{row.lineno}"
            try:
                recording = Recording.from_file(row.audio_path, recording_id=cut_id)
            except Exception as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ValueError(f"{row.where}: cannot read audio {row.audio_path!r} ({reason})") from e
            if recording.num_samples == 0:
                log.warning("%s: audio %r has no samples; dropped (counted in summary.json)", row.where, row.audio_path)
                out.drop(key, f"{row.where} {row.audio_path}", "empty_audio")
                continue
            if recording.num_channels > 1:
                summary = out.open_folder(key)
                if not summary.downmixed:
                    log.warning("%s: audio %r has %d channels; storing their mean (further multi-channel files of "
                                "%s are counted in summary.json)", row.where, row.audio_path, recording.num_channels,
                                summary.name)
                summary.downmixed += 1
                recording = _downmix(recording)
            out.write(E.make_audio_example(
                recording=recording, transcript=row.transcript, source_lang=row.source_lang,
                target_text=row.transcript if task == "asr" else row.translation, target_lang=tgt_lang,
                task=task, dataset=opts.dataset, cut_id=cut_id,
            ))
    return out.summaries


def _audio_key(row: AudioRow) -> tuple[str, str, str]:
    if row.translation is None:
        return "asr", row.source_lang, row.source_lang
    return "st", row.source_lang, _lang(row.target_lang, "target_lang", row.where)


def _downmix(recording: Recording) -> Recording:
    """A mono recording (in memory, lossless FLAC) of the mean of ``recording``'s channels."""
    audio = recording.load_audio().mean(axis=0)  # (C, T) -> (T,)
    buf = io.BytesIO()
    sf.write(buf, audio, recording.sampling_rate, format="FLAC", subtype="PCM_24")
    return Recording.from_bytes(buf.getvalue(), recording_id=recording.id)


def _existing(path: str, what: str) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    return str(path)


def _decode(line: bytes, path: str, lineno: int) -> str:
    try:
        return line.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid UTF-8 ({e})") from e


def _resolve(audio_path: str, listing: str) -> str:
    """Relative audio paths are relative to the folder of the manifest or tsv that names them."""
    p = Path(audio_path)
    return str(p if p.is_absolute() else Path(listing).parent / p)


def _lang(value: object, name: str, where: str, *, required: bool = True) -> str | None:
    if value is None or value == "":
        if not required:
            return None
        raise ValueError(f"{where}: no {name} (give the field/column or the default, e.g. --{name.replace('_', '-')})")
    return check_lang_code(value, f"{where}: {name}")
