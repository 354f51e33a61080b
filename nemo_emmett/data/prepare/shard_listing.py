"""NeMo's dict of Shar shard files or URLs as a shard listing: checked and counted at start-up, never copied.

``shar_path: {cuts: [...], recording: [...]}`` (local paths, or ``s3://``, ``ais://``, ``http(s)://``,
``pipe:``) becomes ``<task>_<src>-<tgt>.shards.json`` (``data/shard_list.py``), which training streams
shard by shard. Only each shard's cuts index (its jsonl, metadata) is read here, in a few threads, to
count the examples it gives once tagged (what the weights, the logs and the completeness rule use);
the recording tars are read during training only. ``num_examples`` in the entry skips the counting.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nemo_emmett.data.foreign import Tagging
from nemo_emmett.data.shar import Shard, read_shard
from nemo_emmett.data.shard_list import is_url, make_shard_list, write_shard_list

log = logging.getLogger(__name__)

COUNT_THREADS = 16
"""Cuts indices read at once at start-up (I/O bound: object storage answers each in its own time)."""


def check_fields(fields: dict[str, list[str]], where: str) -> None:
    """One file per shard in every field, and every local one there (the error names the entry and fields)."""
    sizes = {f: len(files) for f, files in fields.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{where}.shar_path: its fields list different numbers of shards ({sizes}); expected one "
                         "file per shard in every field, in the same order")
    if not sizes["cuts"]:
        raise ValueError(f"{where}.shar_path: no shard listed")
    missing = [p for files in fields.values() for p in files if not is_url(p) and not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{where}.shar_path: {len(missing)} shard file(s) missing: {missing[:5]}{more}")


def count_shard(cuts: str, index: int, tagging: Tagging, source: str) -> int:
    """Examples the shard gives once tagged, from its cuts index alone (the stream drops the same cuts)."""
    return sum(1 for _ in read_shard(Shard("audio", {"cuts": cuts}, index=index, tagging=tagging),
                                     with_audio=False, source=source))


def write_listing(final: Path, fields: dict[str, list[str]], tagging: Tagging, *, where: str, source: str,
                  num_examples: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check, count (unless ``num_examples`` is given) and write the listing ``final`` (atomically, last)."""
    check_fields(fields, where)
    counts = None
    if num_examples is not None:
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples <= 0:
            raise ValueError(f"{where}.num_examples: expected an integer > 0, got {num_examples!r}")
        log.info("%s: %d shards listed, %d examples as given (not counted)", where, len(fields["cuts"]), num_examples)
    else:
        log.info("%s: counting the examples of %d shards from their cuts indices", where, len(fields["cuts"]))
        with ThreadPoolExecutor(min(COUNT_THREADS, len(fields["cuts"]))) as pool:
            counts = list(pool.map(lambda a: count_shard(a[1], a[0], tagging, source), enumerate(fields["cuts"])))
        num_examples = sum(counts)
        if num_examples == 0:
            raise ValueError(f"{where}: no example to train on in its {len(counts)} shards (every cut lacks text)")
    listing = make_shard_list("audio", fields, counts=counts, num_examples=num_examples, tagging=asdict(tagging),
                              extra=extra)
    write_shard_list(final, listing)
    return listing
