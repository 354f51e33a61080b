"""The MGCM conflict plot: per pair of tasks (``st-asr``, ``st-mt``) and module type, the share of
modules whose gradients conflict and their mean cosine, over the training steps.

Drawn from the windows MGCM logs (``mgcm/{primary}-{aux}/{statistic}/{type}``, kept by
:class:`~nemo_emmett.mgcm.step.MGCMStep` in ``history``), at fit end and optionally every N steps, saved
as ``<log_dir>/mgcm_conflicts.png`` and logged as a figure (``mgcm/conflicts``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl

from nemo_emmett.mgcm.step import MGCMStep
from nemo_emmett.parts.figures import log_figure, pyplot

PLOTTED = (("conflict_share", "share of modules in conflict (cos < 0)"), ("mean_cos", "mean cosine (primary, auxiliary)"))
"""The statistics drawn, one row each, with their axis labels."""

Series = dict[str, dict[str, dict[str, tuple[list[int], list[float]]]]]
"""pair -> statistic -> module type -> (steps, values)."""


def conflict_series(history: Sequence[tuple[int, dict[str, float]]]) -> Series:
    """The per-module-type series of :data:`PLOTTED` statistics in MGCM's logged windows (``(step,
    {"mgcm/st-asr/conflict_share/encoder": 0.4, ...})``); the all-module values (no type) are left out."""
    out: Series = {}
    wanted = {name for name, _ in PLOTTED}
    for step, metrics in history:
        for key, value in metrics.items():
            parts = key.split("/")
            if len(parts) != 4 or parts[0] != "mgcm" or parts[2] not in wanted:
                continue
            _, pair, statistic, module_type = parts
            steps, values = out.setdefault(pair, {}).setdefault(statistic, {}).setdefault(module_type, ([], []))
            steps.append(step)
            values.append(value)
    return out


def conflict_figure(history: Sequence[tuple[int, dict[str, float]]]) -> Any:
    """One column per task pair, one row per :data:`PLOTTED` statistic, one line per module type."""
    plt = pyplot()
    series = conflict_series(history)
    pairs = sorted(series) or ["(no windows logged)"]
    fig, axes = plt.subplots(len(PLOTTED), len(pairs), figsize=(6 * len(pairs), 3.4 * len(PLOTTED)),
                             squeeze=False, sharex=True)
    types = sorted({t for p in series.values() for s in p.values() for t in s})
    colours = {t: plt.cm.tab10(i % 10) for i, t in enumerate(types)}
    for col, pair in enumerate(pairs):
        primary, _, aux = pair.partition("-")
        for row, (statistic, label) in enumerate(PLOTTED):
            ax = axes[row][col]
            for module_type, (steps, values) in sorted(series.get(pair, {}).get(statistic, {}).items()):
                ax.plot(steps, values, marker=".", markersize=3, linewidth=1.2, label=module_type,
                        color=colours[module_type])
            if statistic == "mean_cos":
                ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
            else:
                ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{primary.upper()} (primary) vs {aux.upper()}" if aux else pair)
            if row == len(PLOTTED) - 1:
                ax.set_xlabel("training step")
        handles, labels = axes[0][col].get_legend_handles_labels()
        if handles:
            axes[0][col].legend(handles, labels, title="module type", fontsize=8, loc="best")
    fig.suptitle("MGCM gradient conflicts per module type (each point: one logging window)")
    fig.tight_layout()
    return fig


@runtime_checkable
class WithMGCM(Protocol):
    """A model whose MGCM step (None: MGCM off) keeps the logged windows (``models/base.py``)."""

    mgcm: MGCMStep | None


class ConflictPlot(pl.Callback):
    """Draws :func:`conflict_figure` of the model's MGCM windows at fit end (and every ``every_n_steps``);
    nothing for a model without MGCM or before its first window."""

    def __init__(self, every_n_steps: int | None = None):
        self.every_n_steps = every_n_steps

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mgcm = pl_module.mgcm if isinstance(pl_module, WithMGCM) else None
        if mgcm is None or not mgcm.history:
            return
        log_figure(trainer, conflict_figure(mgcm.history), "mgcm_conflicts", tag="mgcm/conflicts")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._draw(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module)
