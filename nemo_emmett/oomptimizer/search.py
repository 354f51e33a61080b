"""The largest batch size that passes a monotone test: exponential growth, then bisection.

``fits(b)`` must be monotone (if b fits, every smaller batch fits). From ``start`` the search
doubles while the batch fits (or halves while it does not), which brackets the answer between
a size that fits and one that does not in O(log answer) probes; bisection then narrows the
bracket until it is at most ``max(1, tolerance * lower)`` wide, again in O(log) probes. The
answer is the bracket's lower end: a size that was *measured* to fit.

Per bucket (:func:`optimize_buckets`): for each modality, buckets are searched from the largest
(longest padded example) to the smallest; each search starts from the previous bucket's answer.
Each probe is a full training step on a synthetic worst-case batch of the bucket
(:class:`nemo_emmett.oomptimizer.probe.StepProbe`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from nemo_emmett.oomptimizer.config import fmt_bytes
from nemo_emmett.oomptimizer.probe import ProbeResult, StepProbe
from nemo_emmett.oomptimizer.result import BucketResult, OOMptimizerResult


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


class BucketDoesNotFit(ValueError):
    """A bucket whose worst-case batch of one example exceeds the budget."""


def search_order(bins: list[tuple[float, float]]) -> list[int]:
    """Bucket indices from the largest padded example (input + output) to the smallest."""
    return sorted(range(len(bins)), key=lambda i: (bins[i][0] + bins[i][1], bins[i]), reverse=True)


def optimize_buckets(probe: StepProbe, bins: dict[str, list[tuple[float, float]]], *, tolerance: float,
                     max_batch_size: int, progress: bool = True) -> OOMptimizerResult:
    """Search every bucket of every modality with ``probe`` (see the module docstring)."""
    result = OOMptimizerResult(budget=probe.budget)
    bar = tqdm(total=sum(len(b) for b in bins.values()), desc="OOMptimizer", unit="bucket", disable=not progress)
    try:
        with probe.preserving_model():
            for modality, mbins in bins.items():
                result.buckets[modality] = search_modality(probe, modality, mbins, tolerance=tolerance,
                                                           max_batch_size=max_batch_size, bar=bar)
    finally:
        bar.close()
    return result


def search_modality(probe: StepProbe, modality: str, mbins: list[tuple[float, float]], *, tolerance: float,
                    max_batch_size: int, bar: Any) -> list[BucketResult]:
    """Every bucket of one modality, the largest first, each search starting from the previous answer."""
    rows, start = [], 1
    for b in search_order(mbins):
        row = search_bucket(probe, modality, b, mbins[b], start=start, tolerance=tolerance,
                            max_batch_size=max_batch_size, bar=bar)
        rows.append(row)
        start = row.batch_size
        bar.update(1)
    return rows


def search_bucket(probe: StepProbe, modality: str, bucket: int, edges: tuple[float, float], *, start: int,
                  tolerance: float, max_batch_size: int, bar: Any) -> BucketResult:
    max_in, max_out = edges
    seen: dict[int, ProbeResult] = {}

    def fits(n: int) -> bool:
        seen[n] = r = probe(modality, max_in, max_out, n)
        bar.set_postfix_str(f"{modality} bucket {bucket}: batch {n} {'fits' if r.fits else 'over'} "
                            f"({fmt_bytes(r.peak)})", refresh=False)
        return r.fits

    try:
        found = find_max_batch(fits, start=start, tolerance=tolerance, max_batch=max_batch_size)
    except NothingFits:
        margin = f", plus {fmt_bytes(probe.margin)} of headroom and DDP margin" if probe.margin else ""
        if probe.companion is not None:
            c = probe.companion
            margin += (f"; data.fusion=zip: fused with a worst-case {c.modality} batch of {c.batch_size} "
                       f"(max input {c.max_input:g}, max output {c.max_output:g})")
            if probe.share < 1:
                margin += f", within {probe.share:g} of the memory above the model (oomptimizer.fused_text_share)"
        raise BucketDoesNotFit(
            f"OOMptimizer: {modality} bucket {bucket} (max input {max_in:g}, max output {max_out:g}) does not fit "
            f"the memory budget of {fmt_bytes(probe.budget)} even with batch size 1 (measured peak "
            f"{fmt_bytes(seen[1].peak)}{margin}). Raise oomptimizer.memory_budget, cap the bucket's lengths "
            f"(data.{modality}_buckets.max_input / max_output), or use a smaller model."
        ) from None
    return BucketResult(bucket, max_in, max_out, found.batch_size, seen[found.batch_size].peak, len(found.probes),
                        found.capped)
