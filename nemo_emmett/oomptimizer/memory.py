"""Measured peak memory of a piece of work (a training step), on GPU and on CPU.

GPU: ``torch.cuda.reset_peak_memory_stats`` then ``torch.cuda.max_memory_allocated``: the
caching allocator's own count of bytes held by live tensors, at its highest.

CPU: PyTorch has no allocator statistics on CPU, so the work runs under ``torch.profiler``
with ``profile_memory=True``. Every allocation and free of the CPU allocator is recorded as a
``[memory]`` event with its byte delta; the running sum of the deltas, in time order, peaks at
the highest number of bytes the work held at once. Tensors alive before the work (parameters,
optimizer state, buffers) are not in that sum: :func:`resident_bytes` counts them, and the peak
is their sum. Allocations outside PyTorch's allocator (Python objects, the interpreter) are not
counted, on either device: the budget is a budget for tensors, as on GPU.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PeakMemory:
    resident: int
    """Bytes of the tensors alive before the work (those counted by :func:`resident_bytes`)."""
    extra: int
    """Highest number of bytes the work allocated above that, at any moment."""

    @property
    def peak(self) -> int:
        return self.resident + self.extra


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the storages behind ``tensors``, each storage counted once (views share one)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in seen or storage.nbytes() == 0:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def resident_bytes(module: torch.nn.Module, *optimizers: torch.optim.Optimizer) -> int:
    """Bytes held between steps: parameters, their gradients when kept, buffers, optimizer state."""
    tensors: list[torch.Tensor] = list(module.parameters()) + list(module.buffers())
    tensors += [p.grad for p in module.parameters() if p.grad is not None]
    for optimizer in optimizers:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensor_bytes(tensors)


class CpuAllocationPeak:
    """``start()`` ... ``stop() -> bytes``: the highest running total of CPU allocator bytes allocated
    (minus freed) in between, from the profiler's ``[memory]`` events."""

    def __init__(self):
        self._prof = None

    def start(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False)
        with _quiet_stderr():  # the profiler backend prints a line at every start and stop
            self._prof.__enter__()

    def stop(self) -> int:
        from torch.autograd import DeviceType

        prof, self._prof = self._prof, None
        if prof is None:
            raise RuntimeError("CpuAllocationPeak.stop() without start()")
        with _quiet_stderr():
            prof.__exit__(None, None, None)
        events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
        events.sort(key=lambda e: e[0])
        current = peak = 0
        for _, delta in events:
            current += delta
            peak = max(peak, current)
        return peak


def cpu_allocation_peak(fn: Callable[[], object]) -> int:
    """Highest running total of CPU allocator bytes allocated (minus freed) while ``fn`` runs."""
    meter = CpuAllocationPeak()
    meter.start()
    try:
        fn()
    finally:
        peak = meter.stop()
    return peak


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C++ prints bypass ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class PeakMeter:
    """``start(resident)`` ... ``stop() -> PeakMemory`` around a piece of work on ``device``."""

    def __init__(self, device: torch.device):
        self.device = device
        self._cpu = CpuAllocationPeak()
        self._resident = 0

    def start(self, resident: int) -> None:
        """``resident``: bytes alive before the work (CPU; on GPU the allocator already counts them)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._resident = torch.cuda.memory_allocated(self.device)
        else:
            self._resident = resident
            self._cpu.start()

    def stop(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return PeakMemory(self._resident, torch.cuda.max_memory_allocated(self.device) - self._resident)
        return PeakMemory(self._resident, self._cpu.stop())


def measure_peak(fn: Callable[[], object], *, device: torch.device, resident: int) -> PeakMemory:
    """Run ``fn`` once and return its measured peak (see :class:`PeakMeter`)."""
    meter = PeakMeter(device)
    meter.start(resident)
    try:
        fn()
    finally:
        peak = meter.stop()
    return peak
