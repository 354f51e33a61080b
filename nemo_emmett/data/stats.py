"""Logs the data stream's counts (drawn, emitted, dropped per modality) with the training metrics,
so that examples no bucket fits are visible in tensorboard, not only in worker log lines.

Beside them (``data/...``, every ``monitoring.data_stats_every_n_steps``): each source's realised share
of the draws (``data/share_<source>``, to compare with its weight in the plan's summary), the batches
consumed per bucket (``data/batches_<modality>_bucket<k>``) and the padding share of the collated
tensors over the window (``data/padding_<modality>_input`` / ``_output``)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl

from nemo_emmett.data.report import BatchTally


@runtime_checkable
class StreamData(Protocol):
    """What the callback reads of the data module (``EmmettDataModule``)."""

    tally: BatchTally

    def stream_stats(self) -> dict[str, float]: ...


class DataStreamStats(pl.Callback):
    def __init__(self, every_n_steps: int = 50):
        """``every_n_steps``: 0 logs nothing."""
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        dm = trainer.datamodule
        if not isinstance(dm, StreamData) or not self.every_n_steps or trainer.global_step % self.every_n_steps:
            return
        stats = {**dm.stream_stats(), **dm.tally.take_padding()}
        if stats:
            pl_module.log_dict({f"data/{k}": float(v) for k, v in stats.items()}, on_step=True, on_epoch=False,
                               reduce_fx="sum", sync_dist=False)
