"""Data of the bucketing benchmark: Multi30k text Shar, espeak-ng speech Shar and a SentencePiece
model (all cached), and one data setting: the examples in their shuffled order with their lengths
(our :class:`LengthMeasure`) and token ids. ``benchmarks/bucketing.py`` runs the benchmark;
``benchmarks/throughput.py`` reuses the cached corpora.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nemo_emmett.data.examples import (
    direction_key,
    example_id,
    make_audio_example,
    make_text_example,
    source_text,
    target_text,
)
from nemo_emmett.data.lengths import LengthMeasure
from nemo_emmett.data.prepare.espeak import SpeechJob, synthesize_many
from nemo_emmett.data.prepare.tokenizer import train_sentencepiece
from nemo_emmett.data.shar import ExampleSharWriter

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data" / "multi30k"
LANGS = ("en", "de", "fr", "cs")
MT_DIRECTIONS = (("en", "de"), ("en", "fr"), ("en", "cs"), ("de", "en"))
TED = 0.08  # seconds of speech per input token-equivalent frame
VOCAB = 8000
SEED = 1234
SPEECH_VERSION = 1  # bump when the synthesis recipe changes


# ---------------------------------------------------------------------------------------------
# Data: Multi30k text Shar, espeak-ng speech Shar, SentencePiece model (all cached)
# ---------------------------------------------------------------------------------------------
def read_lines(data_dir: Path, lang: str) -> list[str]:
    import gzip

    with gzip.open(data_dir / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


LAYOUT_VERSION = 2
"""2: the Shar folders carry completion markers (``data/marker.py``); caches without them are rebuilt."""


def _atomic_build(final: Path, build: Callable[[Path], None], marker: dict[str, Any]) -> Path:
    """Build into a temporary sibling folder, then move it into place; ``done.json`` is written
    next to (never inside) the Shar folders and marks a complete build."""
    done = final / "done.json"
    if done.is_file() and json.loads(done.read_text()) == marker:
        return final
    tmp = final.parent / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    (tmp / "done.json").write_text(json.dumps(marker) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def text_shar_dirs(data_dir: Path, lines: dict[str, list[str]], root: Path) -> dict[str, Path]:
    """One text Shar folder per MT direction, all 29,000 training lines."""
    n = len(lines["en"])
    marker = {"corpus": "multi30k/train", "lines": n, "directions": ["-".join(d) for d in MT_DIRECTIONS],
              "layout": LAYOUT_VERSION}

    def build(tmp: Path) -> None:
        for src, tgt in MT_DIRECTIONS:
            with ExampleSharWriter(tmp / f"mt_{src}-{tgt}", kind="text", shard_size=5000) as w:
                for i, (s, t) in enumerate(zip(lines[src], lines[tgt])):
                    w.write(make_text_example(example_id=f"multi30k-{src}-{tgt}-{i:06d}", source_text=s,
                                              target_text=t, source_lang=src, target_lang=tgt, dataset="multi30k"))

    out = _atomic_build(root / "multi30k_text", build, marker)
    return {direction_key("mt", s, t): out / f"mt_{s}-{t}" for s, t in MT_DIRECTIONS}


def speech_shar_dir(lines: dict[str, list[str]], num: int, root: Path, workers: int = 2) -> Path:
    """English speech for the first ``num`` sentences (espeak-ng, en-us, 140-180 wpm seeded per
    line), German targets. Synthesized once with a pool of ``workers`` processes, then cached."""
    from lhotse import Recording

    marker = {"corpus": "multi30k/train", "num": num, "voice": "en-us", "version": SPEECH_VERSION,
              "layout": LAYOUT_VERSION}

    def build(tmp: Path) -> None:
        jobs = [SpeechJob(i, lines["en"][i], "en-us", random.Random(f"speed:{i}").randint(140, 180))
                for i in range(num)]
        clips = synthesize_many(jobs, sampling_rate=16000, num_workers=workers)
        with ExampleSharWriter(tmp / "st_en-de", kind="audio", shard_size=500) as w:
            for i in range(num):
                rec = Recording.from_bytes(clips[i], recording_id=f"multi30k-en-{i:06d}")
                w.write(make_audio_example(recording=rec, transcript=lines["en"][i], source_lang="en",
                                           target_text=lines["de"][i], target_lang="de", task="st",
                                           dataset="multi30k", cut_id=f"multi30k-st-en-de-{i:06d}"))

    return _atomic_build(root / f"multi30k_speech_en-de_n{num}", build, marker) / "st_en-de"


def tokenizer_model(data_dir: Path, lines: dict[str, list[str]]) -> Path:
    key = {"corpus": "multi30k/train en+de", "lines": len(lines["en"]),
           "bytes": [(data_dir / f"train.{lang}.gz").stat().st_size for lang in ("en", "de")]}
    return train_sentencepiece(itertools.chain(lines["en"], lines["de"]), vocab_size=VOCAB, key=key)


# ---------------------------------------------------------------------------------------------
# One data setting: examples in shuffled order with cached lengths and token ids
# ---------------------------------------------------------------------------------------------
@dataclass
class Setting:
    name: str  # "text" | "speech"
    examples: list  # our example objects, in the shuffled order every method sees
    lengths: dict[str, tuple[float, float]]  # example id -> (input, output), our measure
    src_ids: dict[str, np.ndarray]  # source-text token ids (text input; speech transcript)
    tgt_ids: dict[str, np.ndarray]

    @property
    def is_text(self) -> bool:
        return self.name == "text"

    def length_array(self) -> np.ndarray:
        return np.asarray([self.lengths[example_id(e)] for e in self.examples], dtype=np.float64)  # (N, 2)


def make_setting(name: str, examples: list, measure: LengthMeasure, sp, seed: int) -> Setting:
    examples = list(examples)
    random.Random(seed).shuffle(examples)
    lengths, src_ids, tgt_ids = {}, {}, {}
    for e in examples:
        k = example_id(e)
        lengths[k] = measure(e)
        src_ids[k] = np.asarray(sp.encode(source_text(e)), dtype=np.int32)
        tgt_ids[k] = np.asarray(sp.encode(target_text(e)), dtype=np.int32)
        if name == "text":  # lhotse's TokenConstraint reads TextPairExample.num_tokens = len(source.tokens)
            e.source.tokens, e.target.tokens = src_ids[k], tgt_ids[k]
            assert e.num_tokens == lengths[k][0]
    return Setting(name, examples, lengths, src_ids, tgt_ids)


class InMemoryLazy:
    """A lazily iterated manifest over a list, as a Shar reader would be (lhotse then filters and
    maps lazily, i.e. inside the timed iteration, as in training)."""

    def __init__(self, items: list):
        self.items = items

    def __iter__(self) -> Iterator:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

