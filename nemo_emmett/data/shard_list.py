"""A source whose shards are listed, not held in a folder: Shar shard files or URLs, streamed in place.

NeMo's ``shar_path: {cuts: [...], recording: [...]}`` names each shard's files, often on object storage
(``s3://``, ``ais://``, ``http(s)://``, ``pipe:``: whatever lhotse's ``open_best`` opens). Terabytes there
are not copied: such a source's ``path`` is a small local listing, ``<name>.shards.json``, and training
reads the listed files shard by shard, like a folder's (``data/shar.py`` ``list_shards`` makes them
:class:`~nemo_emmett.data.shar.Shard` records, ``data/stream.py`` splits them over ranks and workers and
resumes by shard and position). The listing also holds how its cuts become our examples
(:class:`~nemo_emmett.data.foreign.Tagging`): they are tagged as they are read, never rewritten.

**Complete listings only.** The listing is its own completion marker: start-up
(``data/prepare/shard_listing.py``) writes it, atomically and last, only after every shard's cuts index
(the small jsonl, never a recording tar) was read and its examples counted, so a listing exists complete
or not at all. Given ``num_examples`` in the entry, the counting is skipped (``counts`` is null): the
first read of each shard, during training, is then its check. There is no size check of the listed files
(the bytes behind a URL are not ours to stat): a source that changes behind its URLs must get new URLs,
or its cached listing removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

FORMAT = "nemo_emmett.shard-list"
VERSION = 1
SUFFIX = ".shards.json"
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://|^pipe:")


def is_url(path: str | Path) -> bool:
    """``s3://...``, ``http://...``, ``pipe:...``: what lhotse's ``open_best`` opens and ``os.stat`` cannot."""
    return bool(_URL.match(str(path)))


def is_shard_list(path: str | Path) -> bool:
    """Whether a source's ``path`` names a listing (``*.shards.json``) rather than a Shar folder."""
    return str(path).endswith(SUFFIX)


def make_shard_list(kind: str, fields: dict[str, list[str]], *, counts: list[int] | None,
                    num_examples: int, tagging: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The listing's content: per field its files (one per shard, in shard order), the examples per shard
    (None: not counted, ``num_examples`` given), the tagging of its cuts and a fingerprint of all that."""
    sizes = {f: len(files) for f, files in fields.items()}
    if len(set(sizes.values())) != 1 or not sizes or min(sizes.values()) == 0:
        raise ValueError(f"expected the same number (> 0) of shard files for every field, got {sizes}")
    if counts is not None and (len(counts) != next(iter(sizes.values())) or sum(counts) != num_examples):
        raise ValueError(f"{len(counts)} shard counts summing to {sum(counts)} for {sizes} shards, "
                         f"{num_examples} examples")
    body = {"kind": kind, "fields": {f: list(v) for f, v in sorted(fields.items())}, "counts": counts,
            "tagging": tagging}
    return {
        "format": FORMAT,
        "version": VERSION,
        **body,
        "num_examples": int(num_examples),
        "num_shards": next(iter(sizes.values())),
        "fingerprint": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16],
        **({"extra": extra} if extra else {}),
    }


def write_shard_list(path: str | Path, listing: dict[str, Any]) -> Path:
    """Write ``listing`` to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    if not is_shard_list(path):
        raise ValueError(f"a shard listing's name ends with {SUFFIX!r}, got {str(path)!r}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(listing, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def load_shard_list(path: str | Path) -> dict[str, Any]:
    """The listing at ``path``; an error naming it when it is missing or not a listing of this format."""
    try:
        listing = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"shard listing {str(path)!r} does not exist (start-up writes it for a "
                                "data.input_cfg entry whose shar_path lists shard files or URLs)") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"shard listing {str(path)!r} is unreadable ({e}); remove it to have it listed again") from e
    fields = listing.get("fields") if isinstance(listing, dict) else None
    if (listing.get("format") if isinstance(listing, dict) else None) != FORMAT or not isinstance(fields, dict) \
            or "cuts" not in fields or len({len(v) for v in fields.values()}) != 1:
        raise ValueError(f"{str(path)!r} is not a shard listing of this format ({FORMAT!r}, a 'cuts' field and "
                         "as many files for every field); remove it to have it listed again")
    return listing


def shard_paths(listing: dict[str, Any]) -> list[dict[str, str]]:
    """Per shard (in order), its file or URL for each field."""
    fields = listing["fields"]
    return [{f: files[i] for f, files in fields.items()} for i in range(len(fields["cuts"]))]
