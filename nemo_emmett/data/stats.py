"""Logs the data stream's counts (drawn, emitted, dropped per modality) with the training metrics,
so that examples no bucket fits are visible in tensorboard, not only in worker log lines."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


class DataStreamStats(pl.Callback):
    def __init__(self, every_n_steps: int = 50):
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "stream_stats") or trainer.global_step % self.every_n_steps:
            return
        stats = dm.stream_stats()
        if stats:
            pl_module.log_dict({f"data/{k}": float(v) for k, v in stats.items()}, on_step=True, on_epoch=False,
                               reduce_fx="sum", sync_dist=False)
