"""NeMo's own readers of its dataset types, and the checks NeMo's readers do not make.

``LazyNeMoIterator`` (a manifest: ``audio_filepath``, ``duration``, ``offset``, ``text``, other fields into
``cut.custom``), ``LazyNeMoTarredIterator`` (the same over tar shards) and ``LhotseTextPairAdapter``
(``txt_pair``), all from ``nemo/collections/common/data/lhotse``. NeMo is imported only when an entry is
converted (``nemo_inputs.py``), never on a cached start-up. Before reading, :func:`check_manifests` names
the file and line of a record that lacks a field (NeMo's reader raises a bare ``KeyError`` or, for a
translation, trains on nothing), and :func:`text_pairs` refuses text files of unequal lengths (NeMo's
adapter stops at the shorter one without a word).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from nemo_emmett.data.prepare.bitext import count_lines, read_lines


def check_manifests(manifests: list[str], options: dict[str, Any], *, task: str, tarred: bool,
                    target_keys: tuple[str, ...]) -> int:
    """Every record of the manifests has what reading it needs; returns how many records will be read
    (those without NeMo's ``_skipme``). Errors name ``file:line``, the field and the fields found."""
    required = ["audio_filepath", "duration", options.get("text_field", "text")]
    if tarred and len(manifests) == 1:
        required.append("shard_id")  # one manifest for all shards: NeMo groups its records by shard_id
    count = 0
    for path in manifests:
        for lineno, raw in read_lines(path):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{where}: not valid JSON ({e}); expected one JSON object a line") from e
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            if record.get("_skipme"):
                continue
            missing = [k for k in required if k not in record]
            if task == "st" and not any(k in record for k in target_keys):
                missing.append(" or ".join(target_keys))
            if missing:
                raise ValueError(f"{where}: no field {', '.join(repr(m) for m in missing)} (found {sorted(record)}); "
                                 f"a {'tarred ' if tarred else ''}NeMo manifest line needs {', '.join(required)}"
                                 f"{' and the translation' if task == 'st' else ''}")
            duration = record["duration"]
            if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
                raise ValueError(f"{where}: duration must be a number of seconds > 0, got {duration!r}")
            count += 1
    return count


def audio_examples(manifests: list[str], tars: list[str] | None, options: dict[str, Any]) -> Iterator[Any]:
    """The cuts NeMo's reader makes of the manifests (and tar files), in stored order."""
    from lhotse.lazy import LazyIteratorChain
    from nemo.collections.common.data.lhotse.nemo_adapters import LazyNeMoIterator, LazyNeMoTarredIterator

    fields = {"text_field": options.get("text_field", "text"), "lang_field": options.get("lang_field", "lang")}
    if tars is None:  # one reader per manifest: each resolves relative audio paths against its own folder
        yield from LazyIteratorChain(*(LazyNeMoIterator(p, **fields) for p in manifests))
        return
    try:
        reader = LazyNeMoTarredIterator(manifest_path=manifests if len(manifests) > 1 else manifests[0],
                                        tar_paths=tars, shuffle_shards=False, shard_seed=0, **fields)
    except AssertionError as e:  # NeMo checks shard ids with asserts
        raise ValueError(f"tarred NeMo manifest {manifests[:3]}: {e}") from e
    yield from reader


def text_pairs(options: dict[str, Any], expand: Callable[[Any], list[str]]) -> Iterator[tuple[str, str]]:
    """``(source, target)`` lines of a ``txt_pair`` entry, read by NeMo's ``LhotseTextPairAdapter``."""
    from nemo.collections.common.data.lhotse.text_adapters import LhotseTextPairAdapter

    sources, targets = expand(options["source_paths"]), expand(options["target_paths"])
    if len(sources) != len(targets):
        raise ValueError(f"txt_pair: {len(sources)} source_paths but {len(targets)} target_paths; expected one "
                         "target file per source file")
    for s, t in zip(sources, targets, strict=True):
        ns, nt = count_lines(s), count_lines(t)
        if ns != nt:
            raise ValueError(f"txt_pair: {s!r} has {ns} lines but {t!r} has {nt}; expected line-aligned files")
    adapter = LhotseTextPairAdapter(source_paths=sources, target_paths=targets,
                                    source_language=options.get("source_language"),
                                    target_language=options.get("target_language"))
    for ex in adapter:
        yield ex.source.text, ex.target.text
