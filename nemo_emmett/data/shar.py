"""Reading and writing examples as lhotse Shar.

An *audio* Shar folder is plain lhotse Shar: ``cuts.NNNNNN.jsonl.gz`` plus ``recording.NNNNNN.tar``.
A *text* Shar folder holds only ``text.NNNNNN.jsonl.gz`` (one ``TextPairExample`` record a line).
Writers create their folder; readers warn about, and otherwise ignore, files that are not shards
(lhotse's own reader fails on any stray file in a Shar folder). A source may instead be a *shard listing*
(``<name>.shards.json``, ``data/shard_list.py``): shard files or URLs of a foreign Shar, read in place
and tagged as they are read; every function here takes either.

A folder is complete when its marker (``<name>.complete.json``, beside it: ``data/marker.py``) lists
exactly its shards. :func:`count_examples` and :func:`read_shar_dir`, like ``data.plan.resolve_sources``
for training, refuse a folder without one (``allow_incomplete=True``: a warning); :func:`list_shards`
only lists (the loaders' workers call it on sources already checked). A listing is its own marker.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lhotse.lazy import count_newlines_fast
from lhotse.serialization import open_best
from lhotse.shar import LazySharIterator, SharWriter
from lhotse.shar.writers import JsonlShardWriter

from nemo_emmett.data.examples import Example, is_audio, text_example_from_dict, text_example_to_dict
from nemo_emmett.data.foreign import Tagging, tag_cut
from nemo_emmett.data.marker import check_complete, describe, make_marker, write_marker
from nemo_emmett.data.shard_list import is_shard_list, is_url, load_shard_list, shard_paths

log = logging.getLogger(__name__)

Kind = Literal["audio", "text"]
_SHARD_RE = re.compile(r"^(?P<field>[a-z_]+)\.(?P<idx>\d{6})\.(?P<ext>jsonl\.gz|jsonl|tar|tar\.gz)$")


@dataclass(frozen=True)
class Shard:
    """One shard: ``paths`` maps a field (``cuts``, ``recording`` or ``text``) to its file or URL."""

    kind: Kind
    paths: dict[str, str]
    index: int = 0
    """Its place in the folder or listing (what a listed shard's example ids hold)."""
    tagging: Tagging | None = None
    """A listed foreign shard: how its cuts become our examples as they are read; None: already ours."""

    @property
    def index_file(self) -> str:
        """The jsonl file with one line per example."""
        return self.paths["cuts" if self.kind == "audio" else "text"]


def list_shards(shar_dir: str | Path) -> list[Shard]:
    """The shards of a Shar folder (or a shard listing), in index order."""
    if is_shard_list(shar_dir):
        listing = load_shard_list(shar_dir)
        tagging = Tagging(**listing["tagging"]) if listing.get("tagging") else None
        return [Shard(listing["kind"], paths, index=i, tagging=tagging) for i, paths in enumerate(shard_paths(listing))]
    shar_dir = Path(shar_dir)
    if not shar_dir.is_dir():
        raise FileNotFoundError(f"Shar folder {str(shar_dir)!r} does not exist (prepare it with examples/prepare_data.py)")
    by_field: dict[str, dict[int, str]] = {}
    for p in sorted(shar_dir.iterdir()):
        m = _SHARD_RE.match(p.name)
        if m is None or not p.is_file():
            log.warning("Ignoring %s: not a Shar shard file (expected <field>.NNNNNN.jsonl.gz or .tar)", p)
            continue
        by_field.setdefault(m["field"], {})[int(m["idx"])] = str(p)
    if "cuts" in by_field and "text" in by_field:
        raise ValueError(f"Shar folder {str(shar_dir)!r} mixes audio (cuts.*) and text (text.*) shards; keep one per folder")
    if "cuts" in by_field:
        kind: Kind = "audio"
        index = by_field["cuts"]
    elif "text" in by_field:
        kind = "text"
        index = by_field["text"]
        if len(by_field) > 1:
            raise ValueError(f"Text Shar folder {str(shar_dir)!r} has extra fields {sorted(set(by_field) - {'text'})}")
    else:
        raise ValueError(f"{str(shar_dir)!r} holds no Shar shards (no cuts.NNNNNN.jsonl.gz or text.NNNNNN.jsonl.gz files)")
    for field, files in by_field.items():
        if sorted(files) != sorted(index):
            raise ValueError(
                f"Shar folder {str(shar_dir)!r}: field {field!r} has shards {sorted(files)} but the index has {sorted(index)}"
            )
    return [Shard(kind, {field: files[i] for field, files in by_field.items()}, index=i) for i in sorted(index)]


def check_folder(shar_dir: str | Path, *, allow_incomplete: bool = False) -> dict | None:
    """The folder's completion marker; an error naming the folder when it has none or its shards
    disagree with it (with ``allow_incomplete``: a warning and None). A listing is its own marker."""
    if is_shard_list(shar_dir):
        return load_shard_list(shar_dir)
    names = {Path(p).name for s in list_shards(shar_dir) for p in s.paths.values()}
    return check_complete(shar_dir, names, allow_incomplete=allow_incomplete)


def count_examples(shar_dir: str | Path, *, allow_incomplete: bool = False) -> int:
    """Number of examples in a complete Shar folder, from its marker (or, for an incomplete folder
    read with ``allow_incomplete``, from line counts). No audio is read."""
    marker = check_folder(shar_dir, allow_incomplete=allow_incomplete)
    if marker is not None:
        return int(marker["num_examples"])
    return sum(count_newlines_fast(s.index_file) for s in list_shards(shar_dir))


def content_key(shar_dir: str | Path, *, allow_incomplete: bool = False) -> dict[str, Any]:
    """What a cache of anything read from this folder keys on, so that a folder re-prepared in place
    with other content gets a new entry: its marker's fingerprint (shard names, sizes and example
    counts) and examples; without a marker (``allow_incomplete``), each shard file's name, size and
    modification time. Cheap: no shard is read (a listing: its fingerprint of URLs, counts and tagging)."""
    marker = check_folder(shar_dir, allow_incomplete=allow_incomplete)
    if marker is not None:
        return {"fingerprint": marker["fingerprint"], "num_examples": int(marker["num_examples"])}
    files = sorted(Path(p) for s in list_shards(shar_dir) for p in s.paths.values())
    return {"files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]}


CORRUPT = (EOFError, tarfile.ReadError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError)
"""What a truncated or damaged shard raises while it is read (without naming it)."""


class CorruptShardError(RuntimeError):
    """A shard file could not be read to its end: truncated, not gzip, or not a tar."""


class ShardReadError(RuntimeError):
    """A listed shard (a file or URL of a shard listing) could not be opened or read."""


def read_shard(shard: Shard, *, with_audio: bool = True, source: str | None = None) -> Iterator[Example]:
    """Examples of one shard in stored order. Audio cuts carry their audio in memory, or, with
    ``with_audio=False``, only their metadata (durations, texts), read from the jsonl alone.
    A damaged file raises :class:`CorruptShardError` naming the shard's files and ``source``; a listed
    shard that cannot be read (an unreachable URL), :class:`ShardReadError` naming its URLs and ``source``.
    A listed foreign shard's cuts are tagged (:func:`~nemo_emmett.data.foreign.tag_cut`), those without
    text dropped: the same examples, in the same order, on every read."""
    if shard.tagging is None:
        yield from _guarded(shard, with_audio=with_audio, source=source)
        return
    t = shard.tagging
    for k, cut in enumerate(_guarded(shard, with_audio=with_audio, source=source)):
        ex = tag_cut(cut, t, f"{t.dataset}-{t.source_lang}-{t.target_lang}-{shard.index:06d}-{k + 1:07d}",
                     f"{f'source {source!r}, ' if source else ''}shard {shard.paths['cuts']!r} (#{k + 1})")
        if ex is not None:
            yield ex


def _guarded(shard: Shard, *, with_audio: bool, source: str | None) -> Iterator[Example]:
    where = f"source {source!r}, " if source else ""
    if shard.tagging is not None or any(is_url(p) for p in shard.paths.values()):  # errors of URLs name none
        try:
            yield from _read_shard(shard, with_audio=with_audio)
        except Exception as e:
            cause = e.__cause__ or e.__context__
            if cause is not None and str(e).startswith("Error trying to open"):  # open_best hides why
                e = cause
            why = f"{type(e).__name__}: {e}"
            files = ", ".join(repr(p) for p in (shard.paths if with_audio else {"cuts": shard.paths["cuts"]}).values())
            raise ShardReadError(f"{where}cannot read shard {shard.index} ({files}): {why}. Check that the "
                                 "URLs are reachable from here (credentials, endpoint) and the files exist") from e
        return
    try:
        yield from _read_shard(shard, with_audio=with_audio)
    except CORRUPT as e:
        files = ", ".join(shard.paths.values())
        raise CorruptShardError(
            f"{where}Shar folder {str(Path(shard.index_file).parent)!r}: cannot read shard {files} "
            f"({type(e).__name__}: {e}); the file is truncated or damaged: re-run the preparation that wrote it"
        ) from e


def _read_shard(shard: Shard, *, with_audio: bool) -> Iterator[Example]:
    if shard.kind == "audio":
        fields = shard.paths if with_audio else {"cuts": shard.paths["cuts"]}
        yield from LazySharIterator(fields={k: [v] for k, v in fields.items()})
        return
    path = shard.paths["text"]
    with open_best(path, "r") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from e
            yield text_example_from_dict(record, where=f"{path}:{lineno}")


def read_shar_dir(shar_dir: str | Path, *, with_audio: bool = True,
                  allow_incomplete: bool = False) -> Iterator[Example]:
    """Every example of a complete Shar folder (checked before the first one is read)."""
    check_folder(shar_dir, allow_incomplete=allow_incomplete)
    for shard in list_shards(shar_dir):
        yield from read_shard(shard, with_audio=with_audio)


class ExampleSharWriter:
    """Writes examples of one kind into a Shar folder (created if missing)::

        with ExampleSharWriter(out_dir, kind="audio", shard_size=1000) as w:
            for ex in examples:
                w.write(ex)

    Leaving the ``with`` block without an error calls :meth:`finish`, which writes the folder's
    completion marker; after an error (or a bare :meth:`close`) the folder stays unmarked, so that
    readers refuse it.
    """

    def __init__(self, out_dir: str | Path, *, kind: Kind, shard_size: int = 1000, audio_format: str = "flac"):
        self.out_dir = Path(out_dir)
        self.kind = kind
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if kind == "audio":
            self._writer = SharWriter(str(self.out_dir), fields={"recording": audio_format}, shard_size=shard_size)
        else:
            self._writer = JsonlShardWriter(str(self.out_dir / "text.%06d.jsonl.gz"), shard_size=shard_size)
        self.num_written = 0

    def write(self, ex: Example) -> None:
        if is_audio(ex) != (self.kind == "audio"):
            raise TypeError(f"{self.out_dir}: cannot write a {'audio' if is_audio(ex) else 'text'} example "
                            f"into a {self.kind} Shar folder")
        self._writer.write(ex if self.kind == "audio" else text_example_to_dict(ex))
        self.num_written += 1

    def close(self) -> None:
        self._writer.close()

    def finish(self, *, marker_for: str | Path | None = None, skipped: dict[str, int] | None = None,
               extra: dict | None = None) -> dict:
        """Close the shards, then write the completion marker (the last file) for ``marker_for``
        (default: this folder; a writer into a temporary folder names the final one, which the
        folder is renamed to after this). Returns the marker."""
        self.close()
        shards = list_shards(self.out_dir) if self.num_written else []
        counts = [count_newlines_fast(s.index_file) for s in shards]
        if sum(counts) != self.num_written:
            raise RuntimeError(f"{self.out_dir}: wrote {self.num_written} examples but its shards hold {sum(counts)}")
        marker = make_marker(self.kind, describe([s.paths for s in shards], counts), skipped=skipped, extra=extra)
        write_marker(marker_for or self.out_dir, marker)
        return marker

    def __enter__(self) -> ExampleSharWriter:
        self._writer.__enter__()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.close()
