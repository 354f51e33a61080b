#!/usr/bin/env python
"""Training throughput at one memory budget: fixed batch vs 1D bucketing vs 2D bucketing + OOMptimizer.

    python benchmarks/throughput.py                        # demo corpus and Multi30k (when present)
    python benchmarks/throughput.py --data demo --examples 600 --budget 64MiB   # quick (the test)

One process, one model (the tiny SALM-T5 of ``nemo_emmett/conf/salm_t5.yaml``), one memory budget, the same
data mix and the same example stream (the multiplexer draws the same examples in the same order
whatever the buckets). Per data set and method:

* ``fixed``: no bucketing: one bucket per modality whose edges are the longest input and output of
  the data; its batch size is the largest that fits the budget in the worst case (measured by the
  OOMptimizer on that single bucket).
* ``1d``: buckets on the input length only (as lhotse's and NeMo's 1D bucketing), with as many
  buckets as the 2D grid; each bucket's output edge is the longest output of its examples; batch
  sizes from the OOMptimizer.
* ``2d_oomptimizer``: the 2D grid of the data config (minimal-padding bins), batch sizes from the
  OOMptimizer.

Every method uses the same bin-estimation sample (``data.estimation_examples`` per source), so an
example longer than that sample's longest is dropped by all (counted per method). Each method
trains a copy of the same initial model with its own optimizer; methods take turns in chunks
of ``--chunk`` examples so that machine noise hits them alike. Timed: the training step only
(forward, backward, clipping, optimizer step), not data loading (dataloader workers overlap it in
real runs).

Accounting is per modality, because buckets make the two modalities arrive at different paces
(large text batches wait longer to fill): each method runs until it has consumed ``--examples`` x
(the modality's share of the mix) of each. Reported per modality: real tokens/s (non-pad input
tokens -- audio as token-equivalent frames -- plus target tokens), padding, batch sizes; and at the
data mix: seconds to consume 1,000 examples (sum over modalities of share x seconds per example)
and real tokens/s, each as a ratio to ``fixed``. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nemo_emmett.data.batch import TranslationBatch  # noqa: E402
from nemo_emmett.data.bucketing import BucketGrid, estimate_bins_2d  # noqa: E402
from nemo_emmett.data.dataset import TrainBatches, collate  # noqa: E402
from nemo_emmett.data.plan import DataPlan  # noqa: E402
from nemo_emmett.data.sampler import Bucketing2DSampler, ModalityBuckets  # noqa: E402
from nemo_emmett.oomptimizer.config import OOMptimizerConfig, fmt_bytes, parse_bytes  # noqa: E402
from nemo_emmett.oomptimizer.measure import ProbeSetting, plan_batch_sizes, prompt_length  # noqa: E402

log = logging.getLogger("benchmarks.throughput")
MULTI30K = REPO.parent / "shared" / "data" / "multi30k"
METHODS = ("fixed", "1d", "2d_oomptimizer")


# ---- data ----------------------------------------------------------------------------------------
def compose_config(overrides: list[str]):
    from nemo_emmett.config_store import compose_config as compose

    return compose("salm_t5", overrides, config_dir=REPO / "nemo_emmett" / "conf")


def multi30k_sources(num_speech: int) -> tuple[list[dict[str, Any]], str]:
    """Multi30k text Shar (4 MT directions, 29,000 pairs each) and espeak-ng speech (en->de), built and
    cached by benchmarks/bucketing_data.py's helpers; its SentencePiece model."""
    spec = importlib.util.spec_from_file_location("bench_bucketing_data", REPO / "benchmarks" / "bucketing_data.py")
    bb = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bb  # its dataclasses look their module up while the file executes
    spec.loader.exec_module(bb)
    from nemo_emmett.data.examples import parse_direction
    from nemo_emmett.parts.cache import cache_dir

    root = cache_dir() / "bench"
    lines = {lang: bb.read_lines(MULTI30K, lang) for lang in bb.LANGS}
    spm_path = bb.tokenizer_model(MULTI30K, lines)
    text = bb.text_shar_dirs(MULTI30K, lines, root)
    speech = bb.speech_shar_dir(lines, num_speech, root)
    directions = {parse_direction(d): p for d, p in text.items()}  # ("mt", src, tgt) -> folder
    sources = [{"name": f"mt_{s}-{t}", "path": str(p), "task": task, "source_lang": s, "target_lang": t,
                "dataset": "multi30k"} for (task, s, t), p in directions.items()]
    sources.append({"name": "st_en-de", "path": str(speech), "task": "st", "source_lang": "en", "target_lang": "de",
                    "dataset": "multi30k"})
    return sources, str(spm_path)


def set_data(cfg, name: str, args: argparse.Namespace) -> None:
    """Point ``cfg.data`` at the data set: the embedded demo (the config's default), or Multi30k."""
    if name == "demo":
        return
    from omegaconf import open_dict

    sources, spm_path = multi30k_sources(args.num_speech)
    rest = 0.6 / (len(sources) - 1)  # speech, the expensive modality, gets 40% of the mix
    for s in sources:
        s["weight"] = 0.4 if s["task"] == "st" else rest
    with open_dict(cfg):
        cfg.data.demo.enabled = False
        cfg.data.train_sources = sources
        cfg.data.tokenizer.model_path = spm_path


def grids(plan: DataPlan, num_in: dict[str, int], num_out: dict[str, int]) -> dict[str, dict[str, list]]:
    """Bins per method and modality, all from the plan's bin-estimation lengths."""
    out: dict[str, dict[str, list]] = {m: {} for m in METHODS}
    for modality, lengths in plan.lengths.items():
        if len(lengths) == 0 or modality not in plan.buckets:
            continue
        out["fixed"][modality] = [(float(lengths[:, 0].max()), float(lengths[:, 1].max()))]
        out["1d"][modality] = estimate_bins_2d(lengths, num_in[modality] * num_out[modality], 1).bins
        out["2d_oomptimizer"][modality] = [tuple(b) for b in plan.buckets[modality].grid.bins]
    return out


# ---- training ------------------------------------------------------------------------------------
@dataclass
class Counts:
    examples: int = 0
    steps: int = 0
    seconds: float = 0.0
    real_tokens: float = 0.0
    padded_tokens: float = 0.0

    def rates(self) -> dict[str, float]:
        return {"examples": self.examples, "steps": self.steps, "train_seconds": round(self.seconds, 2),
                "mean_batch_size": self.examples / max(self.steps, 1),
                "seconds_per_example": self.seconds / max(self.examples, 1),
                "real_tokens_per_example": self.real_tokens / max(self.examples, 1),
                "real_tokens_per_s": self.real_tokens / max(self.seconds, 1e-9),
                "padding_share": 1 - self.real_tokens / max(self.padded_tokens, 1e-9)}


@dataclass
class Run:
    method: str
    model: Any
    optimizer: torch.optim.Optimizer
    sampler: Bucketing2DSampler
    batches: Iterator[TranslationBatch]
    clip: float | None
    ted: float
    sampling_rate: int
    counts: dict[str, Counts] = field(default_factory=lambda: {"audio": Counts(), "text": Counts()})

    def step(self) -> None:
        batch = next(self.batches)
        n = len(batch)
        c = self.counts[batch.modality]
        if batch.modality == "audio":
            frames = batch.audio_lens.double() / self.sampling_rate / self.ted  # (B,) token-equivalents
            real_in, pad_in = float(frames.sum()), float(frames.max()) * n
        else:
            real_in, pad_in = float(batch.source_lens.sum()), float(batch.source_lens.max()) * n
        out_lens = batch.target_lens
        c.real_tokens += real_in + float(out_lens.sum())
        c.padded_tokens += pad_in + float(out_lens.max()) * n
        t = time.perf_counter()
        loss, _ = self.model.task_losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        c.seconds += time.perf_counter() - t
        c.examples += n
        c.steps += 1

    def done(self, quota: dict[str, float]) -> bool:
        return all(self.counts[m].examples >= q for m, q in quota.items())

    def summary(self, shares: dict[str, float], dropped: dict[str, int]) -> dict[str, Any]:
        """Per modality, and at the data mix: a stream whose examples are ``shares`` audio/text costs
        sum(share x seconds per example) per example and yields sum(share x real tokens per example)."""
        per = {m: c.rates() for m, c in self.counts.items() if m in shares}
        sec = sum(shares[m] * per[m]["seconds_per_example"] for m in per)
        tok = sum(shares[m] * per[m]["real_tokens_per_example"] for m in per)
        return {"per_modality": per, "seconds_per_1000_examples": 1000 * sec, "examples_per_s": 1 / sec,
                "real_tokens_per_s": tok / sec, "dropped_no_bucket": dropped}


def modality_shares(plan: DataPlan) -> dict[str, float]:
    """Share of audio and text examples in the multiplexed stream (from the source weights)."""
    shares: dict[str, float] = {}
    for spec, w in zip(plan.train, plan.weights):
        shares[spec.modality] = shares.get(spec.modality, 0.0) + w
    total = sum(shares.values())
    return {m: w / total for m, w in shares.items()}


def run_data(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from nemo_emmett.oomptimizer.probe import first_optimizer
    from nemo_emmett.startup import resolve_run

    cfg = compose_config(args.override)
    set_data(cfg, name, args)
    run = resolve_run(cfg)  # sources, then the tokenizer the data module and the model share
    data = run.data_module()
    plan = data.plan
    torch.manual_seed(cfg.seed)
    base = run.build_model()
    dcfg = data.cfg
    num_in = {"audio": dcfg.audio_buckets.num_input_bins, "text": dcfg.text_buckets.num_input_bins}
    num_out = {"audio": dcfg.audio_buckets.num_output_bins, "text": dcfg.text_buckets.num_output_bins}
    method_bins = grids(plan, num_in, num_out)
    clip = cfg.trainer.get("gradient_clip_val")
    setting = ProbeSetting(device=torch.device("cpu"), precision="32-true", gradient_clip_val=clip,
                           token_equivalent_duration=dcfg.token_equivalent_duration, sampling_rate=dcfg.sampling_rate,
                           prompt_len=prompt_length(base.text, [(s.task, s.source_lang, s.target_lang)
                                                                for s in plan.train]))
    ocfg = OOMptimizerConfig(memory_budget=args.budget, tolerance=args.tolerance)
    runs, sizing = {}, {}
    for method in METHODS:
        bins = method_bins[method]
        result = plan_batch_sizes(base, bins, setting, ocfg, progress=not args.no_progress)
        sizing[method] = {m: {"bins": [list(b) for b in bins[m]], "batch_sizes": result.batch_sizes(m),
                              "peak_share": [round(r.peak / result.budget, 3) for r in
                                             sorted(result.buckets[m], key=lambda r: r.bucket)]} for m in bins}
        buckets = {m: ModalityBuckets(BucketGrid(bins[m], outliers="drop"), result.batch_sizes(m)) for m in bins}
        ds = TrainBatches(specs=plan.train, weights=plan.weights, buckets=buckets, measure=plan.measure,
                          seed=dcfg.seed, jitter=dcfg.jitter, shuffle_buffer=dcfg.shuffle_buffer,
                          max_wait=dcfg.max_wait, sampling_rate=dcfg.sampling_rate, text=base.text)
        sampler = ds.sampler_for_slot(0, 1)
        batches = (collate(b, sampling_rate=dcfg.sampling_rate, text=base.text) for b in sampler)
        model = copy.deepcopy(base).train()
        runs[method] = Run(method, model, first_optimizer(model.configure_optimizers()), sampler, batches, clip,
                           dcfg.token_equivalent_duration, dcfg.sampling_rate)
    shares = modality_shares(plan)
    quota = {m: args.examples * share for m, share in shares.items()}
    while not all(r.done(quota) for r in runs.values()):
        for r in runs.values():  # take turns so that machine noise hits every method alike
            target = {m: min(q, r.counts[m].examples + args.chunk * shares[m]) for m, q in quota.items()}
            while not r.done(target):
                r.step()
    out = {"budget_bytes": parse_bytes(args.budget), "sources": [s.name for s in plan.train],
           "weights": [round(w, 3) for w in plan.weights], "modality_shares": shares, "sizing": sizing,
           "methods": {}}
    for method, r in runs.items():
        out["methods"][method] = r.summary(shares, dict(r.sampler.stats.dropped_no_bucket))
    fixed = out["methods"]["fixed"]
    out["ratios_vs_fixed"] = {
        m: {"real_tokens_per_s": s["real_tokens_per_s"] / fixed["real_tokens_per_s"],
            "time_to_consume": s["seconds_per_1000_examples"] / fixed["seconds_per_1000_examples"],
            **{f"{mod}_real_tokens_per_s": s["per_modality"][mod]["real_tokens_per_s"]
               / fixed["per_modality"][mod]["real_tokens_per_s"] for mod in s["per_modality"]}}
        for m, s in out["methods"].items()}
    return out


def format_table(name: str, res: dict[str, Any]) -> str:
    shares = ", ".join(f"{m} {100 * v:.0f}%" for m, v in res["modality_shares"].items())
    lines = [f"== {name}: budget {fmt_bytes(res['budget_bytes'])}, mix {shares}",
             f"  {'method':<16} {'modality':<6} {'examples':>8} {'steps':>6} {'batch':>7} {'pad%':>6} "
             f"{'tok/s':>9} {'x tok/s':>8}"]
    for m, s in res["methods"].items():
        r = res["ratios_vs_fixed"][m]
        for mod, c in s["per_modality"].items():
            lines.append(f"  {m:<16} {mod:<6} {c['examples']:>8} {c['steps']:>6} {c['mean_batch_size']:>7.1f} "
                         f"{100 * c['padding_share']:>5.1f}% {c['real_tokens_per_s']:>9.0f} "
                         f"{r[f'{mod}_real_tokens_per_s']:>8.2f}")
        lines.append(f"  {m:<16} {'mix':<6} {'':>8} {'':>6} {'':>7} {'':>6} {s['real_tokens_per_s']:>9.0f} "
                     f"{r['real_tokens_per_s']:>8.2f}   s/1000 examples {s['seconds_per_1000_examples']:.1f} "
                     f"(x{r['time_to_consume']:.2f})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["demo", "multi30k", "both"], default="both",
                   help="both: the demo corpus, and Multi30k when it is at ../shared/data/multi30k")
    p.add_argument("--examples", type=int, default=6000, help="examples each method consumes (default 6000)")
    p.add_argument("--chunk", type=int, default=500, help="examples per turn (default 500)")
    p.add_argument("--budget", default="256MiB", help="memory budget (default 256MiB)")
    p.add_argument("--tolerance", type=float, default=0.05, help="OOMptimizer tolerance (default 0.05)")
    p.add_argument("--num-speech", type=int, default=4000, help="Multi30k speech clips (default 4000)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON figures here")
    p.add_argument("override", nargs="*", help="Hydra overrides of nemo_emmett/conf/salm_t5.yaml, e.g. data.num_workers=0")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    names = ["demo", "multi30k"] if args.data == "both" else [args.data]
    if "multi30k" in names and not (MULTI30K / "train.en.gz").is_file():
        if args.data == "multi30k":
            sys.exit(f"Multi30k not found at {MULTI30K} (train.{{en,de,fr,cs}}.gz)")
        print(f"Multi30k not at {MULTI30K}: demo only", file=sys.stderr)
        names = ["demo"]
    results: dict[str, Any] = {"benchmark": "throughput", "config": {
        "examples": args.examples, "chunk": args.chunk, "budget": args.budget, "tolerance": args.tolerance,
        "threads": args.threads, "cpu_count": os.cpu_count(), "torch": torch.__version__, "overrides": args.override}}
    tables = []
    for name in names:
        results[name] = run_data(name, args)
        tables.append(format_table(name, results[name]))
    print("\n".join(tables))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
