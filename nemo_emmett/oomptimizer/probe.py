"""One real training step on a synthetic batch, with its memory measured: the OOMptimizer's probe.

The step is what training does, in Lightning's order: forward under the run's precision
(autocast for mixed precision) while the previous step's gradients are still alive, the loss of
:meth:`TranslationModel.task_losses`, zero_grad, backward (through a grad scaler for fp16),
gradient clipping when configured, and an optimizer step. The optimizer is a fresh one built by
the model's own ``configure_optimizers``; an unmeasured first step creates its state (Adam's two
moments) and leaves gradients (a batch of one example suffices: their size does not depend on
the batch); every probe after it measures one steady-state step. The optimizer and gradients then
live on between probes, as in training; an out-of-memory error clears them and the next probe
warms up again. The model's weights are restored after the search.

A probe fits when it raised no out-of-memory error and its measured peak plus the DDP margin is
within the budget (with a ``share`` below 1: when the memory it allocated above the resident tensors is
within that share of the budget's room above them). With a ``companion`` (``data.fusion: zip``) every
probe step is a fused one: the probed batch plus a fixed worst-case batch of the other modality
(``oomptimizer/fused.py`` decides which). On GPU the run is also capped by ``torch.cuda.set_per_process_memory_fraction``,
so an over-budget probe fails with ``torch.cuda.OutOfMemoryError``, which is caught and cleaned up.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nemo_emmett.data.batch import FusedBatch, TranslationBatch
from nemo_emmett.oomptimizer.memory import measure_peak, resident_bytes

log = logging.getLogger(__name__)

BatchFactory = Callable[[str, int, float, float], TranslationBatch]
"""(modality, batch_size, max_input, max_output) -> a worst-case batch (``worst_case.worst_case_batch``)."""


@dataclass(frozen=True)
class ProbeResult:
    batch_size: int
    peak: int | None
    """Measured peak bytes (None after an out-of-memory error)."""
    fits: bool


@dataclass(frozen=True)
class Companion:
    """A worst-case batch of the other modality that joins every probe step (a fused step's other half)."""

    modality: str
    max_input: float
    max_output: float
    batch_size: int


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                              or "failed to allocate" in msg)


def first_optimizer(configured: Any) -> torch.optim.Optimizer:
    """The optimizer in whatever ``configure_optimizers`` returned (optimizer, dict, list or tuple)."""
    if isinstance(configured, torch.optim.Optimizer):
        return configured
    if isinstance(configured, dict):
        return first_optimizer(configured["optimizer"])
    if isinstance(configured, (list, tuple)) and configured:
        return first_optimizer(configured[0])
    raise TypeError(f"cannot find an optimizer in configure_optimizers() output {type(configured).__name__}")


class StepProbe:
    def __init__(self, model: torch.nn.Module, *, make_batch: BatchFactory, device: torch.device, budget: int,
                 margin: int = 0, forward_context: Callable[[], contextlib.AbstractContextManager] | None = None,
                 use_grad_scaler: bool = False, gradient_clip_val: float | None = None):
        self.model = model
        self.make_batch = make_batch
        self.device = device
        self.budget = budget
        self.margin = margin
        self.forward_context = forward_context or contextlib.nullcontext
        self.use_grad_scaler = use_grad_scaler
        self.gradient_clip_val = gradient_clip_val
        self.num_probes = 0
        self.companion: Companion | None = None
        self.share = 1.0
        self._optimizer: torch.optim.Optimizer | None = None
        self._scaler: torch.amp.GradScaler | None = None
        self._warm = False

    @contextlib.contextmanager
    def preserving_model(self):
        """Run probes inside: a probe optimizer lives for the whole search; afterwards the weights,
        the train/eval mode and empty gradients are put back."""
        saved = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        was_training = self.model.training
        self.model.train()
        self._optimizer = first_optimizer(self.model.configure_optimizers())
        self._scaler = torch.amp.GradScaler(self.device.type) if self.use_grad_scaler else None
        self._warm = False
        try:
            yield self
        finally:
            self._optimizer = self._scaler = None
            self.model.load_state_dict(saved)
            self.model.zero_grad(set_to_none=True)
            self.model.train(was_training)
            self._cleanup()

    def fuse_with(self, companion: Companion | None, share: float = 1.0) -> None:
        """From now on every probe step also holds ``companion``'s worst-case batch, and fits when it
        allocates at most ``share`` of the room above the resident tensors (``budget - margin - resident``)."""
        if not 0 < share <= 1:
            raise ValueError(f"probe share must be in (0, 1], got {share}")
        self.companion, self.share = companion, share
        self._warm = False  # the next steady state is the fused step's

    def batch(self, modality: str, batch_size: int, max_input: float, max_output: float
              ) -> TranslationBatch | FusedBatch:
        """The probed worst-case batch, fused with the companion's when there is one."""
        probed = self.make_batch(modality, batch_size, max_input, max_output)
        c = self.companion
        if c is None:
            return probed
        other = self.make_batch(c.modality, c.batch_size, c.max_input, c.max_output)
        return FusedBatch(audio=probed, text=other) if modality == "audio" else FusedBatch(audio=other, text=probed)

    def __call__(self, modality: str, max_input: float, max_output: float, batch_size: int) -> ProbeResult:
        """Measure one steady-state training step with a worst-case batch of ``batch_size``."""
        from lightning.pytorch.utilities import move_data_to_device

        if self._optimizer is None:
            raise RuntimeError("StepProbe: call probes inside `with probe.preserving_model():`")
        self.num_probes += 1
        batch = None
        try:
            if not self._warm:  # steady state: optimizer state created, last step's gradients alive
                one = move_data_to_device(self.batch(modality, 1, max_input, max_output), self.device)
                self._step(one, self._optimizer, self._scaler)
                self._warm = True
            batch = move_data_to_device(self.batch(modality, batch_size, max_input, max_output), self.device)
            memory = measure_peak(lambda: self._step(batch, self._optimizer, self._scaler), device=self.device,
                                  resident=resident_bytes(self.model, self._optimizer))
            peak = memory.peak
        except Exception as e:  # noqa: BLE001 - only out-of-memory errors are a probe outcome
            if not is_oom(e):
                raise
            log.debug("probe %s b=%d: out of memory", modality, batch_size)
            peak = memory = None
            self._warm = False  # gradients may be half-written: warm up again before the next measurement
            self.model.zero_grad(set_to_none=True)
        finally:
            batch = None  # free before the next probe
            self._cleanup()
        if memory is None:
            fits = False
        elif self.share < 1:
            fits = memory.extra <= self.share * (self.budget - self.margin - memory.resident)
        else:
            fits = memory.peak + self.margin <= self.budget
        return ProbeResult(batch_size, peak, fits)

    def _step(self, batch: TranslationBatch | FusedBatch, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler | None) -> None:
        """Lightning's order: forward (the previous step's gradients still alive), zero_grad, backward,
        clipping, optimizer step; the gradients stay until the next step's zero_grad."""
        with self.forward_context():
            loss, _ = self.model.task_losses(batch)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if self.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.gradient_clip_val)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    def _cleanup(self) -> None:
        if self.device.type == "cuda":  # on CPU reference counting already freed the probe's tensors
            gc.collect()
            torch.cuda.empty_cache()

