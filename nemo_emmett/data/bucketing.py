"""2D buckets over (input length, output length), in comparable units.

Audio input is measured in token-equivalent frames (duration / token_equivalent_duration),
text input and every output in tokens. A bucket is the pair of its upper edges
``(max_input, max_output)``; every example in it pads to at most that size, so a batch size
chosen for the edges is a hard cap on the padded batch.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OUTLIER_POLICIES = ("drop", "nearest")


@dataclass(frozen=True)
class BinEstimate:
    bins: list[tuple[float, float]]
    """(max_input, max_output) per bucket, sorted by input edge then output edge."""
    num_examples: int
    num_outliers: int
    """Examples left out of estimation because they exceed ``max_input`` or ``max_output``."""


def estimate_bins_2d(
    lengths: np.ndarray,
    num_input_bins: int,
    num_output_bins: int,
    *,
    max_input: float | None = None,
    max_output: float | None = None,
) -> BinEstimate:
    """Equal-mass 2D bins.

    lengths: (N, 2) rows of (input length, output length). Examples longer than ``max_input`` or
    ``max_output`` are outliers: left out and counted. The rest, sorted by input length, are cut
    into ``num_input_bins`` runs of equal count (``np.array_split``); each run's input edge is
    its largest input length. Within a run, sorted by output length, the run is cut again into
    ``num_output_bins`` equal-count parts whose edges are their largest output lengths. Edges
    that repeat (many equal lengths) are merged, so fewer bins than asked may come back.

    Example: inputs 1..8 with outputs equal to inputs, 2x2 bins ->
    [(4, 2), (4, 4), (8, 6), (8, 8)].
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    if lengths.ndim != 2 or lengths.shape[1] != 2:
        raise ValueError(f"lengths must have shape (N, 2), got {lengths.shape}")
    if num_input_bins < 1 or num_output_bins < 1:
        raise ValueError(f"bin counts must be >= 1, got {num_input_bins} x {num_output_bins}")
    keep = np.ones(len(lengths), dtype=bool)
    if max_input is not None:
        keep &= lengths[:, 0] <= max_input
    if max_output is not None:
        keep &= lengths[:, 1] <= max_output
    kept = lengths[keep]
    if len(kept) == 0:
        raise ValueError("no example is within max_input / max_output: cannot estimate bins")
    # Equal inputs: longest output first, so that examples of a run's edge input that spill into the next
    # run (and are bucketed by that edge) are never longer on output than the run's largest output edge.
    kept = kept[np.lexsort((-kept[:, 1], kept[:, 0]))]
    bins: list[tuple[float, float]] = []
    prev_in = -np.inf
    for run in np.array_split(kept, min(num_input_bins, len(kept))):
        if len(run) == 0:
            continue
        in_edge = float(run[:, 0].max())
        outs = np.sort(run[:, 1])
        if in_edge == prev_in:  # merge with the previous run: same input edge
            outs = np.sort(np.concatenate([outs, [b[1] for b in bins if b[0] == in_edge]]))
            bins = [b for b in bins if b[0] != in_edge]
        out_edges = sorted({float(p.max()) for p in np.array_split(outs, min(num_output_bins, len(outs))) if len(p)})
        bins.extend((in_edge, o) for o in out_edges)
        prev_in = in_edge
    return BinEstimate(bins=bins, num_examples=len(lengths), num_outliers=int((~keep).sum()))


@dataclass
class BucketGrid:
    """Maps an example's (input, output) length to its bucket.

    ``outliers="drop"``: an example whose output exceeds every bucket of its input bin, or whose
    input exceeds every bin, has no bucket (``None``). ``"nearest"``: it goes to the smallest
    (by padded area) bucket that holds it, if any.
    """

    bins: list[tuple[float, float]]
    outliers: str = "drop"
    _in_edges: list[float] = field(init=False, repr=False)
    _out_edges: list[list[float]] = field(init=False, repr=False)
    _offsets: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.bins:
            raise ValueError("a bucket grid needs at least one bin")
        if self.outliers not in OUTLIER_POLICIES:
            raise ValueError(f"outliers must be one of {OUTLIER_POLICIES}, got {self.outliers!r}")
        self.bins = [(float(a), float(b)) for a, b in self.bins]
        if self.bins != sorted(set(self.bins)):
            raise ValueError(f"bins must be distinct and sorted by (max_input, max_output), got {self.bins}")
        self._in_edges, self._out_edges, self._offsets = [], [], []
        for k, (i, o) in enumerate(self.bins):
            if not self._in_edges or self._in_edges[-1] != i:
                self._in_edges.append(i)
                self._out_edges.append([])
                self._offsets.append(k)
            self._out_edges[-1].append(o)

    def __len__(self) -> int:
        return len(self.bins)

    def select(self, input_len: float, output_len: float) -> int | None:
        r = bisect.bisect_left(self._in_edges, input_len)
        if r < len(self._in_edges):
            j = bisect.bisect_left(self._out_edges[r], output_len)
            if j < len(self._out_edges[r]):
                return self._offsets[r] + j
        if self.outliers == "nearest":
            return self._nearest_larger(input_len, output_len)
        return None

    def _nearest_larger(self, input_len: float, output_len: float) -> int | None:
        fits = [(i * o, k) for k, (i, o) in enumerate(self.bins) if i >= input_len and o >= output_len]
        return min(fits)[1] if fits else None


def batch_sizes_for_budget(bins: Sequence[tuple[float, float]], max_padded_size: float) -> list[int]:
    """Largest batch per bucket whose padded size ``B * (max_input + max_output)`` fits the budget."""
    sizes = [int(max_padded_size // (i + o)) for i, o in bins]
    too_big = [b for b, s in zip(bins, sizes) if s < 1]
    if too_big:
        raise ValueError(f"max_padded_size={max_padded_size} is below one example of bucket(s) {too_big}")
    return sizes


def load_bucket_file(path: str | Path) -> dict[str, dict[str, list]]:
    """Read a bucket JSON (written by estimate_bins.py or the OOMptimizer)::

        {"audio": {"bins": [[in, out], ...], "batch_sizes": [...]}, "text": {...}}

    ``batch_sizes`` may be absent (bins only). Errors name the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bucket file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"bucket file {str(path)!r} is not valid JSON: {e}") from e
    for modality, spec in data.items():
        if modality not in ("audio", "text"):
            raise ValueError(f"{path}: unknown key {modality!r}; expected 'audio' and/or 'text'")
        if "bins" not in spec:
            raise ValueError(f"{path}: {modality!r} lacks 'bins'")
        bs = spec.get("batch_sizes")
        if bs is not None and len(bs) != len(spec["bins"]):
            raise ValueError(f"{path}: {modality!r} has {len(spec['bins'])} bins but {len(bs)} batch_sizes")
        if bs is not None and any(not isinstance(b, int) or b < 1 for b in bs):
            raise ValueError(f"{path}: {modality!r} batch_sizes must be integers >= 1, got {bs}")
    return data
