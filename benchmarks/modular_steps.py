#!/usr/bin/env python
"""Training steps per second of the modular (MAMMOTH) demo against SALM-T5's, with mixed batches and with
one route per batch (``data.batch_by``), on the same data and batch budget (docs/mammoth.md).

    python benchmarks/modular_steps.py                     # 150 steps per arm, 2 rounds
    python benchmarks/modular_steps.py --steps 30 --rounds 1 --out /tmp/ms   # quick

One process; each arm is a real training run (Lightning Trainer, the demo corpus, the default data config:
the same sources, weights and 2D buckets with their padded-size budget) of ``--steps`` steps, timed from
step 20 on (compilation, first batches and the dataloader's start excluded), validation off. Arms:

* ``salm_t5``: ``--config-name salm_t5``, the anchor;
* ``mammoth_mixed``: ``--config-name mammoth`` with ``data.batch_by=mixed``: a batch holds any directions of
  its modality and routing runs one sub-batch per route in it;
* ``mammoth_components``: the same with ``data.batch_by=components``: every batch holds one route, one pass.

Rounds repeat the arms in turn, so that machine noise hits them alike; the table gives each arm's median
seconds per step over the rounds, examples per step, and both rates as ratios to ``salm_t5``. Writes
``modular_steps.json`` and ``modular_steps.md`` to ``--out``; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from nemo_emmett import training
from nemo_emmett.config_store import compose_config
from nemo_emmett.data.batch import batch_parts

CONF = Path(__file__).resolve().parents[1] / "nemo_emmett" / "conf"
ARMS = {"salm_t5": ("salm_t5", []), "mammoth_mixed": ("mammoth", ["data.batch_by=mixed"]),
        "mammoth_components": ("mammoth", ["data.batch_by=components"])}
FIRST_TIMED = 20


class StepClock(pl.Callback):
    """When each training step ended, and how many examples it had."""

    def __init__(self) -> None:
        self.ended: dict[int, float] = {}
        self.examples: dict[int, int] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           *args: Any) -> None:
        self.ended[trainer.global_step] = time.perf_counter()
        self.examples[trainer.global_step] = sum(len(part) for part in batch_parts(batch))


def run_arm(name: str, steps: int, workers: int, extra: list[str]) -> dict[str, float]:
    config, overrides = ARMS[name]
    clock = StepClock()
    base = training.build_callbacks
    training.build_callbacks = lambda cfg: [*base(cfg), clock]
    try:
        cfg = compose_config(config, [
            f"trainer.max_steps={steps}", "trainer.val_check_interval=100000", "trainer.limit_val_batches=0",
            "trainer.max_time=null", f"data.num_workers={workers}", f"exp_manager.exp_dir={tempfile.mkdtemp()}",
            "exp_manager.create_checkpoint_callback=false", "+trainer.enable_progress_bar=false",
            "monitoring.bin_plot=false", *overrides, *extra], config_dir=CONF)
        training.train(cfg)
    finally:
        training.build_callbacks = base
    timed = range(FIRST_TIMED + 1, steps + 1)
    seconds = (clock.ended[steps] - clock.ended[FIRST_TIMED]) / len(timed)
    return {"s_per_step": seconds, "examples_per_step": statistics.fmean(clock.examples[s] for s in timed)}


def summarise(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per arm: median seconds per step over the rounds, mean examples per step, and the ratios of steps/s
    and examples/s to ``salm_t5``'s."""
    out = {}
    for arm in rounds[0]:
        s = statistics.median(r[arm]["s_per_step"] for r in rounds)
        ex = statistics.fmean(r[arm]["examples_per_step"] for r in rounds)
        out[arm] = {"s_per_step": s, "steps_per_s": 1 / s, "examples_per_step": ex, "examples_per_s": ex / s}
    anchor = out["salm_t5"]
    for v in out.values():
        v["steps_ratio"] = v["steps_per_s"] / anchor["steps_per_s"]
        v["examples_ratio"] = v["examples_per_s"] / anchor["examples_per_s"]
    return out


def table(summary: dict[str, dict[str, float]], rounds: list[dict[str, dict[str, float]]]) -> str:
    lines = ["| arm | s/step (median) | steps/s | examples/step | examples/s | steps/s vs salm_t5 | "
             "examples/s vs salm_t5 | s/step per round |", "|---|---|---|---|---|---|---|---|"]
    for arm, v in summary.items():
        per_round = ", ".join(f"{r[arm]['s_per_step']:.3f}" for r in rounds)
        lines.append(f"| {arm} | {v['s_per_step']:.3f} | {v['steps_per_s']:.2f} | {v['examples_per_step']:.1f} | "
                     f"{v['examples_per_s']:.1f} | {v['steps_ratio']:.2f}x | {v['examples_ratio']:.2f}x | {per_round} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150, help=f"steps per arm, timed from step {FIRST_TIMED}")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    ap.add_argument("--out", default="outputs/modular_steps")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every arm")
    args = ap.parse_args(argv)
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown or "salm_t5" not in arms:
        ap.error(f"--arms: unknown {unknown} or no salm_t5 (the anchor); choose from {', '.join(ARMS)}")
    if args.steps <= FIRST_TIMED:
        ap.error(f"--steps must be > {FIRST_TIMED} (steps up to {FIRST_TIMED} are not timed), got {args.steps}")
    rounds = [{arm: run_arm(arm, args.steps, args.workers, args.overrides) for arm in arms}
              for _ in range(args.rounds)]
    summary = summarise(rounds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"steps": args.steps, "rounds": rounds, "summary": summary, "overrides": args.overrides}
    (out / "modular_steps.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "modular_steps.md").write_text(table(summary, rounds) + "\n")
    print(table(summary, rounds))
    print(json.dumps(summary))
    return result


if __name__ == "__main__":
    main()
