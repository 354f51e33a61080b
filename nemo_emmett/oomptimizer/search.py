"""The largest batch size that passes a monotone test: exponential growth, then bisection.

``fits(b)`` must be monotone (if b fits, every smaller batch fits). From ``start`` the search
doubles while the batch fits (or halves while it does not), which brackets the answer between
a size that fits and one that does not in O(log answer) probes; bisection then narrows the
bracket until it is at most ``max(1, tolerance * lower)`` wide, again in O(log) probes. The
answer is the bracket's lower end: a size that was *measured* to fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


class NothingFits(ValueError):
    """Even a batch of one does not fit."""


@dataclass
class SearchResult:
    batch_size: int
    probes: list[tuple[int, bool]] = field(default_factory=list)
    """Every probe in order: (batch size, fitted)."""
    capped: bool = False
    """True when ``max_batch`` fitted, so the true limit may be higher."""


def find_max_batch(fits: Callable[[int], bool], *, start: int = 1, tolerance: float = 0.05,
                   max_batch: int = 1 << 16) -> SearchResult:
    """Largest ``b`` in [1, max_batch] with ``fits(b)``, to within ``tolerance`` (relative, at least
    one example). Raises :class:`NothingFits` when ``fits(1)`` is false."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    probes: list[tuple[int, bool]] = []

    def probe(b: int) -> bool:
        ok = bool(fits(b))
        probes.append((b, ok))
        return ok

    b = min(max(1, start), max_batch)
    if probe(b):  # grow: lo fits, hi is the first failure (or max_batch + 1 when none failed)
        lo = b
        while True:
            if lo == max_batch:
                return SearchResult(lo, probes, capped=True)
            nxt = min(2 * lo, max_batch)
            if not probe(nxt):
                hi = nxt
                break
            lo = nxt
    else:  # shrink: hi fails, lo is the first success
        hi = b
        while True:
            if hi == 1:
                raise NothingFits("a batch of one example does not fit")
            nxt = hi // 2
            if probe(nxt):
                lo = nxt
                break
            hi = nxt
    while hi - lo > max(1, int(tolerance * lo)):
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return SearchResult(lo, probes)
