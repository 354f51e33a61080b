"""Checkpoints every N training steps, between validations, so that a killed run loses at most N steps.

exp_manager's checkpoint callback keeps the best checkpoints by validation loss and the ``-last``
one, saved at validations; asked to save every N steps as well, it names those saves after a stale or
missing validation loss (``val_loss=0.0000``). This one saves ``<name>--step=<step>.ckpt`` beside
them, keeps only the newest, and writes it atomically (a temporary file renamed), so that a kill
during a save never leaves a truncated newest checkpoint. :func:`newest_checkpoint` picks, for a
resume, the newer of it and exp_manager's ``-last`` checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

STEP_GLOB = "*--step=*.ckpt"


class StepCheckpoint(ModelCheckpoint):
    def __init__(self, dirpath: str | Path, *, name: str, every_n_steps: int):
        if every_n_steps < 1:
            raise ValueError(f"checkpoint_every_n_steps must be >= 1 or null, got {every_n_steps}")
        super().__init__(dirpath=dirpath, filename=f"{name}--{{step}}", every_n_train_steps=every_n_steps,
                         save_top_k=1, monitor=None, save_last=False)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        super()._save_checkpoint(trainer, tmp)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
            for old in Path(filepath).parent.glob(STEP_GLOB):  # older ones, from this run or a killed one
                if old.name != Path(filepath).name:
                    old.unlink(missing_ok=True)
        self._last_checkpoint_saved = filepath
        trainer.strategy.barrier("StepCheckpoint")


def newest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The most recently written finished checkpoint among the ``-last`` and step checkpoints of
    ``checkpoint_dir``; None when there is none."""
    from nemo.utils.callbacks.nemo_model_checkpoint import NeMoModelCheckpoint

    folder = Path(checkpoint_dir)
    found = [p for p in (*folder.glob("*-last.ckpt"), *folder.glob(STEP_GLOB))
             if p.is_file() and not NeMoModelCheckpoint.is_checkpoint_unfinished(p)]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)
