"""Progress bars with totals: training counts optimizer steps up to ``trainer.max_steps`` (with an ETA),
validation counts examples up to what the data plan holds.

Lightning's bar counts the batches of an epoch, whose total it takes from the loader's length; the
training stream here is infinite (one endless epoch, no length), so Lightning shows ``N/?`` and no ETA,
and the validation pass (finite, but its batch count depends on how shards split over workers) shows
no total either."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar


@runtime_checkable
class ValidationSize(Protocol):
    """What the bar needs of the data module (``EmmettDataModule``): how many validation examples one
    pass on this rank holds (None: unknown)."""

    def num_val_examples(self) -> int | None: ...


def _set(bar: Any, n: int) -> None:
    if not bar.disable:
        bar.n = n
        bar.refresh()


class StepProgressBar(TQDMProgressBar):
    """The training bar is ``global_step / max_steps``; a resumed run's bar starts at the resumed step
    (``initial``, so the ETA comes from this run's own pace). Without ``max_steps`` (-1) it keeps
    Lightning's total. The validation bar counts examples when the data module knows their number."""

    def __init__(self, refresh_rate: int = 1, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._val_total: int | None = None
        self._val_seen = 0

    @property
    def total_steps(self) -> int | None:
        max_steps = self.trainer.max_steps
        return max_steps if max_steps is not None and max_steps > 0 else None

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        total = self.total_steps
        if total is None:
            return
        bar = self.train_progress_bar
        bar.reset(total)
        bar.initial = trainer.global_step  # tqdm's rate (and ETA) is (n - initial) / elapsed
        bar.n = trainer.global_step
        bar.set_description("Training")
        bar.refresh()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.total_steps is None:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = trainer.global_step  # optimizer steps: batch_idx differs under gradient accumulation and on resume
        if self._should_update(n, self.train_progress_bar.total):
            _set(self.train_progress_bar, n)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        changed = self.has_dataloader_changed(dataloader_idx)  # consumed here: the parent would see False
        if not changed:
            return
        data = trainer.datamodule
        whole = trainer.limit_val_batches == 1.0  # a limited pass ends early: Lightning's batch total then
        self._val_total = data.num_val_examples() if whole and isinstance(data, ValidationSize) else None
        self._val_seen = 0
        bar = self.val_progress_bar
        if self._val_total is None:
            bar.reset(None)
        else:
            bar.reset(self._val_total)
            bar.unit = "ex"
        bar.initial = 0
        desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
        bar.set_description(desc if self._val_total is None else f"{desc} (examples)")

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._val_total is None:
            return super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        self._val_seen += len(batch)
        if self._should_update(batch_idx + 1, self.val_progress_bar.total) or self._val_seen >= self._val_total:
            _set(self.val_progress_bar, self._val_seen)
