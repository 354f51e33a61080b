"""Seconds per training step of the demo at a given CPU thread setting (docs/reliability.md).

    python benchmarks/thread_steps.py --threads 2          # torch's default on 2 cores
    python benchmarks/thread_steps.py --threads 1
    python benchmarks/thread_steps.py --threads 0          # threads.mode=auto
    python benchmarks/thread_steps.py --threads 1 model.perception.features=80 model.perception.subsampling_conv_channels=64
Load the machine with another process to compare under load (e.g. a torch matmul loop)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from nemo_emmett import training
from nemo_emmett.config_store import compose_config

CONF = Path(__file__).resolve().parents[1] / "nemo_emmett" / "conf"


class StepClock(pl.Callback):
    def __init__(self) -> None:
        self.ended: dict[int, float] = {}
        self.threads: dict[int, int] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        self.ended[trainer.global_step] = time.perf_counter()
        self.threads[trainer.global_step] = torch.get_num_threads()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: threads.mode=auto)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=120, help="timed from step 20 to this step")
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides of nemo_emmett/conf/salm_t5.yaml")
    args = ap.parse_args()
    clock = StepClock()
    base = training.build_callbacks
    training.build_callbacks = lambda cfg: [*base(cfg), clock]
    mode = ["threads.mode=fixed", f"threads.threads={args.threads}"] if args.threads else ["threads.mode=auto"]
    cfg = compose_config("salm_t5", [
        f"trainer.max_steps={args.steps}", "trainer.val_check_interval=100000", "trainer.limit_val_batches=0",
        f"data.num_workers={args.workers}", *mode, f"exp_manager.exp_dir={tempfile.mkdtemp()}",
        "exp_manager.create_checkpoint_callback=false", "+trainer.enable_progress_bar=false",
        *args.overrides], config_dir=CONF)
    training.train(cfg)
    first, last = 20, args.steps
    print(f"threads={args.threads or 'auto'} (at the last step {clock.threads[last]}) workers={args.workers} "
          f"s/step={(clock.ended[last] - clock.ended[first]) / (last - first):.3f} {' '.join(args.overrides)}")


if __name__ == "__main__":
    main()
