#!/usr/bin/env python
"""Bucketing and multiplexing on Multi30k: ours vs a fixed batch, lhotse 1D and NeMo 2D.

    python benchmarks/bucketing.py            # full: 29,000 en->de pairs, 4,000 synthesized clips
    python benchmarks/bucketing.py --quick    # 3,000 pairs, 300 clips (the test runs this)

One process, one padded-size budget ``P`` (elements of ``B * (max_input + max_output)``), the
same examples in the same (seeded, shuffled) order for every method, and one length measure
for reporting: ours (:class:`LengthMeasure`: text input = SentencePiece source tokens, audio
input = duration / 0.08 s, output = target tokens).

Methods, per data setting (text en->de; speech: espeak-ng English audio with German targets):

* ``fixed``: no bucketing; ``B = P // (max_input + max_output)`` over the data; consecutive
  chunks of the shuffled order.
* ``lhotse_1d``: ``lhotse.dataset.DynamicBucketingSampler`` with 30 buckets it estimates itself
  over all examples. Text: ``TokenConstraint(max_tokens)`` on examples whose ``num_tokens`` is
  the cached source token count; speech: ``max_duration`` (``TimeConstraint``). lhotse limits
  only the padded *input* size, so it gets the input's share of the budget:
  ``max_tokens = P * rho`` (speech: ``max_duration = P * rho * 0.08 s``), with
  ``rho = sum(input) / sum(input + output)`` over the data (exactly the same budget when every
  example has the same input/output ratio).
* ``nemo_2d``: NeMo 3.0.0's own path: ``determine_sampling_constraint`` (from
  ``nemo.collections.common.data.lhotse.dataloader``) on a ``LhotseDataLoadingConfig`` with
  ``bucket_duration_bins`` + ``bucket_batch_size`` + ``bucketing_2d_strict_mode`` + per-bucket
  ``max_tps`` / ``max_tpt``, which builds ``FixedBucketBatchSizeConstraint2D`` (speech, bins in
  seconds x tokens) or ``MultimodalFixedBucketBatchSizeConstraint2D`` (text) and the
  ``BucketingFilter``; then lhotse's ``DynamicBucketingSampler`` configured as
  ``get_lhotse_sampler_from_config`` does (NeMo's defaults: buffer 10,000; ``concurrent=False``
  so timing is single-threaded). Bins (10 x 3) come from a re-implementation of the algorithm of
  NeMo's ``scripts/speech_recognition/estimate_duration_bins_2d.py`` (not shipped in the pip
  wheel): equal total input per input bin, per-bin ratio outliers (z > 4) removed, equal total
  output tokens per sub-bin, per-bin max ratio returned as ``max_tps``/``max_tpt``. As NeMo does,
  speech output tokens are read from the supervision, i.e. the *English transcript*; text output
  tokens from ``answer_ids`` (the target). ``nemo_2d_target_tokens`` (speech only, a reference,
  not something a NeMo user can configure for Shar input) puts the *target* tokens on the
  supervision instead.
* ``ours_2d``: ``estimate_bins_2d`` (10 x 3, minimal-padding edges) + ``BucketGrid`` +
  ``batch_sizes_for_budget`` + ``Bucketing2DSampler(finite_source=...)``; ``ours_2d_30x3`` the same
  with 30 input bins, the input resolution of lhotse's 30 buckets.
* ``diag_*`` (diagnostics, not targets): our sampler fed NeMo's estimation algorithm applied to
  our lengths, with and without its ratio-outlier trimming, ``outliers="nearest"``; they separate
  the effect of bin estimation from that of the sampler.

Batch sizes of every 2D method come from ``batch_sizes_for_budget`` (``P // (edge_in + edge_out)``).

Timing: only the iteration over each sampler (building it, and any bin estimation, is outside
the timer; bin estimation is timed separately). Lengths are pre-computed for everyone: lhotse
reads ``num_tokens`` (cached token ids) or ``duration``; NeMo reads ``context_ids``/``answer_ids``
lengths or ``duration`` and supervision tokens; ours reads a dict of (input, output) by example
id, filled once with ``LengthMeasure``. Each method runs ``--reps`` times (interleaved); the
median is reported.

Multiplexer: ``Multiplexer`` over ShardedStreams of Multi30k mt en->de, en->fr, en->cs, de->en
and the speech source, vs ``CutSet.mux`` (``LazyIteratorMultiplexer``) over the same sources
(each repeated) with the same weights; worst |share - weight| over all sliding windows.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from nemo_emmett.data.bucketing import BucketGrid, batch_sizes_for_budget, estimate_bins_2d  # noqa: E402
from nemo_emmett.data.examples import (  # noqa: E402
    direction,
    direction_key,
    example_id,
    make_audio_example,
    make_text_example,
    source_text,
    target_text,
)
from nemo_emmett.data.lengths import LengthMeasure, SentencePieceCounter  # noqa: E402
from nemo_emmett.data.multiplexer import Multiplexer  # noqa: E402
from nemo_emmett.data.prepare.espeak import SpeechJob, synthesize_many  # noqa: E402
from nemo_emmett.data.prepare.tokenizer import cache_dir, train_sentencepiece  # noqa: E402
from nemo_emmett.data.report import padding_ratio  # noqa: E402
from nemo_emmett.data.sampler import Bucketing2DSampler, ModalityBuckets  # noqa: E402
from nemo_emmett.data.shar import ExampleSharWriter, list_shards, read_shar_dir  # noqa: E402
from nemo_emmett.data.stream import ShardedStream  # noqa: E402

log = logging.getLogger("benchmarks.bucketing")

DATA_DIR = REPO.parent / "shared" / "data" / "multi30k"
LANGS = ("en", "de", "fr", "cs")
MT_DIRECTIONS = (("en", "de"), ("en", "fr"), ("en", "cs"), ("de", "en"))
TED = 0.08  # seconds of speech per input token-equivalent frame
VOCAB = 8000
IN_BINS, OUT_BINS = 10, 3
LHOTSE_BUCKETS = IN_BINS * OUT_BINS  # same number of buckets as the 2D methods
DEFAULT_BUDGET = 4096
SEED = 1234
MUX_WEIGHTS = {"mt:en-de": 0.30, "mt:en-fr": 0.25, "mt:en-cs": 0.15, "mt:de-en": 0.10, "st:en-de": 0.20}
WINDOWS = (200, 1000)
SPEECH_VERSION = 1  # bump when the synthesis recipe changes
METHOD_LABELS = {
    "fixed": "fixed batch (no bucketing)",
    "lhotse_1d": "lhotse DynamicBucketingSampler 1D",
    "nemo_2d": "NeMo 3.0.0 2D (10x3)",
    "nemo_2d_target_tokens": "NeMo 2D, target tokens on supervision*",
    "ours_2d": "ours 2D (10x3)",
    "ours_2d_30x3": "ours 2D (30x3: lhotse's 30 input bins)",
    "diag_ours_nemo_algo_bins": "diag: ours sampler, NeMo-algo bins, nearest",
    "diag_ours_equal_mass_bins": "diag: ours sampler, equal-mass bins, nearest",
}
ANCHORS = ("fixed", "lhotse_1d", "nemo_2d", "nemo_2d_target_tokens")


# ---------------------------------------------------------------------------------------------
# Data: Multi30k text Shar, espeak-ng speech Shar, SentencePiece model (all cached)
# ---------------------------------------------------------------------------------------------
def read_lines(data_dir: Path, lang: str) -> list[str]:
    import gzip

    with gzip.open(data_dir / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


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
    marker = {"corpus": "multi30k/train", "lines": n, "directions": ["-".join(d) for d in MT_DIRECTIONS]}

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

    marker = {"corpus": "multi30k/train", "num": num, "voice": "en-us", "version": SPEECH_VERSION}

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


# ---------------------------------------------------------------------------------------------
# NeMo's 2D bin estimation (algorithm of scripts/speech_recognition/estimate_duration_bins_2d.py)
# ---------------------------------------------------------------------------------------------
def nemo_style_bins_2d(inputs: np.ndarray, outputs: np.ndarray, num_buckets: int, num_subbuckets: int,
                       outlier_threshold: float = 4.0, decimals: int | None = 3,
                       ) -> tuple[list[tuple[float, int]], list[float]]:
    """(bins, max_ratio per bin). Input bins hold equal *total* input; within each, examples whose
    output/input ratio has z-score > threshold are left out, the rest split into sub-bins of equal
    total output; edges are the first value past each threshold, the last edge the bin's max.
    Input edges are rounded to ``decimals`` as NeMo's script does for seconds (the top edge can
    then fall a hair below the longest example)."""
    def rnd(x: float) -> float:
        return round(x, decimals) if decimals is not None else x

    order = np.lexsort((outputs, inputs))
    inp = np.asarray(inputs, dtype=np.float64)[order]
    out = np.asarray(outputs, dtype=np.int64)[order]
    per_bucket = inp.sum() / num_buckets
    max_in = rnd(float(inp[-1]))
    edges, starts, tot = [], [0], 0.0
    for i, x in enumerate(inp):
        if tot > per_bucket:
            edges.append(rnd(float(x)))
            starts.append(i)
            tot = 0.0
        tot += x
    bins: list[tuple[float, int]] = []
    ratios: list[float] = []

    def sub_bins(edge: float, lo: int, hi: int, nsub: int) -> None:
        seg_in, seg_out = inp[lo:hi], out[lo:hi]
        r = seg_out / seg_in
        sd = r.std()
        keep = (r - r.mean()) / sd <= outlier_threshold if sd > 0 else np.ones(len(r), dtype=bool)
        o = np.sort(seg_out[keep])
        max_ratio = float(r[keep].max())
        per_sub, acc = o.sum() / nsub, 0
        for t in o:
            if acc > per_sub:
                bins.append((edge, int(t)))
                ratios.append(max_ratio)
                acc = 0
            acc += t
        bins.append((edge, int(o[-1])))
        ratios.append(max_ratio)

    skipped, start = 1, 0
    for i, (edge, idx) in enumerate(zip(edges, starts[1:])):
        last = i == len(edges) - 1
        if (not last and edges[i + 1] == edge) or (last and edge == max_in):
            skipped += 1
            continue
        sub_bins(edge, start, idx, num_subbuckets * skipped)
        start, skipped = idx, 1
    sub_bins(max_in, start, len(inp), num_subbuckets * skipped)
    return bins, ratios


# ---------------------------------------------------------------------------------------------
# Methods: each returns a factory of a fresh sampler; the timed part is list(sampler)
# ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    make: Callable[[], Iterable]  # fresh sampler (not timed)
    keys_of: Callable[[Any], list[str]]  # batch -> example ids (after timing)
    info: dict[str, Any]
    stats: Callable[[Any], dict[str, Any]] | None = None


def prep_fixed(s: Setting, budget: float) -> Prepared:
    a = s.length_array()
    b = int(budget // (a[:, 0].max() + a[:, 1].max()))
    if b < 1:
        raise ValueError(f"budget {budget} is below one example of the longest ({a.max(axis=0)})")
    exs = s.examples

    def make() -> Iterable:
        return (exs[i : i + b] for i in range(0, len(exs), b))

    return Prepared(make, lambda batch: [example_id(e) for e in batch], {"batch_size": b})


def prep_lhotse(s: Setting, budget: float) -> Prepared:
    from lhotse import CutSet
    from lhotse.dataset import DynamicBucketingSampler, TokenConstraint

    a = s.length_array()
    rho = float(a[:, 0].sum() / a.sum())
    info: dict[str, Any] = {"rho_input_share": rho, "num_buckets": LHOTSE_BUCKETS}
    if s.is_text:
        info["max_tokens"] = int(budget * rho)
        kw = {"constraint": TokenConstraint(max_tokens=info["max_tokens"])}
    else:
        info["max_duration_s"] = budget * rho * TED
        kw = {"max_duration": info["max_duration_s"]}

    def make() -> Iterable:
        return DynamicBucketingSampler(CutSet(InMemoryLazy(s.examples)), num_buckets=LHOTSE_BUCKETS, shuffle=False,
                                       drop_last=False, num_cuts_for_bins_estimate=len(s.examples), seed=SEED,
                                       **kw)

    t = time.perf_counter()
    bins = make().duration_bins
    info["bins_s"] = time.perf_counter() - t
    info["bins"] = [float(x) for x in bins]
    return Prepared(make, lambda batch: [example_id(e) for e in batch], info)


def _nemo_items(s: Setting, output_from: str) -> list:
    """NeMo's view of the same examples: text as SourceTargetTextExample with context/answer ids
    (what NeMo's tokenization sets); speech as the same cuts with supervision ``tokens``."""
    from lhotse.utils import fastcopy
    from nemo.collections.common.data.lhotse.text_adapters import SourceTargetTextExample, TextExample

    items = []
    for e in s.examples:
        k = example_id(e)
        if s.is_text:
            x = SourceTargetTextExample(source=TextExample(source_text(e), language="en"),
                                        target=TextExample(target_text(e), language="de"), custom={"id": k})
            x.input_ids = None
            x.context_ids, x.answer_ids = s.src_ids[k], s.tgt_ids[k]
            items.append(x)
        else:
            sup = fastcopy(e.supervisions[0], custom=dict(e.supervisions[0].custom or {}))
            sup.tokens = s.src_ids[k] if output_from == "supervision" else s.tgt_ids[k]
            items.append(fastcopy(e, supervisions=[sup]))
    return items


def _nemo_key(item) -> str:
    return item.custom["id"] if not hasattr(item, "supervisions") else item.id


def prep_nemo(s: Setting, budget: float, output_from: str = "supervision") -> Prepared:
    from lhotse import CutSet
    from lhotse.dataset import DynamicBucketingSampler
    from nemo.collections.common.data.lhotse.dataloader import (
        LhotseDataLoadingConfig,
        determine_bucket_duration_bins,
        determine_sampling_constraint,
    )
    from nemo.collections.common.data.lhotse.sampling import find_smallest_bucket
    from omegaconf import OmegaConf

    items = _nemo_items(s, output_from)
    if s.is_text:
        measured = [(float(x.input_length), x.output_length) for x in items]
    else:
        measured = [(x.duration, len(x.supervisions[0].tokens)) for x in items]
    arr = np.asarray(measured, dtype=np.float64)
    t = time.perf_counter()
    bins, ratios = nemo_style_bins_2d(arr[:, 0], arr[:, 1], IN_BINS, OUT_BINS)
    bins_s = time.perf_counter() - t
    in_scale = 1.0 if s.is_text else 1.0 / TED  # speech bins are in seconds; the budget in frames
    sizes = batch_sizes_for_budget([(i * in_scale, o) for i, o in bins], budget)
    cfg = OmegaConf.merge(OmegaConf.structured(LhotseDataLoadingConfig), {
        "use_bucketing": True,
        "use_multimodal_sampling": s.is_text,
        "token_equivalent_duration": TED if s.is_text else None,
        "bucket_duration_bins": [[float(i), int(o)] for i, o in bins],
        "bucket_batch_size": sizes,
        "bucketing_2d_strict_mode": True,
        ("max_tpt" if s.is_text else "max_tps"): ratios,
        "concurrent_bucketing": False,
        "shuffle": False,
        "shard_seed": SEED,
    })
    duration_bins = determine_bucket_duration_bins(cfg)

    def make() -> Iterable:
        cuts, constraint = determine_sampling_constraint(CutSet(InMemoryLazy(items)), duration_bins, cfg)
        return DynamicBucketingSampler(
            cuts, constraint=constraint, shuffle=cfg.shuffle, drop_last=cfg.drop_last,
            shuffle_buffer_size=cfg.shuffle_buffer_size, seed=cfg.shard_seed, num_buckets=cfg.num_buckets,
            duration_bins=duration_bins, num_cuts_for_bins_estimate=cfg.num_cuts_for_bins_estimate,
            buffer_size=cfg.bucket_buffer_size, concurrent=cfg.concurrent_bucketing, rank=0, world_size=1,
        )

    grid = np.asarray(duration_bins)
    fits = [find_smallest_bucket(grid, tuple(x), strict=True) is not None for x in measured]
    fits_ratio = [find_smallest_bucket(grid, tuple(x), strict=True, max_ratio=ratios) is not None for x in measured]
    info = {"drops_no_bin": int(len(fits) - sum(fits)), "drops_over_max_ratio": int(sum(fits) - sum(fits_ratio))}
    info |= {"bins": [[float(i), int(o)] for i, o in bins], "batch_sizes": sizes, "max_ratio": ratios,
             "bins_s": bins_s, "output_tokens_from": output_from if not s.is_text else "answer_ids (target)",
             "constraint": "MultimodalFixedBucketBatchSizeConstraint2D" if s.is_text
             else "FixedBucketBatchSizeConstraint2D"}
    return Prepared(make, lambda batch: [_nemo_key(x) for x in batch], info)


def prep_ours(s: Setting, budget: float, bins: list[tuple[float, float]] | None = None,
              outliers: str = "drop", in_bins: int = IN_BINS, out_bins: int = OUT_BINS) -> Prepared:
    """Ours; ``bins`` None: ``estimate_bins_2d`` (in_bins x out_bins, minimal padding) on all
    examples (timed as ``bins_s``)."""
    modality = "text" if s.is_text else "audio"
    info: dict[str, Any] = {"outliers": outliers}
    if bins is None:
        t = time.perf_counter()
        est = estimate_bins_2d(s.length_array(), in_bins, out_bins)
        info["bins_s"] = time.perf_counter() - t
        info["estimation_outliers"] = est.num_outliers
        bins = est.bins
    bins = sorted({(float(i), float(o)) for i, o in bins})
    grid = BucketGrid(bins, outliers=outliers)
    sizes = batch_sizes_for_budget(bins, budget)
    lengths = s.lengths

    def measure(ex) -> tuple[float, float]:
        return lengths[example_id(ex)]

    def make() -> Iterable:
        return Bucketing2DSampler(buckets={modality: ModalityBuckets(grid, sizes)}, measure=measure,
                                  finite_source=iter(s.examples))

    info.update({"bins": [list(b) for b in bins], "batch_sizes": sizes})
    return Prepared(make, lambda batch: [example_id(e) for e in batch.examples], info,
                    stats=lambda sampler: sampler.stats.as_dict())


def diagnostic_bins(s: Setting, outlier_threshold: float) -> list[tuple[float, float]]:
    """NeMo's estimation algorithm applied to *our* lengths (frames / target tokens)."""
    a = s.length_array()
    return nemo_style_bins_2d(a[:, 0], a[:, 1], IN_BINS, OUT_BINS, outlier_threshold=outlier_threshold,
                              decimals=None)[0]


def run_setting(s: Setting, budget: float, reps: int) -> dict[str, Any]:
    preps: dict[str, Prepared] = {
        "fixed": prep_fixed(s, budget),
        "lhotse_1d": prep_lhotse(s, budget),
        "nemo_2d": prep_nemo(s, budget),
    }
    if not s.is_text:
        preps["nemo_2d_target_tokens"] = prep_nemo(s, budget, output_from="target")
    preps["ours_2d"] = prep_ours(s, budget)
    preps["ours_2d_30x3"] = prep_ours(s, budget, in_bins=LHOTSE_BUCKETS, out_bins=OUT_BINS)
    # Diagnostics (not targets): our sampler with NeMo's bin-estimation algorithm on our lengths,
    # with and without its ratio-outlier trimming; examples outside every bucket go to the nearest
    # larger one instead of being dropped.
    preps["diag_ours_nemo_algo_bins"] = prep_ours(s, budget, diagnostic_bins(s, 4.0), outliers="nearest")
    preps["diag_ours_equal_mass_bins"] = prep_ours(s, budget, diagnostic_bins(s, float("inf")), outliers="nearest")

    times: dict[str, list[float]] = {m: [] for m in preps}
    last: dict[str, tuple[list, Any]] = {}
    for _ in range(reps):  # interleaved, so drift of the machine hits every method alike
        for m, p in preps.items():
            sampler = p.make()
            t = time.perf_counter()
            batches = list(sampler)
            times[m].append(time.perf_counter() - t)
            last[m] = (batches, sampler)

    n = len(s.examples)
    out: dict[str, Any] = {}
    for m, p in preps.items():
        batches, sampler = last[m]
        keys = [p.keys_of(b) for b in batches]
        out[m] = summarize(s, keys, budget, statistics.median(times[m]), n)
        out[m]["times_s"] = times[m]
        out[m]["info"] = p.info
        if p.stats is not None:
            out[m]["sampler_stats"] = p.stats(sampler)
    return out


def summarize(s: Setting, batches: list[list[str]], budget: float, seconds: float, n: int) -> dict[str, Any]:
    tot = np.zeros(4)
    emitted, worst_padded, seen = 0, 0.0, set()
    for keys in batches:
        lens = [s.lengths[k] for k in keys]
        tot += padding_ratio(lens)
        emitted += len(keys)
        seen.update(keys)
        a = np.asarray(lens)
        worst_padded = max(worst_padded, len(a) * float(a[:, 0].max() + a[:, 1].max()))
    ri, pi, ro, po = tot
    return {
        "input_padding": float(1 - ri / pi),
        "output_padding": float(1 - ro / po),
        "total_padding": float(1 - (ri + ro) / (pi + po)),
        "mean_batch_size": emitted / len(batches),
        "num_batches": len(batches),
        "examples_emitted": emitted,
        "duplicates": emitted - len(seen),
        "dropped": n - len(seen),
        "max_padded_over_budget": worst_padded / budget,
        "sampler_ms_per_1000": 1000.0 * seconds / n * 1000,
    }


# ---------------------------------------------------------------------------------------------
# Multiplexer: windowed share deviation, ours vs lhotse CutSet.mux
# ---------------------------------------------------------------------------------------------
class SharIterable:
    def __init__(self, path: Path):
        self.path = path

    def __iter__(self) -> Iterator:
        return read_shar_dir(self.path, with_audio=False)


def worst_window_deviation(src: np.ndarray, weights: np.ndarray, window: int) -> float:
    """max over sources and over every window of ``window`` consecutive draws of |share - weight|.
    src: (D,) source index per draw; weights: (K,)."""
    onehot = np.zeros((len(src) + 1, len(weights)))
    onehot[np.arange(1, len(src) + 1), src] = 1.0
    cum = onehot.cumsum(axis=0)
    counts = cum[window:] - cum[:-window]  # (D - window + 1, K)
    return float(np.abs(counts / window - weights).max())


def run_multiplexer(dirs: dict[str, Path], draws: int) -> dict[str, Any]:
    from lhotse import CutSet

    names = list(MUX_WEIGHTS)
    w = np.asarray([MUX_WEIGHTS[n] for n in names])
    streams = [ShardedStream(n, list_shards(dirs[n]), seed=SEED) for n in names]
    mux = Multiplexer(streams, list(w), seed=SEED)
    ours = np.asarray([mux.next_with_source()[0] for _ in range(draws)])
    index = {n: i for i, n in enumerate(names)}
    lmux = CutSet.mux(*[CutSet(SharIterable(dirs[n])).repeat(preserve_id=True) for n in names], weights=list(w), seed=SEED)
    theirs = np.asarray([index[direction(ex)] for ex in itertools.islice(lmux, draws)])
    res: dict[str, Any] = {"weights": dict(zip(names, w.tolist())), "draws": draws}
    for label, src in (("ours", ours), ("lhotse_mux", theirs)):
        res[label] = {f"worst_dev_w{L}": worst_window_deviation(src, w, L) for L in WINDOWS}
        res[label]["shares"] = dict(zip(names, (np.bincount(src, minlength=len(w)) / draws).round(4).tolist()))
    return res


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
OURS = ("ours_2d", "ours_2d_30x3")


def ratios_and_targets(res: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ratios ours / anchor and the issue's targets, for each of our configurations."""
    all_ratios, all_targets = {}, {}
    for variant in OURS:
        ours = res[variant]
        ratios = {}
        for m, r in res.items():
            if m not in ANCHORS:
                continue
            ratios[m] = {
                "input_padding": ours["input_padding"] / r["input_padding"] if r["input_padding"] else None,
                "output_padding": ours["output_padding"] / r["output_padding"] if r["output_padding"] else None,
                "total_padding": ours["total_padding"] / r["total_padding"] if r["total_padding"] else None,
                "sampler_time": ours["sampler_ms_per_1000"] / r["sampler_ms_per_1000"],
            }
        all_ratios[variant] = ratios
        all_targets[variant] = {
            "padding_below_fixed": ours["input_padding"] < res["fixed"]["input_padding"]
            and ours["output_padding"] < res["fixed"]["output_padding"],
            "padding_below_lhotse_1d": ours["input_padding"] < res["lhotse_1d"]["input_padding"]
            and ours["output_padding"] < res["lhotse_1d"]["output_padding"],
            "padding_at_most_nemo_2d": ours["input_padding"] <= res["nemo_2d"]["input_padding"]
            and ours["output_padding"] <= res["nemo_2d"]["output_padding"],
            "time_within_1.5x_lhotse": ours["sampler_ms_per_1000"] <= 1.5 * res["lhotse_1d"]["sampler_ms_per_1000"],
        }
    return all_ratios, all_targets


def format_table(setting: str, n: int, res: dict[str, Any], ratios: dict[str, Any]) -> str:
    lines = [f"\n== {setting}: {n} examples ==",
             f"{'method':<44} {'in pad':>7} {'out pad':>8} {'all pad':>8} {'mean B':>7} {'batches':>7} "
             f"{'dropped':>7} {'max/P':>6} {'ms/1k ex':>9}"]
    for m, r in res.items():
        lines.append(f"{METHOD_LABELS[m]:<44} {100 * r['input_padding']:6.1f}% {100 * r['output_padding']:7.1f}% "
                     f"{100 * r['total_padding']:7.1f}% {r['mean_batch_size']:7.1f} {r['num_batches']:7d} "
                     f"{r['dropped']:7d} {r['max_padded_over_budget']:6.2f} {r['sampler_ms_per_1000']:9.1f}")
    for m in ("nemo_2d", "nemo_2d_target_tokens"):
        if m in res:
            i = res[m]["info"]
            lines.append(f"{m} drops: {i['drops_no_bin']} fit no bin, {i['drops_over_max_ratio']} over their "
                         f"bin's max {'tokens per token' if setting == 'text' else 'tokens per second'}")
    for variant, per_anchor in ratios.items():
        lines.append(f"{METHOD_LABELS[variant]} / anchor:")
        lines += [f"  {m:<22} input x{q['input_padding']:.2f}  output x{q['output_padding']:.2f}  "
                  f"all x{q['total_padding']:.2f}  sampler time x{q['sampler_time']:.2f}"
                  for m, q in per_anchor.items() if q["input_padding"] is not None]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3,000 text pairs and 300 speech clips (under ~2 minutes)")
    p.add_argument("--num-text", type=int, default=None, help="text pairs (default 29000, quick 3000)")
    p.add_argument("--num-speech", type=int, default=None, help="speech clips (default 4000, quick 300)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                   help=f"padded elements per batch, B * (max_input + max_output) (default {DEFAULT_BUDGET})")
    p.add_argument("--draws", type=int, default=20000, help="multiplexer draws (default 20000)")
    p.add_argument("--reps", type=int, default=3, help="timed runs per sampler; the median is reported")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR, help=f"Multi30k folder (default {DATA_DIR})")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON figures to this file")
    args = p.parse_args(argv)
    args.num_text = args.num_text or (3000 if args.quick else 29000)
    args.num_speech = args.num_speech or (300 if args.quick else 4000)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    wall = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
    warnings.filterwarnings("ignore", message=".*buffer_size.*might be too low.*")
    missing = [f"train.{lang}.gz" for lang in LANGS if not (args.data_dir / f"train.{lang}.gz").is_file()]
    if missing:
        sys.exit(f"Multi30k not found: expected {args.data_dir} with {', '.join(missing)} "
                 f"(line-aligned gzip files train.{{en,de,fr,cs}}.gz, 29,000 lines each).")

    root = cache_dir() / "bench"
    lines = {lang: read_lines(args.data_dir, lang) for lang in LANGS}
    if len({len(v) for v in lines.values()}) != 1:
        sys.exit(f"{args.data_dir}: train.*.gz files are not line-aligned ({ {k: len(v) for k, v in lines.items()} })")
    t = time.perf_counter()
    spm_path = tokenizer_model(args.data_dir, lines)
    text_dirs = text_shar_dirs(args.data_dir, lines, root)
    speech_dir = speech_shar_dir(lines, args.num_speech, root)
    prep_s = time.perf_counter() - t

    counter = SentencePieceCounter(spm_path)
    measure = LengthMeasure(counter, token_equivalent_duration=TED)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    settings = {
        "text": make_setting("text", itertools.islice(read_shar_dir(text_dirs["mt:en-de"]), args.num_text),
                             measure, sp, SEED),
        "speech": make_setting("speech", read_shar_dir(speech_dir, with_audio=False), measure, sp, SEED),
    }
    import nemo  # noqa: F401  (import cost outside every timer)

    results: dict[str, Any] = {
        "benchmark": "bucketing",
        "config": {"quick": args.quick, "budget": args.budget, "num_text": len(settings["text"].examples),
                   "num_speech": len(settings["speech"].examples), "bins": [IN_BINS, OUT_BINS],
                   "lhotse_num_buckets": LHOTSE_BUCKETS, "token_equivalent_duration": TED, "vocab_size": VOCAB,
                   "spm_model": str(spm_path), "reps": args.reps, "seed": SEED, "cpu_count": os.cpu_count(),
                   "cache": str(root)},
    }
    text_out = []
    for name, s in settings.items():
        res = run_setting(s, args.budget, args.reps)
        ratios, targets = ratios_and_targets(res)
        results[name] = {"methods": res, "ours_over_anchor": ratios, "targets": targets}
        text_out.append(format_table(name, len(s.examples), res, ratios))
        for variant, t in targets.items():
            text_out.append(f"targets, {variant}: " + ", ".join(f"{k}={v}" for k, v in t.items()))

    mux_dirs = {**text_dirs, "st:en-de": speech_dir}
    results["multiplexer"] = run_multiplexer(mux_dirs, args.draws)
    m = results["multiplexer"]
    text_out.append(f"\n== multiplexer: {m['draws']} draws, weights {m['weights']} ==")
    for label in ("ours", "lhotse_mux"):
        text_out.append(f"{label:<11} worst |share - weight|: " + ", ".join(
            f"window {L}: {m[label][f'worst_dev_w{L}']:.3f}" for L in WINDOWS))
    text_out.append("* reference only: NeMo reads output tokens from the supervision (the English transcript "
                    "for ST); this row puts the German target tokens there.")
    results["prepare_s"] = prep_s
    results["wall_s"] = time.perf_counter() - wall
    print("\n".join(text_out))
    print(f"\nwall time {results['wall_s']:.1f} s (data preparation {prep_s:.1f} s)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
