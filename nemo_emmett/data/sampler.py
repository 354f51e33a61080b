"""2D bucketing sampler over the multiplexed stream: homogeneous, hard-capped, checkpointable batches.

Each example drawn from the multiplexer is measured, placed in the bucket of its modality, and a
bucket that reaches its batch size is emitted. A batch never holds more examples than its
bucket's size and never pads beyond the bucket's edges, so budgets are hard caps (unlike
lhotse's duration limit, which lets the crossing example in).

Resuming: examples waiting in buckets are not stored in the checkpoint (they may carry audio).
The state keeps a multiplexer snapshot taken at or before the oldest waiting draw and the draw
indices still waiting; ``load_state_dict`` rewinds the multiplexer to that snapshot and replays
the draws, putting back exactly the waiting ones. ``max_wait`` bounds how far back that goes:
a bucket whose oldest example waited longer is emitted early, as a smaller batch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nemo_emmett.data.bucketing import BucketGrid
from nemo_emmett.data.examples import Example, is_audio
from nemo_emmett.data.multiplexer import Multiplexer
from nemo_emmett.data.stream import check_state_keys
from nemo_emmett.data.transform import Rejected

log = logging.getLogger(__name__)

MODALITIES = ("audio", "text")


@dataclass
class ModalityBuckets:
    grid: BucketGrid
    batch_sizes: list[int]

    def __post_init__(self) -> None:
        if len(self.batch_sizes) != len(self.grid):
            raise ValueError(f"{len(self.grid)} buckets but {len(self.batch_sizes)} batch sizes")
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch sizes must be >= 1, got {self.batch_sizes}")


@dataclass
class Batch:
    modality: str
    bucket: int
    max_input: float
    max_output: float
    examples: list[Example]
    lengths: list[tuple[float, float]]
    group: str = ""
    """The batch group its examples share (``data.batch_by``); "" when batches mix them."""


@dataclass
class SamplerStats:
    """Counts per modality; every example drawn ends up emitted, waiting, in a drop counter, or
    rejected by a transform (``filtered``, per reason over both modalities)."""

    drawn: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    emitted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    dropped_no_bucket: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    early_batches: int = 0
    filtered: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "drawn": dict(self.drawn),
            "emitted": dict(self.emitted),
            "dropped_no_bucket": dict(self.dropped_no_bucket),
            "early_batches": self.early_batches,
            "filtered": dict(self.filtered),
        }

    @classmethod
    def from_dict(cls, s: dict[str, Any]) -> SamplerStats:
        """The inverse of :meth:`as_dict`; a state saved before transforms existed has no ``filtered``."""
        return cls(dict(s["drawn"]), dict(s["emitted"]), dict(s["dropped_no_bucket"]), s["early_batches"],
                   dict(s.get("filtered", {})))


class Bucketing2DSampler:
    """Yields :class:`Batch` objects from an infinite :class:`Multiplexer` (training) or, with
    ``finite_source``, from a finite iterator, flushing partial buckets at its end (validation).

    ``transforms(source index, example, draw index)``: run on each drawn example before it is measured
    (training only; ``data/transforms.py`` ``SourceTransforms``); a :class:`Rejected` one is counted under
    its reason. It must be a pure function of its arguments, so that replaying draws on resume repeats it."""

    def __init__(
        self,
        *,
        buckets: dict[str, ModalityBuckets],
        measure: Callable[[Example], tuple[float, float]],
        mux: Multiplexer | None = None,
        finite_source: Iterator[Example] | None = None,
        max_wait: int = 20000,
        snapshot_every: int = 64,
        warn_drops_every: int = 100,
        transforms: Callable[[int, Example, int], Example | Rejected] | None = None,
        group_of: Callable[[Example], str] | None = None,
    ):
        if (mux is None) == (finite_source is None):
            raise ValueError("give exactly one of mux (training) or finite_source (validation)")
        unknown = set(buckets) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modality {sorted(unknown)} in buckets; expected {MODALITIES}")
        self.buckets = buckets
        self.measure = measure
        self.mux = mux
        self.finite_source = finite_source
        self.max_wait = max_wait
        self.snapshot_every = snapshot_every
        self.warn_drops_every = warn_drops_every
        if transforms is not None and mux is None:
            raise ValueError("transforms are for training (a mux), never for a finite validation pass")
        self.transforms = transforms
        self.group_of = group_of
        """``data.batch_by``: examples wait in the buckets of their group (``data/batch_groups.py``)."""
        self.stats = SamplerStats()
        # (modality, group, bucket) -> waiting (draw index, example, lengths)
        self._buffers: dict[tuple[str, str, int], list[tuple[int, Example, tuple[float, float]]]] = {}
        self._waiting: OrderedDict[int, tuple[str, str, int]] = OrderedDict()  # draw index -> bucket key
        self._snapshots: deque[tuple[int, dict[str, Any]]] = deque()
        self._draw = 0  # draws made (finite mode counts examples)

    # ---- iteration -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        while True:
            try:
                d, source, ex = self._next_draw()
            except StopIteration:
                break
            batch = self._add(d, source, ex)
            if batch is not None:
                yield batch
            stale = self._stale_bucket()
            if stale is not None:
                self.stats.early_batches += 1
                yield self._emit(stale)
        yield from self._flush()

    def _next_draw(self) -> tuple[int, int, Example]:
        """(draw index, source index, example); the source is 0 in finite mode."""
        d, source = self._draw, 0
        if self.mux is not None:
            if d % self.snapshot_every == 0:
                self._snapshots.append((d, self.mux.state_dict()))
                self._prune_snapshots()
            source, ex = self.mux.next_with_source()
        else:
            ex = next(self.finite_source)
        self._draw += 1
        return d, source, ex

    def _add(self, d: int, source: int, ex: Example, *, count: bool = True) -> Batch | None:
        modality = "audio" if is_audio(ex) else "text"
        if count:
            self.stats.drawn[modality] += 1
        if self.transforms is not None:
            ex = self.transforms(source, ex, d)
            if isinstance(ex, Rejected):
                if count:
                    self.stats.filtered[ex.reason] = self.stats.filtered.get(ex.reason, 0) + 1
                return None
        spec = self.buckets.get(modality)
        if spec is None:
            raise ValueError(f"got a {modality} example but data config defines no {modality} buckets")
        lengths = self.measure(ex)
        b = spec.grid.select(*lengths)
        if b is None:
            if count:
                self._count_drop(modality, lengths, spec)
            return None
        key = (modality, self.group_of(ex) if self.group_of is not None else "", b)
        buf = self._buffers.setdefault(key, [])
        buf.append((d, ex, lengths))
        self._waiting[d] = key
        if len(buf) >= spec.batch_sizes[b]:
            return self._emit(key)
        return None

    def _emit(self, key: tuple[str, str, int]) -> Batch:
        modality, group, b = key
        items = self._buffers.pop(key)
        for d, _, _ in items:
            del self._waiting[d]
        self.stats.emitted[modality] += len(items)
        max_in, max_out = self.buckets[modality].grid.bins[b]
        return Batch(modality, b, max_in, max_out, [ex for _, ex, _ in items], [ln for _, _, ln in items], group)

    def _stale_bucket(self) -> tuple[str, str, int] | None:
        if not self._waiting:
            return None
        oldest = next(iter(self._waiting))
        return self._waiting[oldest] if self._draw - oldest > self.max_wait else None

    def _flush(self) -> Iterator[Batch]:
        for key in sorted(self._buffers):
            yield self._emit(key)

    def _count_drop(self, modality: str, lengths: tuple[float, float], spec: ModalityBuckets) -> None:
        self.stats.dropped_no_bucket[modality] += 1
        n = self.stats.dropped_no_bucket[modality]
        if n == 1 or n % self.warn_drops_every == 0:
            grid = spec.grid
            if grid.smallest_holding(*lengths) is not None:
                why = "fit no bucket of their input bin (outliers: drop); outliers: nearest keeps them"
            else:
                edges = (max(b[0] for b in grid.bins), max(b[1] for b in grid.bins))
                why = (f"fit no bucket (the largest edges: input {edges[0]:.1f}, output {edges[1]:.1f}); to keep "
                       f"such examples give larger bins or raise data.{modality}_buckets.max_padded_size")
            log.warning("%d %s example(s) dropped so far: they %s (latest: input %.1f, output %.1f)",
                        n, modality, why, *lengths)

    # ---- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.mux is None:
            raise RuntimeError("a finite (validation) sampler is not checkpointed")
        oldest = self._prune_snapshots()
        if self._snapshots and self._snapshots[0][0] <= oldest:
            snap_draw, snap = self._snapshots[0]
        else:  # nothing waits and no snapshot yet at this draw
            snap_draw, snap = self._draw, self.mux.state_dict()
        return {
            "draw": self._draw,
            "snapshot_draw": snap_draw,
            "snapshot": snap,
            "waiting": list(self._waiting),
            "stats": self.stats.as_dict(),
        }

    def _prune_snapshots(self) -> int:
        """Keep the newest snapshot at or before the oldest waiting draw, and all later ones."""
        oldest = next(iter(self._waiting)) if self._waiting else self._draw
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= oldest:
            self._snapshots.popleft()
        return oldest

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_keys("sampler", state, {k: None for k in ("draw", "snapshot_draw", "snapshot", "waiting", "stats")})
        if self.mux is None:
            raise RuntimeError("a finite (validation) sampler is not checkpointed")
        self.mux.load_state_dict(state["snapshot"])
        self._buffers.clear()
        self._waiting.clear()
        self._snapshots = deque()
        waiting = set(state["waiting"])
        self._draw = state["snapshot_draw"]
        while self._draw < state["draw"]:
            d, source, ex = self._next_draw()
            if d in waiting:
                self._add(d, source, ex, count=False)
        self.stats = SamplerStats.from_dict(state["stats"])
