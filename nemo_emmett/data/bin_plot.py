"""The bin plot: each modality's 2D length histogram (input length, output length) with its buckets
drawn as boxes, each labelled with its example count and batch size.

Drawn by ``emmett-estimate-bins`` and, at fit start, by :class:`BinPlot` (after the OOMptimizer sized
the buckets: its callback runs first), saved as ``<log_dir>/bin_plot.png`` and logged as a figure."""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
import numpy as np

from nemo_emmett.data.sampler import ModalityBuckets
from nemo_emmett.parts.figures import log_figure, pyplot

AXES = {"audio": ("speech length (token-equivalent frames)", "target tokens"),
        "text": ("source tokens", "target tokens")}
"""Axis labels per modality (the units of ``data/lengths.py``)."""


def bucket_boxes(bins: list[tuple[float, float]]) -> list[tuple[float, float, float, float]]:
    """(input low, output low, input high, output high) of each bucket, in the grid's order. A bucket
    starts where the previous input bin ended and, within its input bin, where the previous bucket ended:
    ``bucket_boxes([(10, 5), (10, 9), (20, 7)]) == [(0, 0, 10, 5), (0, 5, 10, 9), (10, 0, 20, 7)]``."""
    in_edges = sorted({i for i, _ in bins})
    lower_in = dict(zip(in_edges, [0.0, *in_edges[:-1]]))
    lower_out: dict[float, float] = {}
    boxes = []
    for i, o in bins:  # sorted by (input, output)
        boxes.append((lower_in[i], lower_out.get(i, 0.0), i, o))
        lower_out[i] = o
    return boxes


def bucket_counts(lengths: np.ndarray, mb: ModalityBuckets) -> list[int]:
    """Examples of ``lengths`` (N, 2) that each bucket holds (those no bucket holds are left out)."""
    picks = Counter(mb.grid.select(float(a), float(b)) for a, b in lengths)
    return [picks.get(k, 0) for k in range(len(mb.grid))]


def histogram_edges(values: np.ndarray, cells: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """(values to histogram, bin edges) of one axis: whole token counts get one cell each, ``(k - 1, k]``
    (drawn at ``k - 0.5``, so that each cell lies inside the bucket that holds ``k``), where there are at
    most ``cells`` of them; other lengths ``cells`` equal cells."""
    top = float(values.max())
    if np.all(values == np.round(values)) and top <= cells:
        return values - 0.5, np.arange(0.0, top + 1.0)
    return values, np.linspace(0.0, top, cells + 1)


def draw_buckets(ax: Any, lengths: np.ndarray, mb: ModalityBuckets, *, modality: str) -> Any:
    """One modality's panel on ``ax``: the histogram of ``lengths`` (N, 2; may be empty), the bucket
    boxes, and in each box ``n=<examples>`` and ``bs=<batch size>`` (turned upright in a narrow box).
    Returns the histogram's image (for a colour bar), or None without lengths."""
    from matplotlib.patches import Rectangle

    image = None
    if len(lengths):
        (x, x_edges), (y, y_edges) = histogram_edges(lengths[:, 0]), histogram_edges(lengths[:, 1])
        *_, image = ax.hist2d(x, y, bins=[x_edges, y_edges], cmap="Blues", cmin=1)
    edges = np.asarray(mb.grid.bins)
    top = np.maximum(edges.max(axis=0), lengths.max(axis=0) if len(lengths) else 0)
    counts = bucket_counts(lengths, mb) if len(lengths) else [None] * len(mb.grid)
    for (x0, y0, x1, y1), n, bs in zip(bucket_boxes(mb.grid.bins), counts, mb.batch_sizes):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1))
        narrow = (x1 - x0) / top[0] < 0.12 and (y1 - y0) / top[1] >= 0.12
        label = f"bs={bs}" if n is None else (f"n={n} bs={bs}" if narrow else f"n={n}\nbs={bs}")
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, ha="center", va="center", fontsize=7, color="darkred",
                rotation=90 if narrow else 0, bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1})
    ax.set_xlim(0, top[0] * 1.02)
    ax.set_ylim(0, top[1] * 1.02)
    ax.set_xlabel(AXES.get(modality, ("input length", "output length"))[0])
    ax.set_ylabel(AXES.get(modality, ("input length", "output length"))[1])
    held = f", {sum(counts)} of {len(lengths)} examples" if len(lengths) else ""
    ax.set_title(f"{modality}: {len(mb.grid)} buckets{held}")
    return image


def bin_figure(buckets: dict[str, ModalityBuckets], lengths: dict[str, np.ndarray]) -> Any:
    """One panel per modality (:func:`draw_buckets`), side by side."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(buckets), figsize=(6.5 * len(buckets), 5.2), squeeze=False)
    for ax, (modality, mb) in zip(axes[0], buckets.items()):
        image = draw_buckets(ax, lengths.get(modality, np.zeros((0, 2))), mb, modality=modality)
        if image is not None:
            fig.colorbar(image, ax=ax, label="examples per histogram cell")
    fig.suptitle("2D buckets: example lengths (histogram), buckets (red boxes: n = examples, bs = batch size)")
    fig.tight_layout()
    return fig


@runtime_checkable
class PlannedData(Protocol):
    """What the callback reads of the data module (``EmmettDataModule``, set up before fit)."""

    plan: Any


class BinPlot(pl.Callback):
    """At fit start, the bin plot of the data module's plan (``trainer.datamodule.plan``): the buckets
    and batch sizes the training loader will use (after an OOMptimizer listed before it)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = trainer.datamodule
        plan = data.plan if isinstance(data, PlannedData) else None
        if plan is None or not plan.buckets:
            return
        log_figure(trainer, bin_figure(plan.buckets, plan.lengths), "bin_plot", tag="data/bin_plot")
