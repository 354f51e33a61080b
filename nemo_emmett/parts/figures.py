"""A run's figures: drawn with matplotlib off-screen, saved as PNG in the run's log folder and logged
to the run's loggers (TensorBoard's images tab, a W&B media panel)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

log = logging.getLogger(__name__)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed; imported when a figure is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_folder(trainer: pl.Trainer) -> Path:
    """Where the run writes its logs: the TensorBoard logger's folder under exp_manager, else the
    Trainer's ``default_root_dir``."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def log_figure(trainer: pl.Trainer, fig: Any, name: str, *, tag: str, step: int | None = None) -> Path | None:
    """Save ``fig`` as ``<run folder>/<name>.png`` and log it as ``tag`` to every logger that takes
    figures (TensorBoard: ``add_figure``; W&B: ``log_image``); close it. Rank 0 only (other ranks close
    the figure and return None). Returns the PNG's path."""
    plt = pyplot()
    try:
        if not trainer.is_global_zero:
            return None
        step = trainer.global_step if step is None else step
        path = run_folder(trainer) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        for logger in trainer.loggers:
            experiment = logger.experiment
            if hasattr(experiment, "add_figure"):  # TensorBoard's SummaryWriter
                experiment.add_figure(tag, fig, global_step=step, close=False)
                experiment.flush()
            elif hasattr(logger, "log_image"):  # Lightning's WandbLogger
                logger.log_image(key=tag, images=[str(path)], step=step)
        log.info("%s: %s", tag, path)
        return path
    finally:
        plt.close(fig)
