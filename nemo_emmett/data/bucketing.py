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


ESTIMATION_METHODS = ("min_padding", "equal_count")


@dataclass(frozen=True)
class BinEstimate:
    bins: list[tuple[float, float]]
    """(max_input, max_output) per bucket, sorted by input edge then output edge."""
    num_examples: int
    num_outliers: int
    """Examples left out of estimation because they exceed ``max_input``, ``max_output`` or the budget."""
    outlier_rows: tuple[int, ...] = ()
    """Their rows in the lengths estimated from (for naming them)."""


def equal_count_edges(values: np.ndarray, num_bins: int) -> list[float]:
    """Upper edges of ``num_bins`` runs of equal count over the sorted values (repeats merged)."""
    v = np.sort(values)
    return sorted({float(part.max()) for part in np.array_split(v, min(num_bins, len(v))) if len(part)})


def min_padding_edges(values: np.ndarray, num_bins: int, max_points: int = 1024) -> list[float]:
    """Upper edges that minimise the total padding ``sum(edge(x) - x)`` of the values, where each
    value pads to the smallest edge >= it; exact dynamic programming over the distinct values.

    More than ``max_points`` distinct values (continuous durations) are first grouped into
    ``max_points`` runs of equal count; a group's candidate edge is its largest value, and its cost
    uses the real values, so the result is exact for edges restricted to those group maxima.
    Example: [1, 1, 1, 2, 10] in 2 bins -> [2, 10] (padding 3), where equal counts give [1, 10] (8).
    """
    u, c = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
    sums = u * c
    if len(u) > max_points:
        groups = np.array_split(np.arange(len(u)), max_points)
        u = np.array([u[g[-1]] for g in groups])
        c, sums = np.array([c[g].sum() for g in groups]), np.array([sums[g].sum() for g in groups])
    M, K = len(u), min(num_bins, len(u))
    C = np.concatenate([[0.0], np.cumsum(c)])  # (M+1,) prefix counts
    S = np.concatenate([[0.0], np.cumsum(sums)])  # (M+1,) prefix sums
    a, b = np.arange(M)[:, None], np.arange(M)[None, :]
    # cost[a, b]: padding of the points a..b all padded to u[b]; inf where a > b. (M, M)
    cost = np.where(a <= b, u[None, :] * (C[None, 1:] - C[:-1, None]) - (S[None, 1:] - S[:-1, None]), np.inf)
    best = cost[0].copy()  # best[b]: least padding of points 0..b in the bins used so far
    choice = []
    for _ in range(K - 1):
        # A new last bin a..b after the best split of 0..a-1: (M, M) -> (M,) over a
        total = np.concatenate([[np.inf], best[:-1]])[:, None] + cost
        choice.append(total.argmin(axis=0))
        best = total.min(axis=0)
    edges, end = [], M - 1
    for arg in reversed(choice):
        edges.append(float(u[end]))
        end = int(arg[end]) - 1
        if end < 0:
            break
    if end >= 0:
        edges.append(float(u[end]))
    return sorted(set(edges))


def estimate_bins_2d(
    lengths: np.ndarray,
    num_input_bins: int,
    num_output_bins: int,
    *,
    method: str = "min_padding",
    max_input: float | None = None,
    max_output: float | None = None,
    max_total: float | None = None,
) -> BinEstimate:
    """2D bins: input edges first, then output edges within each input bin.

    lengths: (N, 2) rows of (input length, output length). Examples longer than ``max_input`` or
    ``max_output``, or whose input + output exceeds ``max_total`` (one example over a batch's padded
    budget: no bucket built for it could hold a batch), are outliers: left out and counted. Input edges split the input lengths into
    ``num_input_bins`` (``method``: ``min_padding``, the least total padding, see
    :func:`min_padding_edges`; or ``equal_count``, runs of equal count). Each input bin then
    holds exactly the examples it will receive (input in (previous edge, edge]), and their output
    lengths are split the same way into ``num_output_bins``. Every kept example fits its bucket.
    Repeated edges are merged, so fewer bins than asked may come back.

    Example: inputs 1..8 with outputs equal to inputs, 2x2 bins (either method) ->
    [(4, 2), (4, 4), (8, 6), (8, 8)].
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    if lengths.ndim != 2 or lengths.shape[1] != 2:
        raise ValueError(f"lengths must have shape (N, 2), got {lengths.shape}")
    if num_input_bins < 1 or num_output_bins < 1:
        raise ValueError(f"bin counts must be >= 1, got {num_input_bins} x {num_output_bins}")
    if method not in ESTIMATION_METHODS:
        raise ValueError(f"method must be one of {ESTIMATION_METHODS}, got {method!r}")
    split = min_padding_edges if method == "min_padding" else equal_count_edges
    keep = np.ones(len(lengths), dtype=bool)
    if max_input is not None:
        keep &= lengths[:, 0] <= max_input
    if max_output is not None:
        keep &= lengths[:, 1] <= max_output
    if max_total is not None:
        keep &= lengths.sum(axis=1) <= max_total
    kept = lengths[keep]
    if len(kept) == 0:
        raise ValueError("no example is within max_input / max_output / max_padded_size: cannot estimate bins")
    bins: list[tuple[float, float]] = []
    lower = -np.inf
    for in_edge in split(kept[:, 0], num_input_bins):
        outs = kept[(kept[:, 0] > lower) & (kept[:, 0] <= in_edge), 1]
        bins.extend((in_edge, o) for o in split(outs, num_output_bins))
        lower = in_edge
    return BinEstimate(bins=bins, num_examples=len(lengths), num_outliers=int((~keep).sum()),
                       outlier_rows=tuple(int(i) for i in np.flatnonzero(~keep)))


@dataclass
class BucketGrid:
    """Maps an example's (input, output) length to its bucket: the bucket of its input bin (the
    smallest input edge >= its input) with the smallest output edge >= its output.

    When that input bin has no bucket long enough in output (input 17, output 33 where the bin's
    buckets end at output 30), ``outliers="nearest"`` (the default) places it in the smallest (by
    padded area) bucket that holds both lengths, e.g. (46, 50); ``"drop"`` (strict grid) has no
    bucket for it. Either way an example that no bucket holds has none (``None``: the sampler drops,
    counts and logs it).
    """

    bins: list[tuple[float, float]]
    outliers: str = "nearest"
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
            return self.smallest_holding(input_len, output_len)
        return None

    def smallest_holding(self, input_len: float, output_len: float) -> int | None:
        """The bucket of least padded area (max_input * max_output) that holds both lengths; None: no bucket does."""
        fits = [(i * o, k) for k, (i, o) in enumerate(self.bins) if i >= input_len and o >= output_len]
        return min(fits)[1] if fits else None


def batch_sizes_for_budget(bins: Sequence[tuple[float, float]], max_padded_size: float) -> list[int]:
    """Largest batch per bucket whose padded size ``B * (max_input + max_output)`` fits the budget."""
    sizes = [int(max_padded_size // (i + o)) for i, o in bins]
    too_big = [b for b, s in zip(bins, sizes) if s < 1]
    if too_big:
        raise ValueError(f"max_padded_size={max_padded_size} is below one example of bucket(s) {too_big} "
                         f"(one example pads to max_input + max_output, up to {max(i + o for i, o in too_big)})")
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
