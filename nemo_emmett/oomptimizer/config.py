"""The OOMptimizer's settings and the memory budget they give.

Budget: on GPU ``memory_fraction`` of the device's memory (also set as the process's cap), or
``memory_budget`` when given; on CPU ``memory_budget`` (bytes, or "512MiB", "2GiB"), else
``memory_fraction`` of the machine's RAM. With more than one device, ``ddp_grad_buffers``
gradient-sized buffers (DDP's reduction buckets) are added to every measured peak.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


@dataclass
class OOMptimizerConfig:
    enabled: bool = False
    memory_budget: Any = None
    """Bytes (int) or a size string ("512MiB", "2GiB"); null: memory_fraction of the device (GPU) or RAM."""
    memory_fraction: float = 0.9
    tolerance: float = 0.05
    """Bisection stops when the bracket is at most max(1, tolerance x batch size) wide."""
    headroom: float = 0.05
    """Share of the budget a probe must leave free: a real step holds a little more than the probe's
    (Lightning's logging and loop bookkeeping; measured +1.5% over the probe on the demo config)."""
    max_batch_size: int = 4096
    ddp_grad_buffers: float = 1.0
    """Gradient-sized buffers added to every peak when world size > 1 (DDP's reduction buckets)."""
    cache: bool = True
    cache_dir: str | None = None
    """null: ${NEMO_EMMETT_CACHE:-~/.cache/nemo_emmett}/oomptimizer."""
    output: str | None = None
    """Also write the result as a bucket file (the data config's ``bucket_file``)."""
    measure_steps: int = 0
    """Measure the peak memory of this many real training steps (-1: all) and log ``memory/peak_share``."""
    fused_text_share: float = 0.5
    """``data.fusion: zip``: the share of the memory above the resident model (weights, gradients,
    optimizer state) that a fused step's text batch may take; the audio batch beside it gets the rest
    (``oomptimizer/fused.py``). Lower it for runs whose audio buckets matter more."""


def parse_bytes(value: Any) -> int:
    """512, "512MiB", "2GiB", "1.5GB" -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"memory_budget must be bytes or a size string like '2GiB', got {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(value))
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"memory_budget {value!r}: expected bytes or a size like '512MiB', '2GiB', '1.5GB'")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def resolve_budget(cfg: OOMptimizerConfig, device: torch.device) -> int:
    if not 0 < cfg.memory_fraction <= 1:
        raise ValueError(f"oomptimizer.memory_fraction must be in (0, 1], got {cfg.memory_fraction}")
    if not 0 < cfg.fused_text_share < 1:
        raise ValueError(f"oomptimizer.fused_text_share must be in (0, 1), got {cfg.fused_text_share}")
    if not 0 <= cfg.headroom < 1:
        raise ValueError(f"oomptimizer.headroom must be in [0, 1), got {cfg.headroom}")
    if cfg.memory_budget is not None:
        budget = parse_bytes(cfg.memory_budget)
    elif device.type == "cuda":
        budget = int(torch.cuda.get_device_properties(device).total_memory * cfg.memory_fraction)
    else:
        budget = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * cfg.memory_fraction)
    if budget <= 0:
        raise ValueError(f"oomptimizer memory budget must be > 0 bytes, got {budget}")
    return budget
