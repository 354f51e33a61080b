"""Convert common corpus layouts into Shar folders, one per (dataset, task, direction).

Layouts: line-aligned bitext (plain or .gz; many pairs through :mod:`nemo_emmett.data.prepare.templates`),
NeMo JSON manifests and tsv files with audio paths. Output, under ``<out_dir>/<dataset>/``::

    mt_en-de/        text Shar (text.NNNNNN.jsonl.gz)
    st_en-de/        audio Shar (cuts.NNNNNN.jsonl.gz + recording.NNNNNN.tar)
    summary.json     per folder: examples, dropped (and where), hours, tokens
    sources.yaml     the folders as tagged sources, to paste into a data config

The reports sit outside the shard folders because a stray file inside one breaks Shar reading.
Example ids are ``<dataset>-<src>-<tgt>-<lineno>`` (line number in the input file, from 1).
Bad input fails before anything is written where it can be checked up front (missing files,
unequal line counts); nothing is dropped without being counted in the summary.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from lhotse import Recording
from lhotse.serialization import open_best
from tqdm import tqdm

import nemo_emmett.data.examples as E
from nemo_emmett.data.prepare.templates import Mode, Pair, corpus_paths
from nemo_emmett.data.shar import ExampleSharWriter

log = logging.getLogger(__name__)

EmptyLinePolicy = Literal["error", "skip"]
_SHOWN_DROPS = 5  # drop locations kept per folder in the summary and the warning


@dataclass
class PrepareOptions:
    """Settings shared by every layout."""

    dataset: str
    out_dir: str
    shard_size: int = 1000
    empty_lines: EmptyLinePolicy = "error"  # error: stop at file:line; skip: drop, count, warn
    max_lines: int | None = None  # read at most this many lines (records) of each input file
    tokenizer: str | None = None  # SentencePiece .model: count its tokens instead of words
    overwrite: bool = False  # replace output folders that exist (otherwise an error)
    audio_format: str = "flac"
    progress: bool = True


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


@dataclass
class FolderSummary:
    """One output folder: its source tags (as in ``sources.yaml``) and what went into it."""

    name: str
    path: str
    task: str
    modality: str
    source_lang: str
    target_lang: str
    dataset: str
    num_examples: int = 0
    dropped: int = 0
    drop_locations: list[str] = field(default_factory=list)
    hours: float = 0.0
    source_tokens: int = 0
    target_tokens: int = 0
    token_unit: str = "words"


def read_bitext(src_path: str, tgt_path: str, max_lines: int | None = None) -> Iterator[tuple[int, str, str]]:
    """``(lineno, source, target)`` of two line-aligned files (plain or .gz), lines stripped."""
    with open_best(src_path, "rb") as fs, open_best(tgt_path, "rb") as ft:
        for lineno, (s, t) in enumerate(zip(fs, ft), start=1):
            if max_lines is not None and lineno > max_lines:
                return
            yield lineno, _decode(s, src_path, lineno), _decode(t, tgt_path, lineno)


def count_lines(path: str) -> int:
    """Lines in a plain or .gz file (a last line without a newline counts)."""
    with open_best(path, "rb") as f:
        return sum(1 for _ in f)


def read_records(opts: ManifestOptions) -> Iterator[tuple[int, dict | None]]:
    """``(lineno, record)`` of a manifest, or of a tsv when ``opts`` is :class:`TsvOptions`;
    ``record`` is None for a blank line."""
    path = _existing(opts.path, "tsv file" if isinstance(opts, TsvOptions) else "Manifest")
    with open(path, encoding="utf-8", newline="") as f:
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
            target_lang=rec.get(opts.target_lang_key) or opts.target_lang,
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
        for (src, tgt), (sp, tp) in paths.items():
            out.open_folder("mt", src, tgt)
            total = min(totals[sp], opts.max_lines or totals[sp])
            lines = read_bitext(sp, tp, opts.max_lines)
            for lineno, s, t in tqdm(lines, total=total, desc=f"{opts.dataset} {src}-{tgt}", disable=not opts.progress):
                empty = [f"{p}:{lineno}" for p, text in ((sp, s), (tp, t)) if not text]
                if empty:
                    out.drop_empty("mt", src, tgt, empty[0])
                    continue
                example_id = f"{opts.dataset}-{src}-{tgt}-{lineno}"
                out.write(E.make_text_example(example_id=example_id, source_text=s, target_text=t,
                                              source_lang=src, target_lang=tgt, dataset=opts.dataset))
    return out.summaries


def prepare_audio(listing: ManifestOptions, opts: PrepareOptions) -> list[FolderSummary]:
    """ST folders (records with a translation) and ASR folders (without) from a manifest or tsv."""
    rows = read_audio_rows(listing, opts.max_lines)
    with DatasetOutput(opts) as out:
        for row in tqdm(rows, desc=opts.dataset, unit="ex", disable=not opts.progress):
            task = "st" if row.translation is not None else "asr"
            tgt_lang = row.source_lang if task == "asr" else _lang(row.target_lang, "target_lang", row.where)
            if not row.transcript or row.translation == "":
                out.drop_empty(task, row.source_lang, tgt_lang, row.where)
                continue
            cut_id = f"{opts.dataset}-{row.source_lang}-{tgt_lang}-{row.lineno}"
            try:
                recording = Recording.from_file(row.audio_path, recording_id=cut_id)
            except Exception as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ValueError(f"{row.where}: cannot read audio {row.audio_path!r} ({reason})") from e
            out.write(E.make_audio_example(
                recording=recording, transcript=row.transcript, source_lang=row.source_lang,
                target_text=row.transcript if task == "asr" else row.translation, target_lang=tgt_lang,
                task=task, dataset=opts.dataset, cut_id=cut_id,
            ))
    return out.summaries


class DatasetOutput:
    """The Shar writers of one dataset's folders, their counts, and the reports written on close."""

    def __init__(self, opts: PrepareOptions):
        self.opts = opts
        self.root = Path(opts.out_dir) / opts.dataset
        self.count_tokens, self.token_unit = make_token_counter(opts.tokenizer)
        self._folders: dict[tuple[str, str, str], FolderSummary] = {}
        self._writers: dict[tuple[str, str, str], ExampleSharWriter] = {}

    @property
    def summaries(self) -> list[FolderSummary]:
        return list(self._folders.values())

    def open_folder(self, task: str, src: str, tgt: str) -> FolderSummary:
        key = (task, src, tgt)
        if key not in self._folders:
            path = self.root / f"{task}_{src}-{tgt}"
            if path.exists() and any(path.iterdir()):
                if not self.opts.overwrite:
                    raise FileExistsError(f"Output folder {str(path)!r} already exists; remove it, choose another "
                                          f"--dataset/--out, or pass --overwrite")
                shutil.rmtree(path)
            self._folders[key] = FolderSummary(
                name=f"{self.opts.dataset}_{task}_{src}-{tgt}", path=str(path.resolve()), task=task,
                modality="text" if task == "mt" else "audio", source_lang=src, target_lang=tgt,
                dataset=self.opts.dataset, token_unit=self.token_unit,
            )
        return self._folders[key]

    def drop_empty(self, task: str, src: str, tgt: str, where: str) -> None:
        if self.opts.empty_lines != "skip":
            raise ValueError(f"{where}: empty source or target text (pass empty_lines='skip' / "
                             f"--empty-lines skip to drop such examples)")
        summary = self.open_folder(task, src, tgt)
        summary.dropped += 1
        if len(summary.drop_locations) < _SHOWN_DROPS:
            summary.drop_locations.append(where)

    def write(self, ex: E.Example) -> None:
        key = (E.task(ex), E.source_lang(ex), E.target_lang(ex))
        summary = self.open_folder(*key)
        if key not in self._writers:
            self._writers[key] = ExampleSharWriter(summary.path, kind=summary.modality,
                                                   shard_size=self.opts.shard_size, audio_format=self.opts.audio_format)
        self._writers[key].write(ex)
        summary.num_examples += 1
        summary.source_tokens += self.count_tokens(E.source_text(ex))
        summary.target_tokens += self.count_tokens(E.target_text(ex))
        if E.is_audio(ex):
            summary.hours += ex.duration / 3600

    def __enter__(self) -> DatasetOutput:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        for writer in self._writers.values():
            writer.close()
        if exc_type is None:
            for s in self.summaries:
                if s.dropped:
                    log.warning("%s: dropped %d example(s) with an empty source or target; first at %s",
                                s.name, s.dropped, ", ".join(s.drop_locations))
            write_reports(self.root, self.summaries)


def write_reports(root: Path, summaries: list[FolderSummary]) -> None:
    """``summary.json`` and ``sources.yaml`` in ``root``, merged with the folders of earlier runs."""
    summary_path = root / "summary.json"
    merged = {s.name: asdict(s) for s in summaries}
    if summary_path.exists():
        try:
            earlier = json.loads(summary_path.read_text())["folders"]
        except (ValueError, KeyError) as e:
            raise ValueError(f"{summary_path}: not a summary written by this tool ({e}); remove it") from e
        for old in earlier:
            if old["name"] not in merged and Path(old["path"]).exists():
                merged[old["name"]] = old
    folders = [merged[k] for k in sorted(merged)]
    root.mkdir(parents=True, exist_ok=True)
    report = {"dataset": root.name, "folders": folders}
    summary_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    tags = ("name", "path", "task", "modality", "source_lang", "target_lang", "dataset", "num_examples")
    sources = [{k: f[k] for k in tags} for f in folders if f["num_examples"] > 0]
    header = f"# Shar sources of dataset {root.name!r}: paste under data.train_sources (or validation_sources).\n"
    (root / "sources.yaml").write_text(header + yaml.safe_dump(sources, sort_keys=False, allow_unicode=True))


def make_token_counter(tokenizer: str | None) -> tuple[Callable[[str], int], str]:
    """``(count, unit)``: whitespace words, or SentencePiece pieces of the model at ``tokenizer``."""
    if tokenizer is None:
        return (lambda text: len(text.split())), "words"
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=_existing(tokenizer, "SentencePiece model"))
    except (RuntimeError, OSError) as e:
        raise ValueError(f"Cannot load SentencePiece model {tokenizer!r} ({e})") from e
    return (lambda text: len(sp.encode(text))), "sentencepiece"


def _existing(path: str, what: str) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    return str(path)


def _decode(line: bytes, path: str, lineno: int) -> str:
    try:
        return line.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid UTF-8 ({e})") from e


def _resolve(audio_path: str, listing: str) -> str:
    """Relative audio paths are relative to the folder of the manifest or tsv that names them."""
    p = Path(audio_path)
    return str(p if p.is_absolute() else Path(listing).parent / p)


def _lang(value: object, name: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: no {name} (give the field/column or the default, e.g. --{name.replace('_', '-')})")
    return value
