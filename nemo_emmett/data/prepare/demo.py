"""The embedded demo corpus: spoken numbers and their written translations, built on demand.

Every default config trains on it, so it must appear by itself, quickly (well under two minutes
on two cores), identically on every machine, and be small and regular enough for a tiny model to
learn in minutes on CPU. Content: the integers ``0..max_number`` written out by ``num2words``;
English speech synthesised by ``espeak-ng`` with a seeded voice, speed and pitch per number.

Layout (one Shar folder per source, ids end with the number, e.g. ``demo-st_en-de-004217``)::

    <root>/train/asr_en-en/  st_en-de/  st_en-fr/  st_en-es/      audio Shar (same clips, own cut ids)
    <root>/train/asr_en-en.complete.json  ...                      each folder's marker (``data/marker.py``)
    <root>/train/mt_en-de/  mt_de-en/  ...                         text Shar
    <root>/validation/...                                          the same sources, held-out numbers
    <root>/sources.yaml    ready for ``data.train.sources`` / ``data.validation.sources``
    <root>/summary.json    counts, hours of audio, per-source sizes
    <root>/DONE.json       completion marker, written last

Training and validation numbers are disjoint; every number is drawn with the same weight for each
digit count (1, 2, 3, 4 digits), so short numbers are not drowned by the 9,000 four-digit ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lhotse import Recording
from num2words import num2words

from nemo_emmett.data.config import MIN_VAL_NUMBER as _MIN_VAL_NUMBER
from nemo_emmett.data.config import DemoConfig, DemoCorpusConfig
from nemo_emmett.data.examples import direction_key, make_audio_example, make_text_example
from nemo_emmett.data.prepare.espeak import SpeechJob, require_espeak, synthesize_many
from nemo_emmett.data.shar import ExampleSharWriter
from nemo_emmett.data.sources import SourceSpec

log = logging.getLogger(__name__)

CORPUS_VERSION = 2
"""Bump whenever the generator's output changes for the same config (it is part of the cache key).
2: every Shar folder has its completion marker (``data/marker.py``); caches of version 1 have none,
so the new key has them rebuilt beside the old ones instead of refused by the readers."""

DATASET = "demo"
SPLITS = ("train", "validation")
MARKER = "DONE.json"



@dataclass
class DemoCorpus:
    root: Path
    sources: dict[str, list[dict[str, Any]]]
    """Split -> source specs (name, path, task, modality, source_lang, target_lang, dataset, num_examples)."""
    summary: dict[str, Any] = field(default_factory=dict)

    def source_specs(self, split: str) -> list[SourceSpec]:
        return [SourceSpec(**s) for s in self.sources[split]]


def build_demo_corpus(cfg: DemoCorpusConfig, *, force: bool = False) -> DemoCorpus:
    """Build the corpus under ``cfg.root`` (or the cache), or return the finished one already there."""
    espeak = require_espeak()
    key = corpus_key(cfg, espeak_version(espeak))
    root = resolve_root(cfg, key)
    if not force and _is_complete(root, key):
        log.info("Using the demo corpus at %s", root)
        return load_demo_corpus(root)
    if root.exists():
        log.warning(
            "Rebuilding the demo corpus at %s (%s)",
            root,
            "force=True" if force else "no completion marker or another config",
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the destination and rename into place: readers never see a half-built corpus,
    # and of two concurrent builds one wins whole.
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _build(cfg, key, tmp, final_root=root)
        _move_into_place(tmp, root, key)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    corpus = load_demo_corpus(root)
    _log_summary(corpus)
    return corpus


def load_demo_corpus(root: str | Path) -> DemoCorpus:
    """A finished corpus, from its ``summary.json`` (paths resolved against ``root``)."""
    root = Path(root).absolute()
    summary = json.loads((root / "summary.json").read_text())
    sources = {
        split: [{**s, "path": str(root / s["path"])} for s in info["sources"]]
        for split, info in summary["splits"].items()
    }
    return DemoCorpus(root=root, sources=sources, summary=summary)


def corpus_key(cfg: DemoCorpusConfig, espeak_version: str) -> str:
    """Short hash of what decides the content: config, CORPUS_VERSION and the espeak-ng version."""
    blob = json.dumps(
        {"config": cfg.content_fields(), "version": CORPUS_VERSION, "espeak": espeak_version}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def resolve_root(cfg: DemoCorpusConfig, key: str) -> Path:
    if cfg.root is not None:
        return Path(cfg.root).expanduser().absolute()
    cache = os.environ.get("NEMO_EMMETT_CACHE") or "~/.cache/nemo_emmett"
    return Path(cache).expanduser().absolute() / "demo" / key


def espeak_version(espeak: str) -> str:
    """``"eSpeak NG text-to-speech: 1.51"``: its voices change with the version, so the audio does too."""
    out = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("Data at")[0].strip()


def split_numbers(cfg: DemoCorpusConfig) -> dict[str, list[int]]:
    """The numbers of each source group: ``val`` (all validation sources), ``audio`` (training
    speech) and ``mt:<src>-<tgt>`` (training text, one draw per direction); val is disjoint from the rest."""
    everything = range(cfg.max_number + 1)
    val = balanced_sample(
        [n for n in everything if n >= _MIN_VAL_NUMBER], cfg.num_val, random.Random(f"{cfg.seed}:val")
    )
    held_out = set(val)
    pool = [n for n in everything if n not in held_out]
    groups = {"val": val, "audio": balanced_sample(pool, cfg.num_train, random.Random(f"{cfg.seed}:audio"))}
    for src, tgt in _mt_directions(cfg):
        key = direction_key("mt", src, tgt)
        groups[key] = balanced_sample(pool, cfg.num_mt_train, random.Random(f"{cfg.seed}:{key}"))
    return groups


def balanced_sample(pool: Sequence[int], k: int, rng: random.Random) -> list[int]:
    """``k`` distinct numbers of ``pool``, in random order, with an equal share for each digit count.

    A digit count with fewer numbers than its share gives all it has, and the rest is shared
    equally among the larger ones (water filling); the largest takes the rounding remainder.
    """
    if k > len(pool):
        raise ValueError(f"cannot draw {k} distinct numbers from {len(pool)}")
    bands: dict[int, list[int]] = {}
    for n in sorted(pool):
        bands.setdefault(len(str(n)), []).append(n)
    by_size = sorted(bands.values(), key=len)
    picked: list[int] = []
    left = k
    for i, band in enumerate(by_size):
        share = left if i == len(by_size) - 1 else min(len(band), left // (len(by_size) - i))
        picked += rng.sample(band, share)
        left -= share
    rng.shuffle(picked)
    return picked


def _mt_directions(cfg: DemoCorpusConfig) -> list[tuple[str, str]]:
    hub = cfg.speech_lang
    others = [lang for lang in cfg.languages if lang != hub]
    directions = [d for o in others for d in ((hub, o), (o, hub))]
    if cfg.mt_all_pairs:
        directions += [(a, b) for a in others for b in others if a != b]
    return directions


def _voice(cfg: DemoCorpusConfig, n: int) -> tuple[str, int, int]:
    # Seeded per number: a number sounds the same whatever the corpus sizes.
    rng = random.Random(f"{cfg.seed}:voice:{n}")
    return rng.choice(cfg.voices), rng.randint(*cfg.speed_wpm), rng.randint(*cfg.pitch)


def _synthesize_all(cfg: DemoCorpusConfig, numbers: list[int]) -> dict[int, bytes]:
    jobs = [SpeechJob(n, num2words(n, lang=cfg.speech_lang), *_voice(cfg, n)) for n in numbers]
    return synthesize_many(jobs, sampling_rate=cfg.sampling_rate, num_workers=cfg.num_workers,
                           desc="Synthesising demo speech")


def _build(cfg: DemoCorpusConfig, key: str, out: Path, *, final_root: Path) -> None:
    start = time.perf_counter()
    groups = split_numbers(cfg)
    clips = _synthesize_all(cfg, groups["val"] + groups["audio"])
    speech = cfg.speech_lang
    splits: dict[str, Any] = {}
    for split in SPLITS:
        audio_numbers = groups["val" if split == "validation" else "audio"]
        seconds = 0.0
        specs = []
        for tgt in [speech] + [lang for lang in cfg.languages if lang != speech]:
            task = "asr" if tgt == speech else "st"
            name = f"{task}_{speech}-{tgt}"
            with ExampleSharWriter(out / split / name, kind="audio", shard_size=cfg.shard_size) as w:
                for n in audio_numbers:
                    rec = Recording.from_bytes(clips[n], recording_id=f"{DATASET}-{speech}-{n:06d}")
                    w.write(
                        make_audio_example(
                            recording=rec,
                            transcript=num2words(n, lang=speech),
                            source_lang=speech,
                            target_text=num2words(n, lang=tgt),
                            target_lang=tgt,
                            task=task,
                            dataset=DATASET,
                            cut_id=f"{DATASET}-{name}-{n:06d}",
                        )
                    )
                    if task == "asr":
                        seconds += rec.duration
            specs.append(_spec(name, split, task, speech, tgt, len(audio_numbers)))
        for src, tgt in _mt_directions(cfg):
            name = f"mt_{src}-{tgt}"
            numbers = groups["val" if split == "validation" else direction_key("mt", src, tgt)]
            with ExampleSharWriter(out / split / name, kind="text", shard_size=cfg.shard_size) as w:
                for n in numbers:
                    w.write(
                        make_text_example(
                            example_id=f"{DATASET}-{name}-{n:06d}",
                            source_text=num2words(n, lang=src),
                            target_text=num2words(n, lang=tgt),
                            source_lang=src,
                            target_lang=tgt,
                            dataset=DATASET,
                        )
                    )
            specs.append(_spec(name, split, "mt", src, tgt, len(numbers)))
        splits[split] = {
            "num_audio_clips": len(audio_numbers),
            "audio_hours": round(seconds / 3600, 4),
            "sources": specs,
        }

    summary = {
        "corpus_version": CORPUS_VERSION,
        "key": key,
        "config": cfg.content_fields(),
        "build_seconds": round(time.perf_counter() - start, 1),
        "splits": splits,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    sources_yaml = {
        split: {"sources": [{**s, "path": str(final_root / s["path"])} for s in info["sources"]]}
        for split, info in splits.items()
    }
    (out / "sources.yaml").write_text(yaml.safe_dump(sources_yaml, sort_keys=False))
    (out / MARKER).write_text(json.dumps({"key": key, "corpus_version": CORPUS_VERSION}) + "\n")  # last


def _spec(name: str, split: str, task: str, src: str, tgt: str, n: int) -> dict[str, Any]:
    return {
        "name": name,
        "path": f"{split}/{name}",
        "task": task,
        "modality": "text" if task == "mt" else "audio",
        "source_lang": src,
        "target_lang": tgt,
        "dataset": DATASET,
        "num_examples": n,
    }


def _is_complete(root: Path, key: str) -> bool:
    try:
        return json.loads((root / MARKER).read_text())["key"] == key
    except (OSError, ValueError, KeyError):
        return False


def _move_into_place(tmp: Path, root: Path, key: str) -> None:
    if root.exists():
        # Incomplete, stale or forced: move it aside first so the swap itself stays one rename.
        old = tmp.with_name(tmp.name + ".old")
        try:
            root.rename(old)
        except FileNotFoundError:  # another process removed it meanwhile
            pass
        else:
            shutil.rmtree(old)
    try:
        tmp.rename(root)
    except OSError:
        # A concurrent build put its corpus there first; it is equally good when it is complete.
        if not _is_complete(root, key):
            raise


def _log_summary(corpus: DemoCorpus) -> None:
    parts = []
    for split, info in corpus.summary["splits"].items():
        text_pairs = sum(s["num_examples"] for s in info["sources"] if s["modality"] == "text")
        parts.append(
            f"{split}: {info['num_audio_clips']} clips ({info['audio_hours']:.2f} h) in "
            f"{sum(s['modality'] == 'audio' for s in info['sources'])} audio sources, "
            f"{text_pairs} text pairs in {sum(s['modality'] == 'text' for s in info['sources'])} MT sources"
        )
    log.info(
        "Demo corpus at %s built in %.0f s; %s",
        corpus.root,
        corpus.summary["build_seconds"],
        "; ".join(parts),
    )


def demo_sources(dc: DemoConfig) -> tuple[list[SourceSpec], list[SourceSpec]]:
    """Train and validation sources of the embedded demo corpus of ``data.demo`` (built on first use,
    then cached)."""
    corpus = build_demo_corpus(dc)  # the data config's demo block is a DemoCorpusConfig
    return corpus.source_specs("train"), corpus.source_specs("validation")
