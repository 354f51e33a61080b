#!/usr/bin/env python
"""Bucketing and multiplexing on Multi30k: ours vs a fixed batch, lhotse 1D and NeMo 2D.

    python benchmarks/bucketing.py            # full: 29,000 en->de pairs, 4,000 synthesized clips
    python benchmarks/bucketing.py --quick    # 3,000 pairs, 300 clips (the test runs this)

One process, one padded-size budget ``P`` (elements of ``B * (max_input + max_output)``), the
same examples in the same (seeded, shuffled) order for every method, and one length measure
for reporting: ours (:class:`LengthMeasure`: text input = SentencePiece source tokens, audio
input = duration / 0.08 s, output = target tokens + EOS, as collated).

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
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bucketing_data import (  # noqa: E402
    DATA_DIR,
    LANGS,
    SEED,
    TED,
    VOCAB,
    make_setting,
    read_lines,
    speech_shar_dir,
    text_shar_dirs,
    tokenizer_model,
)
from benchmarks.bucketing_samplers import (  # noqa: E402
    IN_BINS,
    LHOTSE_BUCKETS,
    OUT_BINS,
    WINDOWS,
    run_multiplexer,
    run_setting,
)
from nemo_emmett.data.lengths import LengthMeasure, TokenCounter  # noqa: E402
from nemo_emmett.data.shar import read_shar_dir  # noqa: E402
from nemo_emmett.parts.cache import cache_dir  # noqa: E402
from nemo_emmett.parts.text_processor import TextProcessor  # noqa: E402

log = logging.getLogger("benchmarks.bucketing")

DEFAULT_BUDGET = 4096
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

    counter = TokenCounter(TextProcessor(spm_path=str(spm_path)))  # the units our collate builds (target + EOS)
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
