"""One preparation run's output: Shar folders renamed into place only when complete, and the reports.

A folder ``<out>/<dataset>/mt_en-de/`` is written as ``mt_en-de.partial-<pid>/``; when its direction is
done its writer is closed, its completion marker (``mt_en-de.complete.json``: ``data/marker.py``) is
written, and the folder is renamed (one ``os.replace``). A run killed half-way leaves only ``.partial``
folders, which the next run removes and redoes; a folder that is complete is kept and skipped (logged),
unless ``overwrite``. All of this is decided by :meth:`DatasetOutput.start`, before any work (speech
synthesis included).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml

import nemo_emmett.data.examples as E
from nemo_emmett.data.marker import marker_path, problems, remove_marker
from nemo_emmett.data.shar import ExampleSharWriter, list_shards

log = logging.getLogger(__name__)

EmptyLinePolicy = Literal["error", "skip"]
Key = tuple[str, str, str]  # (task, source_lang, target_lang)
_SHOWN_DROPS = 5  # drop locations kept per folder in the summary and the warning
PARTIAL = ".partial-"


@dataclass
class PrepareOptions:
    """Settings shared by every layout."""

    dataset: str
    out_dir: str
    shard_size: int = 1000
    empty_lines: EmptyLinePolicy = "error"  # error: stop at file:line; skip: drop, count, warn
    max_lines: int | None = None  # read at most this many lines (records) of each input file
    tokenizer: str | None = None  # SentencePiece .model: count its tokens instead of words
    overwrite: bool = False  # redo output folders that are complete (otherwise they are kept and skipped)
    audio_format: str = "flac"
    progress: bool = True


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
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    """``empty_text`` (an empty source or target, with ``empty_lines: skip``), ``empty_audio`` (0 samples)."""
    drop_locations: list[str] = field(default_factory=list)
    downmixed: int = 0
    """Multi-channel audio files stored as the mean of their channels."""
    hours: float = 0.0
    source_tokens: int = 0
    target_tokens: int = 0
    token_unit: str = "words"


class DatasetOutput:
    """The Shar folders of one dataset: which to write, their writers and counts, and the reports."""

    def __init__(self, opts: PrepareOptions):
        self.opts = opts
        self.root = Path(opts.out_dir) / opts.dataset
        self.count_tokens, self.token_unit = make_token_counter(opts.tokenizer)
        self._folders: dict[Key, FolderSummary] = {}
        self._writers: dict[Key, ExampleSharWriter] = {}
        self._done: set[Key] = set()

    @property
    def summaries(self) -> list[FolderSummary]:
        return list(self._folders.values())

    def final_path(self, key: Key) -> Path:
        task, src, tgt = key
        return self.root / f"{task}_{src}-{tgt}"

    def start(self, keys: list[Key]) -> list[Key]:
        """The folders of ``keys`` still to write: complete ones are skipped (their summary comes from
        their marker) unless ``overwrite``; partial ones left by a killed run are removed. A folder
        without a valid marker under its final name is an error unless ``overwrite``."""
        todo = []
        for key in dict.fromkeys(keys):
            path = self.final_path(key)
            for stale in sorted(self.root.glob(f"{path.name}{PARTIAL}*")):
                log.warning("Removing %s: an unfinished earlier run; %s is prepared again", stale, path.name)
                shutil.rmtree(stale, ignore_errors=True)
            if path.exists() and not self.opts.overwrite:
                marker, wrong = _folder_problems(path)
                if wrong:
                    raise FileExistsError(f"Output folder {str(path)!r} exists but is not complete: {'; '.join(wrong)}. "
                                          "Pass --overwrite to prepare it again (or remove it)")
                summary = FolderSummary(**marker["extra"]["summary"])
                log.info("Skipping %s: complete (%d examples); pass --overwrite to prepare it again",
                         path, summary.num_examples)
                self._folders[key] = summary
                self._done.add(key)
                continue
            todo.append(key)
        return todo

    def open_folder(self, key: Key) -> FolderSummary:
        if key in self._done:
            raise RuntimeError(f"{self.final_path(key)} is already finished")
        if key not in self._folders:
            task, src, tgt = key
            self._folders[key] = FolderSummary(
                name=f"{self.opts.dataset}_{task}_{src}-{tgt}", path=str(self.final_path(key).resolve()),
                task=task, modality="text" if task == "mt" else "audio", source_lang=src, target_lang=tgt,
                dataset=self.opts.dataset, token_unit=self.token_unit,
            )
        return self._folders[key]

    def drop(self, key: Key, where: str, reason: str) -> None:
        """Count (and remember where) an example left out for ``reason``."""
        summary = self.open_folder(key)
        summary.dropped += 1
        summary.dropped_by_reason[reason] = summary.dropped_by_reason.get(reason, 0) + 1
        if len(summary.drop_locations) < _SHOWN_DROPS:
            summary.drop_locations.append(where)

    def drop_empty(self, key: Key, where: str) -> None:
        if self.opts.empty_lines != "skip":
            raise ValueError(f"{where}: empty source or target text (pass empty_lines='skip' / "
                             f"--empty-lines skip to drop such examples)")
        self.drop(key, where, "empty_text")

    def write(self, ex: E.Example) -> None:
        key = (E.task(ex), E.source_lang(ex), E.target_lang(ex))
        summary = self.open_folder(key)
        if key not in self._writers:
            self._writers[key] = ExampleSharWriter(self._partial(key), kind=summary.modality,
                                                   shard_size=self.opts.shard_size, audio_format=self.opts.audio_format)
        self._writers[key].write(ex)
        summary.num_examples += 1
        summary.source_tokens += self.count_tokens(E.source_text(ex))
        summary.target_tokens += self.count_tokens(E.target_text(ex))
        if E.is_audio(ex):
            summary.hours += ex.duration / 3600

    def finish_folder(self, key: Key) -> None:
        """Close the folder's writer, write its marker, rename it into place."""
        if key in self._done or key not in self._folders:
            return
        summary, final = self._folders[key], self.final_path(key)
        self._done.add(key)
        if final.exists():  # only with overwrite (start() refused it otherwise): unmark it first
            remove_marker(final)
            shutil.rmtree(final)
        writer = self._writers.pop(key, None)
        if writer is None:  # every example of it was dropped: no folder
            return
        writer.finish(marker_for=final, skipped=summary.dropped_by_reason, extra={"summary": asdict(summary)})
        os.replace(writer.out_dir, final)

    def _partial(self, key: Key) -> Path:
        return self.root / f"{self.final_path(key).name}{PARTIAL}{os.getpid()}"

    def __enter__(self) -> DatasetOutput:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:  # an error: nothing half-written stays (a kill leaves .partial folders)
            for writer in self._writers.values():
                writer.close()
                shutil.rmtree(writer.out_dir, ignore_errors=True)
            return
        for key in list(self._folders):
            self.finish_folder(key)
        for s in self.summaries:
            if s.dropped:
                log.warning("%s: dropped %d example(s) (%s); first at %s", s.name, s.dropped,
                            ", ".join(f"{r}: {n}" for r, n in sorted(s.dropped_by_reason.items())),
                            ", ".join(s.drop_locations))
            if s.downmixed:
                log.warning("%s: %d multi-channel audio file(s) stored as the mean of their channels",
                            s.name, s.downmixed)
        write_reports(self.root, self.summaries)


def _folder_problems(path: Path) -> tuple[dict | None, list[str]]:
    try:
        names = {Path(p).name for s in list_shards(path) for p in s.paths.values()}
    except ValueError as e:
        return None, [str(e)]
    marker, wrong = problems(path, names)
    if not wrong and "summary" not in (marker.get("extra") or {}):
        wrong = [f"its marker {str(marker_path(path))!r} was not written by emmett-prepare"]
    return marker, wrong


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

    if not Path(tokenizer).is_file():
        raise FileNotFoundError(f"SentencePiece model {str(tokenizer)!r} does not exist")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    except (RuntimeError, OSError) as e:
        raise ValueError(f"Cannot load SentencePiece model {tokenizer!r} ({e})") from e
    return (lambda text: len(sp.encode(text))), "sentencepiece"
