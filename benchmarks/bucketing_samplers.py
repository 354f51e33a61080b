"""The samplers compared by the bucketing benchmark (fixed batch, lhotse 1D, NeMo 2D with a
re-implementation of NeMo's 2D bin estimation, ours 2D), their timed iteration and per-method
summary; and the multiplexers compared (ours vs lhotse ``CutSet.mux``). See
``benchmarks/bucketing.py`` for what each method is and how it is driven.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bucketing_data import SEED, TED, InMemoryLazy, Setting
from nemo_emmett.data.bucketing import BucketGrid, batch_sizes_for_budget, estimate_bins_2d
from nemo_emmett.data.examples import direction, example_id, source_text, target_text
from nemo_emmett.data.multiplexer import Multiplexer
from nemo_emmett.data.report import padding_ratio
from nemo_emmett.data.sampler import Bucketing2DSampler, ModalityBuckets
from nemo_emmett.data.shar import list_shards, read_shar_dir
from nemo_emmett.data.stream import ShardedStream

IN_BINS, OUT_BINS = 10, 3
LHOTSE_BUCKETS = IN_BINS * OUT_BINS  # same number of buckets as the 2D methods
MUX_WEIGHTS = {"mt:en-de": 0.30, "mt:en-fr": 0.25, "mt:en-cs": 0.15, "mt:de-en": 0.10, "st:en-de": 0.20}
WINDOWS = (200, 1000)


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

