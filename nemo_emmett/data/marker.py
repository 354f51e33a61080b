"""The completion marker of a Shar folder: written last, beside the folder, and checked by every reader.

A folder ``mt_en-de/`` is complete when ``mt_en-de.complete.json`` sits beside it and lists exactly
the shard files the folder holds, with their sizes in bytes and examples per shard. A writer killed
half-way leaves no marker (or a folder whose files disagree with it); readers refuse such a folder
instead of training on part of it. The marker sits beside the folder, not in it, because lhotse's own
``CutSet.from_shar(in_dir=...)`` takes every file in a Shar folder for a field and fails on a stray one.

Preparation (``data/prepare``) writes it through :class:`~nemo_emmett.data.shar.ExampleSharWriter`;
the format lives here, in the data core, so that readers never import the preparation code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER_SUFFIX = ".complete.json"
FORMAT = "nemo_emmett.shar-complete"
VERSION = 1
FIX = ("re-run emmett-prepare for it (without --overwrite it redoes only incomplete folders), "
       "or set data.allow_incomplete=true to read it anyway")
_warned: set[str] = set()


class IncompleteSharError(ValueError):
    """A Shar folder without its completion marker, or whose files disagree with it."""


def marker_path(folder: str | Path) -> Path:
    """``<parent>/<name>.complete.json`` for ``<parent>/<name>/``."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}{MARKER_SUFFIX}"


def describe(shard_files: list[dict[str, str]], counts: list[int]) -> list[dict[str, Any]]:
    """Per shard (in index order): its examples and, per field, the file name and size in bytes."""
    return [{"num_examples": n, "files": {f: {"name": Path(p).name, "bytes": os.path.getsize(p)}
                                           for f, p in sorted(files.items())}}
            for files, n in zip(shard_files, counts, strict=True)]


def make_marker(kind: str, shards: list[dict[str, Any]], *, skipped: dict[str, int] | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The marker's content: kind, examples, shards, examples skipped per reason, a fingerprint of the
    listing (names, sizes, counts: a cheap check that the marker belongs to these files), and ``extra``
    (the writer's own report, e.g. the preparation summary)."""
    listing = json.dumps(shards, sort_keys=True)
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "num_examples": sum(s["num_examples"] for s in shards),
        "num_shards": len(shards),
        "skipped": dict(sorted((skipped or {}).items())),
        "fingerprint": hashlib.sha256(listing.encode()).hexdigest()[:16],
        "shards": shards,
        **({"extra": extra} if extra else {}),
    }


def write_marker(folder: str | Path, marker: dict[str, Any]) -> Path:
    """Write ``marker`` beside ``folder`` atomically (a temporary file renamed into place)."""
    path = marker_path(folder)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(marker, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def remove_marker(folder: str | Path) -> None:
    marker_path(folder).unlink(missing_ok=True)


def problems(folder: str | Path, shard_names: set[str]) -> tuple[dict[str, Any] | None, list[str]]:
    """``(marker, what is wrong)`` for a folder whose shard files are ``shard_names``; no problems:
    the folder is complete."""
    path = marker_path(folder)
    try:
        marker = json.loads(path.read_text())
    except FileNotFoundError:
        return None, [f"its completion marker {str(path)!r} is missing (preparation did not finish)"]
    except (OSError, ValueError) as e:
        return None, [f"its completion marker {str(path)!r} is unreadable ({e})"]
    if not isinstance(marker, dict) or marker.get("format") != FORMAT or not isinstance(marker.get("shards"), list):
        return None, [f"{str(path)!r} is not a completion marker of this format ({FORMAT!r})"]
    folder = Path(folder)
    out, listed = [], set()
    for shard in marker["shards"]:
        for f in shard["files"].values():
            listed.add(f["name"])
            p = folder / f["name"]
            if not p.is_file():
                out.append(f"{f['name']} is missing")
            elif p.stat().st_size != f["bytes"]:
                out.append(f"{f['name']} has {p.stat().st_size} bytes, the marker says {f['bytes']}")
    extra = sorted(shard_names - listed)
    if extra:
        out.append(f"shard(s) {extra} are not in the marker")
    return marker, out


def check_complete(folder: str | Path, shard_names: set[str], *, allow_incomplete: bool = False) -> dict[str, Any] | None:
    """The folder's marker when it is complete. Otherwise an :class:`IncompleteSharError` that names
    the folder, what is missing and the fix; with ``allow_incomplete``, a warning (once per folder)
    and None."""
    marker, wrong = problems(folder, shard_names)
    if not wrong:
        return marker
    message = f"Shar folder {str(folder)!r} is incomplete: {'; '.join(wrong)}. To fix: {FIX}"
    if not allow_incomplete:
        raise IncompleteSharError(message)
    if str(folder) not in _warned:
        _warned.add(str(folder))
        log.warning("%s (data.allow_incomplete=true: reading it as it is)", message)
    return None
