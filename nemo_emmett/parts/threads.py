"""CPU intra-op threads that suit the machine's load: on a busy machine, torch's default (one thread per
core) makes every step wait for a thread that another process holds, so a 2-core laptop with one other
busy process steps 2-4x slower with 2 threads than with 1 (``docs/reliability.md``). The
:class:`ThreadTuner` measures the candidates side by side on the run's own training steps, keeps the
fastest, and measures again every ``period`` steps, so that it follows a load that comes and goes."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)

MODES = ("auto", "fixed")


@dataclass
class ThreadsConfig:
    """Intra-op threads of the training process on CPU (GPU runs are left alone)."""

    mode: str = "auto"
    """'auto': measure the candidate thread counts on training steps and keep the fastest (re-measured
    every ``period`` steps), so that a machine other processes load keeps stepping (docs/reliability.md);
    'fixed': ``threads`` threads throughout (with ``threads: null``, torch's default, one per core)."""
    threads: int | None = None
    """'fixed': this many threads (None: torch's default, one per core). 'auto': the largest candidate
    (None: torch's default); the candidates are it, its half and 1."""
    warmup_steps: int = 5
    """Steps left unmeasured at the start of fit (first-call allocations, worker start-up)."""
    trial_steps: int = 24
    """Steps of one measurement, alternating the candidates step by step so each sees the same data mix."""
    period: int = 300
    """Steps between the start of one measurement and the next."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"threads.mode: {self.mode!r} is not one of {MODES}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads.threads: {self.threads} (expected a positive integer or null)")
        if self.trial_steps < 2 or self.period <= self.trial_steps:
            raise ValueError(f"threads: trial_steps={self.trial_steps} must be >= 2 and below "
                             f"period={self.period}")


def apply_threads(cfg: ThreadsConfig) -> None:
    """Sets torch's intra-op threads where the config pins them (``threads`` given): the fixed count, or
    the largest candidate of 'auto'."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)


def candidate_threads(most: int) -> list[int]:
    """``most``, its half and 1, ascending and without repeats: ``candidate_threads(2) == [1, 2]``."""
    return sorted({max(1, most), max(1, most // 2), 1})


def fastest_threads(samples: dict[int, dict[str, list[float]]]) -> int | None:
    """The candidate with the lowest expected step time, from ``samples[threads][kind]`` (seconds per
    step of each kind of batch, e.g. 'audio' and 'text', whose costs differ 10x): each candidate's median
    per kind, weighted by how often the kind occurred. Only kinds every candidate saw count; None when
    there is none (or fewer than two candidates)."""
    if len(samples) < 2:
        return None
    kinds = set.intersection(*(set(k for k, v in by_kind.items() if v) for by_kind in samples.values()))
    if not kinds:
        return None
    weight = {k: sum(len(by_kind.get(k, [])) for by_kind in samples.values()) for k in kinds}

    def cost(threads: int) -> float:
        return sum(weight[k] * statistics.median(samples[threads][k]) for k in kinds)

    return min(sorted(samples), key=cost)


class ThreadTuner(pl.Callback):
    """Alternates the candidate thread counts over ``trial_steps`` training steps, keeps the fastest
    (:func:`fastest_threads`) until the next measurement, logs each choice and the metric ``cpu_threads``."""

    def __init__(self, cfg: ThreadsConfig | None = None):
        self.cfg = cfg or ThreadsConfig()
        self.candidates = candidate_threads(self.cfg.threads or torch.get_num_threads())
        self.chosen = self.candidates[-1]
        self.active = False
        self._samples: dict[int, dict[str, list[float]]] = {}
        self._started: float | None = None
        self._trial_threads: int | None = None
        self._steps = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.active = pl_module.device.type == "cpu" and len(self.candidates) > 1
        self._threads_before = torch.get_num_threads()
        if self.active:
            log.info("CPU threads: measuring %s on training steps (threads.mode=auto)", self.candidates)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active:  # what follows the fit in this process (a test, export) gets torch's threads back
            torch.set_num_threads(self._threads_before)

    def _phase(self) -> int:
        """Position of the current step in its period: measured while below ``trial_steps``."""
        return (self._steps - self.cfg.warmup_steps) % self.cfg.period

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._trial_threads = None
        if not self.active or self._steps < self.cfg.warmup_steps:
            return
        phase = self._phase()
        if phase < self.cfg.trial_steps:
            self._trial_threads = self.candidates[phase % len(self.candidates)]
            torch.set_num_threads(self._trial_threads)
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._steps += 1
        if self._trial_threads is None:
            return
        seconds = time.perf_counter() - self._started
        kind = str(getattr(batch, "modality", "batch"))
        self._samples.setdefault(self._trial_threads, {}).setdefault(kind, []).append(seconds)
        if self._phase() == self.cfg.trial_steps:  # that was the measurement's last step
            self._choose(pl_module)

    def _choose(self, pl_module: pl.LightningModule) -> None:
        best = fastest_threads(self._samples)
        if best is not None:
            medians = {t: {k: round(statistics.median(v), 3) for k, v in by_kind.items()}
                       for t, by_kind in sorted(self._samples.items())}
            change = f"{self.chosen} -> {best}" if best != self.chosen else f"keeping {best}"
            log.info("CPU threads: %s (median seconds per step by threads and batch kind: %s)", change, medians)
            self.chosen = best
        torch.set_num_threads(self.chosen)
        self._samples = {}
        pl_module.log("cpu_threads", float(self.chosen), on_step=True, on_epoch=False)
