"""What a training run shows its user, configured in one place (``monitoring:`` in a run config): the
progress bar, the learning rate, the data-stream scalars and the figures. The callbacks that read it:
``parts/progress_bar.py``, ``data/stats.py``, ``data/bin_plot.py``, ``mgcm/conflict_plot.py``."""

from __future__ import annotations

from dataclasses import dataclass

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor


@dataclass
class MonitoringConfig:
    """Defaults for every run; a YAML or an override sets what differs (``monitoring.bin_plot=false``)."""

    progress_bar: bool = True
    """A step-based training bar (``step/max_steps`` with an ETA, from the resumed step on a resumed run)
    and validation bars that count examples against the plan's total; False: Lightning's own bar
    (``N/?`` on our infinite training stream). ``trainer.enable_progress_bar=false`` hides either."""
    progress_refresh_steps: int = 1
    """Redraw the bars every N steps (a larger value keeps batch-job logs short)."""
    learning_rate: bool = True
    """Log each optimizer group's learning rate (Lightning's ``LearningRateMonitor``, ``lr-AdamW``)
    every ``trainer.log_every_n_steps``; silent in a run without a logger."""
    data_stats_every_n_steps: int = 50
    """Log the data-stream scalars every N steps (``data/...``: counts, realised source shares,
    batches per bucket, padding); 0: never."""
    bin_plot: bool = True
    """At fit start (after the OOMptimizer sized the buckets): the 2D length histogram of each modality
    with its buckets, their example counts and batch sizes, as ``<log_dir>/bin_plot.png`` and a
    figure in the loggers (``data/bin_plot``)."""
    conflict_plot: bool = True
    """With MGCM on: conflict share and mean cosine per module type over the steps, as
    ``<log_dir>/mgcm_conflicts.png`` and a figure in the loggers (``mgcm/conflicts``), at fit end."""
    conflict_plot_every_n_steps: int | None = None
    """Also redraw the conflict plot every N steps (None: at fit end only)."""

    def __post_init__(self) -> None:
        if self.progress_refresh_steps < 1:
            raise ValueError(f"monitoring.progress_refresh_steps must be >= 1, got {self.progress_refresh_steps}")
        if self.data_stats_every_n_steps < 0:
            raise ValueError(f"monitoring.data_stats_every_n_steps must be >= 0, got {self.data_stats_every_n_steps}")
        if self.conflict_plot_every_n_steps is not None and self.conflict_plot_every_n_steps < 1:
            raise ValueError("monitoring.conflict_plot_every_n_steps must be >= 1 or null, "
                             f"got {self.conflict_plot_every_n_steps}")


class LoggedLearningRateMonitor(LearningRateMonitor):
    """Lightning's ``LearningRateMonitor``, which raises in a Trainer without a logger; this one stays
    silent there. The loggers come from exp_manager after the callbacks are built, so whether there
    is one is known only when training starts."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._silent = False

    def on_train_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        self._silent = not trainer.loggers
        if not self._silent:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if not self._silent:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if not self._silent:
            super().on_train_epoch_start(trainer, *args, **kwargs)
