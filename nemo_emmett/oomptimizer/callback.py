"""OOMptimizer: the largest batch size of every 2D bucket that fits a memory budget, measured on
the real model before ``fit``, handed to the data module, and cached on disk (the search:
``search.py``; the probe: ``probe.py``; the budget: ``config.py``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl

from nemo_emmett.data.batch import FusedBatch, TranslationBatch
from nemo_emmett.oomptimizer.cache import save_json
from nemo_emmett.oomptimizer.config import OOMptimizerConfig, fmt_bytes
from nemo_emmett.oomptimizer.measure import agree_across_ranks, measure_for_trainer
from nemo_emmett.oomptimizer.memory import PeakMeter, resident_bytes
from nemo_emmett.oomptimizer.result import OOMptimizerResult

log = logging.getLogger(__name__)


@runtime_checkable
class BucketedData(Protocol):
    """What the callback needs of the data module (``EmmettDataModule``): its plan, read before
    the training loader is built, and a way to hand it the batch sizes found."""

    plan: Any

    def set_batch_sizes(self, modality: str, batch_sizes: list[int]) -> None: ...


class OOMptimizer(pl.Callback):
    """Before the first training batch, sizes every bucket's batch for the real model and run
    settings, and hands them to the data module (``set_batch_sizes``; the sampler reads them
    when the training loader is built, which happens after ``on_fit_start``)."""

    def __init__(self, cfg: OOMptimizerConfig | dict | None = None):
        from omegaconf import OmegaConf

        if cfg is None or isinstance(cfg, OOMptimizerConfig):
            self.cfg = cfg or OOMptimizerConfig()
        else:
            merged = OmegaConf.merge(OmegaConf.structured(OOMptimizerConfig), OmegaConf.create(dict(cfg)))
            self.cfg = OmegaConf.to_object(merged)
        self.result: OOMptimizerResult | None = None
        self.measured: dict[tuple[str, int], int] = {}
        """Highest measured peak of real training steps per (modality, bucket) (``measure_steps``)."""
        self._steps_measured = 0
        self._meter: PeakMeter | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = trainer.datamodule
        if not isinstance(data, BucketedData) or data.plan is None:
            raise RuntimeError("OOMptimizer needs an EmmettDataModule set up before fit (its plan holds the buckets)")
        result = agree_across_ranks(trainer, measure_for_trainer(trainer, data, pl_module, self.cfg))
        for modality in list(data.plan.buckets):
            data.set_batch_sizes(modality, result.batch_sizes(modality))
        if self.cfg.output and trainer.is_global_zero:
            save_json(Path(self.cfg.output), result.bucket_file())
        self.result = result

    # ---- measuring real steps against the budget ---------------------------------------------
    def _measuring(self) -> bool:
        n = self.cfg.measure_steps
        return self.result is not None and (n < 0 or self._steps_measured < n)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: TranslationBatch | FusedBatch, batch_idx: int) -> None:
        if not self._measuring():
            return
        if self._meter is None or self._meter.device != pl_module.device:
            self._meter = PeakMeter(pl_module.device)
        self._meter.start(resident_bytes(pl_module, *trainer.optimizers))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: TranslationBatch | FusedBatch, batch_idx: int) -> None:
        if not self._measuring():
            return
        peak = self._meter.stop().peak
        self._steps_measured += 1
        # a fused step under its audio bucket: the audio rows were measured as fused steps (oomptimizer/fused.py)
        key = ("audio", batch.audio.bucket) if isinstance(batch, FusedBatch) else (batch.modality, batch.bucket)
        self.measured[key] = max(self.measured.get(key, 0), peak)
        share = peak / self.result.budget
        pl_module.log("memory/peak_share", share, on_step=True, on_epoch=False, batch_size=len(batch))
        if share > 1.0:
            log.warning("step %d (%s bucket %d, batch %d) peaked at %s, over the OOMptimizer budget of %s",
                        trainer.global_step, *key, len(batch), fmt_bytes(peak), fmt_bytes(self.result.budget))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.measured:
            log.info("OOMptimizer: measured peak of %d training steps, per bucket:\n%s", self._steps_measured,
                     "\n".join(f"  {m:<6} bucket {b:>3}: {fmt_bytes(v):>11} ({100 * v / self.result.budget:5.1f}% "
                               "of budget)" for (m, b), v in sorted(self.measured.items())))
