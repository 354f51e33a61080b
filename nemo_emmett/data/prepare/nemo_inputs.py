"""``data.input_cfg`` entries as sources: our Shar folders as they are, shard URLs streamed, the rest converted once.

Our stream reads complete Shar folders (``data/marker.py``) and shard listings (``data/shard_list.py``).
At start-up:

* our own Shar folder (with its marker) is used in place;
* NeMo's dict of Shar shard files or URLs (``shar_path: {cuts: [...], recording: [...]}``, local paths and
  s3/ais/http/pipe URLs alike) becomes a cached shard listing (``data/prepare/shard_listing.py``: only the
  cuts indices are read, to count), and training streams the shards from where they are, tagged as read;
* every other entry (a NeMo manifest, a tarred NeMo manifest, a text pair, a lhotse Shar folder without
  our marker) is read through NeMo's own readers (``LazyNeMoIterator``, ``LazyNeMoTarredIterator``,
  ``LhotseTextPairAdapter``) or lhotse's (``CutSet.from_shar``) and written, tagged, into a cached Shar
  folder with its marker.

The cache key holds the entry (type, paths, fields, tags) and each local input file's size and
modification time (manifests, tar files, text files, Shar shards; not the audio files a manifest
names, nor the content behind a URL: change the URL, or clear the cache, for those). Each folder is
written under a temporary name, its marker last, and renamed into place (a listing: written and
renamed, last) under a lock, so that a killed start-up or a second rank never leaves or reads half of
one. Dropped examples (empty text, audio a tar file lacks or cannot decode) are counted in a converted
folder's marker ``skipped`` and logged; a streamed source drops the same cuts as it reads them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import braceexpand

from nemo_emmett.data.examples import Example, make_text_example
from nemo_emmett.data.foreign import TARGET_TEXT_FIELDS, Tagging, tag_cut
from nemo_emmett.data.input_cfg import (
    InputEntry,
    entry_source,
    extra_tags,
    flatten_input_cfg,
    source_fields,
)
from nemo_emmett.data.marker import marker_path
from nemo_emmett.data.prepare.nemo_readers import audio_examples, check_manifests, text_pairs
from nemo_emmett.data.prepare.shard_listing import write_listing
from nemo_emmett.data.shar import ExampleSharWriter, check_folder
from nemo_emmett.data.shard_list import SUFFIX, is_url, load_shard_list
from nemo_emmett.parts.cache import cache_dir

log = logging.getLogger(__name__)

CONVERT_VERSION = 1
"""Bump when a conversion's output changes for the same input (it is part of the cache key)."""
SHARD_SIZE = 1000


def expand_paths(value: str | list[str]) -> list[str]:
    """NeMo's path lists (``expand_sharded_filepaths``): ``_OP_``/``_CL_`` (and ``( [ <``, ``) ] >``) are
    braces, brace ranges expand (``audio__OP_0..3_CL_.tar`` -> 4 paths); a list is taken as it is."""
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    text = str(value)
    for brace in ("(", "[", "<", "_OP_"):
        text = text.replace(brace, "{")
    for brace in (")", "]", ">", "_CL_"):
        text = text.replace(brace, "}")
    return list(braceexpand.braceexpand(text, escape=False))


def input_cfg_sources(input_cfg: Any, reweight_temperature: Any = None, *, allow_incomplete: bool = False,
                      root: str | Path | None = None) -> list[dict[str, Any]]:
    """The training sources (``SourceSpec`` dicts, weights = NeMo's shares of the mix) of ``input_cfg``;
    entries that are not our Shar are converted into ``root`` (default: the cache's ``input_cfg/``)."""
    root = Path(root) if root is not None else cache_dir() / "input_cfg"
    names: set[str] = set()
    out = []
    for entry in flatten_input_cfg(input_cfg, reweight_temperature):
        out.append(entry_source(entry, shar_for_entry(entry, root, allow_incomplete=allow_incomplete), names))
    log.info("data.input_cfg: %d sources: %s", len(out),
             ", ".join(f"{s['name']} ({s['weight']:.4f})" for s in out))
    return out


def own_shar(entry: InputEntry) -> str | None:
    """The entry's Shar folder when it is one of ours (a local folder with a completion marker)."""
    path = entry.options.get("shar_path")
    if entry.type != "lhotse_shar" or not isinstance(path, str) or is_url(path):
        return None
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{entry.where}.shar_path: Shar folder {path!r} does not exist")
    return path if marker_path(path).is_file() else None


def shar_for_entry(entry: InputEntry, root: Path, *, allow_incomplete: bool = False) -> str:
    """The Shar folder or shard listing that holds the entry's examples (converted or listed, and cached,
    unless it is ours)."""
    fields_ = source_fields(entry)
    own = own_shar(entry)
    if own is not None:
        ignored = extra_tags(entry)
        if ignored:
            log.warning("%s: tags %s are not stored in Shar folder %r (it is read as it is; only task, "
                        "languages and dataset apply)", entry.where, sorted(ignored), own)
        return own
    key = cache_key(entry, fields_)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    final = root / digest / f"{fields_['task']}_{fields_['source_lang']}-{fields_['target_lang']}"
    listed = entry.type == "lhotse_shar" and isinstance(entry.options["shar_path"], dict)
    if listed:
        final = final.with_name(final.name + SUFFIX)
    elif entry.options.get("num_examples") is not None:
        raise ValueError(f"{entry.where}.num_examples: applies to a shar_path given as a dict of shard files or "
                         "URLs (streamed, not counted); a folder is counted from its shards")
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another rank converting the same entry: wait, then reuse its folder
        if _complete(final):
            log.info("%s: using the %s %s", entry.where, "shard listing" if listed else "converted Shar folder", final)
            return str(final)
        if listed:
            log.info("%s: listing its shards in %s (streamed from where they are, not copied)", entry.where, final)
            write_listing(final, shar_fields(entry)["fields"], tagging_of(entry, fields_), where=entry.where,
                          source=entry.name or f"{entry.where} ({entry.type} {fields_['task']}_"
                                              f"{fields_['source_lang']}-{fields_['target_lang']})",
                          num_examples=entry.options.get("num_examples"),
                          extra={"summary": fields_, "input_cfg": {"where": entry.where, "type": entry.type,
                                                                   "key": key}})
            return str(final)
        log.info("%s: converting the %s entry into Shar folder %s (once; cached)", entry.where, entry.type, final)
        convert(entry, fields_, final, key)
    return str(final)


def tagging_of(entry: InputEntry, fields_: dict[str, str]) -> Tagging:
    """How the entry's foreign cuts become our examples: its direction, dataset, other tags, translation field."""
    return Tagging(**{k: fields_[k] for k in ("task", "source_lang", "target_lang", "dataset")},
                   extra=extra_tags(entry), target_key=entry.options.get("target_text_field"))


def _complete(path: Path) -> bool:
    try:
        if path.name.endswith(SUFFIX):
            load_shard_list(path)
            return True
        if not path.is_dir():
            return False
        check_folder(path)
    except (OSError, ValueError):
        return False
    return True


def cache_key(entry: InputEntry, fields_: dict[str, str]) -> dict[str, Any]:
    """What the converted folder depends on: the entry and its local input files' sizes and mtimes."""
    files = [p for p in input_files(entry) if not is_url(p)]
    stats = []
    for p in files:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue  # convert() names every missing file
        stats.append((p, st.st_size, st.st_mtime_ns))
    return {"version": CONVERT_VERSION, "type": entry.type, "options": entry.options, "fields": fields_,
            "tags": extra_tags(entry), "files": stats}


def input_files(entry: InputEntry) -> list[str]:
    """The files an entry reads (audio files named inside a manifest aside)."""
    o = entry.options
    if entry.type in ("nemo", "nemo_tarred"):
        files = expand_paths(o["manifest_filepath"])
        return files + (expand_paths(o["tarred_audio_filepaths"]) if entry.type == "nemo_tarred" else [])
    if entry.type == "txt_pair":
        return expand_paths(o["source_paths"]) + expand_paths(o["target_paths"])
    shar = o["shar_path"]
    if isinstance(shar, dict):
        return [p for v in shar.values() for p in expand_paths(v)]
    return [str(p) for p in sorted(Path(shar).iterdir())] if not is_url(shar) and Path(shar).is_dir() else [shar]


def check_inputs_exist(entry: InputEntry) -> None:
    """Every local input file exists: the error names the entry, the key and the missing files."""
    o = entry.options
    keys = {"nemo": ["manifest_filepath"], "nemo_tarred": ["manifest_filepath", "tarred_audio_filepaths"],
            "txt_pair": ["source_paths", "target_paths"]}.get(entry.type, [])
    for k in keys:
        missing = [p for p in expand_paths(o[k]) if not is_url(p) and not Path(p).is_file()]
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise FileNotFoundError(f"{entry.where}.{k}: {len(missing)} file(s) missing: {missing[:5]}{more}")


def shar_fields(entry: InputEntry) -> dict[str, Any]:
    """``CutSet.from_shar`` arguments of a foreign Shar entry: a local folder, or NeMo's dict of fields."""
    shar = entry.options["shar_path"]
    if isinstance(shar, dict):
        if "cuts" not in shar:
            raise ValueError(f"{entry.where}.shar_path: a dict of fields must have 'cuts' (field -> list of shard "
                             f"paths or URLs, as NeMo's), got fields {sorted(shar)}")
        return {"fields": {k: expand_paths(v) for k, v in shar.items()}}
    if not isinstance(shar, str):
        raise ValueError(f"{entry.where}.shar_path: expected a local Shar folder or a dict of field -> shard paths/"
                         f"URLs, got {type(shar).__name__} {shar!r} (NeMo's weighted list of folders: make each "
                         "folder an entry of a group, with its weight)")
    if is_url(shar):
        raise ValueError(f"{entry.where}.shar_path: {shar!r} is a URL of a folder, which cannot be listed; give "
                         "NeMo's dict form instead: shar_path: {cuts: [<url>/cuts.000000.jsonl.gz, ...], "
                         "recording: [<url>/recording.000000.tar, ...]}")
    return {"in_dir": shar}


def examples_of(entry: InputEntry, fields_: dict[str, str], skipped: Counter) -> Iterator[Example]:
    """The entry's examples, tagged as ours, in its stored order; drops counted in ``skipped``."""
    target_key = entry.options.get("target_text_field")
    extra = extra_tags(entry)
    if entry.type == "txt_pair":
        for i, (src, tgt) in enumerate(text_pairs(entry.options, expand_paths), start=1):
            if not src or not tgt:
                skipped["empty_text"] += 1
                continue
            ex = make_text_example(example_id=f"{fields_['dataset']}-{fields_['source_lang']}-"
                                   f"{fields_['target_lang']}-{i}", source_text=src, target_text=tgt,
                                   source_lang=fields_["source_lang"], target_lang=fields_["target_lang"],
                                   dataset=fields_["dataset"])
            ex.custom.update({k: v for k, v in extra.items() if k not in ex.custom})
            yield ex
        return
    if entry.type == "lhotse_shar":
        from lhotse import CutSet

        cuts = CutSet.from_shar(**shar_fields(entry))
        where = f"{entry.where} (Shar {entry.options['shar_path']!r})"
    else:
        manifests = expand_paths(entry.options["manifest_filepath"])
        tars = expand_paths(entry.options["tarred_audio_filepaths"]) if entry.type == "nemo_tarred" else None
        expected = check_manifests(manifests, entry.options, task=fields_["task"], tarred=tars is not None,
                                   target_keys=(target_key,) if target_key else TARGET_TEXT_FIELDS)
        cuts = audio_examples(manifests, tars, entry.options)
        where = entry.where
    written = yield from tag_cuts(cuts, fields_, extra, target_key, where, skipped)
    if entry.type != "lhotse_shar" and written + sum(skipped.values()) < expected:
        lost = expected - written - sum(skipped.values())
        skipped["not_in_tar_or_unreadable"] += lost
        log.warning("%s: %d of %d manifest entries gave no audio (not in the tar files, or audio NeMo's reader "
                    "could not decode and skipped); counted in the marker's skipped", entry.where, lost, expected)


def tag_cuts(cuts, fields_: dict[str, str], extra: dict[str, Any], target_key: str | None, where: str,
             skipped: Counter) -> Iterator[Example]:
    """Cuts of NeMo's or lhotse's readers as our audio examples (:func:`~nemo_emmett.data.foreign.tag_cut`).
    Returns how many were yielded."""
    tagging = Tagging(**{k: fields_[k] for k in ("task", "source_lang", "target_lang", "dataset")}, extra=extra,
                      target_key=target_key)
    n = 0
    for k, cut in enumerate(cuts):
        ex = tag_cut(cut, tagging, f"{fields_['dataset']}-{fields_['source_lang']}-{fields_['target_lang']}-{k + 1:07d}",
                     f"{where} (#{k + 1})")
        if ex is None:
            skipped["empty_text"] += 1
            continue
        n += 1
        yield ex
    return n


def convert(entry: InputEntry, fields_: dict[str, str], final: Path, key: dict[str, Any]) -> None:
    """Write the entry's examples into ``final`` (a temporary folder renamed into place, marker last)."""
    check_inputs_exist(entry)
    tmp = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    kind = "text" if fields_["task"] == "mt" else "audio"
    skipped: Counter = Counter()
    writer = ExampleSharWriter(tmp, kind=kind, shard_size=SHARD_SIZE)
    try:
        for ex in examples_of(entry, fields_, skipped):
            writer.write(ex)
        if writer.num_written == 0:
            raise ValueError(f"{entry.where}: no example to train on (dropped: {dict(skipped) or 'none'})")
        shutil.rmtree(final, ignore_errors=True)
        writer.finish(marker_for=final, skipped=dict(skipped),
                      extra={"summary": {**fields_, "examples": writer.num_written},
                             "input_cfg": {"where": entry.where, "type": entry.type, "key": key}})
        os.replace(tmp, final)
    except BaseException:
        writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if skipped:
        log.warning("%s: %d examples written, %d dropped %s (in %s)", entry.where, writer.num_written,
                    sum(skipped.values()), dict(skipped), marker_path(final))
