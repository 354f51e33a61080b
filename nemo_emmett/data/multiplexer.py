"""Stochastic weighted multiplexer: a stationary mix of sources for the whole run.

``lhotse.CutSet.mux`` draws each example's source independently, so over a window of ``L``
examples a source's share wanders by about ``sqrt(w (1 - w) / L)``, and long runs of one
source happen. Here each source keeps a *credit*: every draw adds the weights to all credits,
the source with the largest (credit + small random jitter) is drawn and pays one credit.
Credits stay bounded, so in every window a source's count is within a small constant of
``w * L``, while the random jitter keeps the order from being a fixed cycle.

Curriculum: a source may join the mix after ``introduce_at_draw`` draws of its multiplexer.
Before that it is inactive (weight 0, credit 0, never drawn) and the others' weights are
renormalised. Activation depends on the draw count only, which the state holds, so a resumed
or replayed stream activates at the same draw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from nemo_emmett.data.examples import Example
from nemo_emmett.data.sources import normalize_weights
from nemo_emmett.data.stream import ShardedStream, check_state_keys


def choose_source(credits: np.ndarray, weights: np.ndarray, noise: np.ndarray, jitter: float,
                  active: np.ndarray | None = None) -> int:
    """One draw of the credit rule; updates ``credits`` in place.

    credits, weights, noise: (K,). ``weights`` sums to 1; ``noise`` is uniform in [0, 1).
    With ``jitter < 1`` a source more than one credit behind is never chosen, which bounds
    every credit and therefore every window's deviation from the weights. ``active``: (K,) bool;
    inactive sources have weight 0 and are never chosen.
    """
    credits += weights
    score = credits + jitter * noise
    if active is not None:
        score = np.where(active, score, -np.inf)
    i = int(np.argmax(score))
    credits[i] -= 1.0
    return i


class Multiplexer:
    """Interleaves named streams by weight; infinite, seeded and resumable.

    ``state_dict()`` captures the draw count, credits, random state and every stream's
    position, so ``load_state_dict`` continues exactly where the stream stopped.
    """

    def __init__(
        self,
        streams: Sequence[ShardedStream],
        weights: Sequence[float],
        *,
        seed: int,
        slot: int = 0,
        jitter: float = 0.5,
        introduce_at_draw: Sequence[int] | None = None,
    ):
        if not streams:
            raise ValueError("the multiplexer needs at least one source")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must lie in [0, 1), got {jitter}")
        names = [s.name for s in streams]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        self.streams = list(streams)
        self.names = names
        self.weights = np.asarray(normalize_weights(names, weights), dtype=np.float64)
        starts = [0] * len(streams) if introduce_at_draw is None else [int(d) for d in introduce_at_draw]
        if len(starts) != len(streams) or any(d < 0 for d in starts):
            raise ValueError(f"introduce_at_draw must give one draw count >= 0 per source, got {introduce_at_draw}")
        if min(starts) > 0:
            raise ValueError(f"no source is active from the first draw (introduce_at_draw {starts}): "
                             "at least one must start at 0")
        self.introduce_at_draw = np.asarray(starts, dtype=np.int64)
        self.jitter = jitter
        self.seed = seed
        self.slot = slot
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, slot, 0x6D7578])))
        self.credits = np.zeros(len(streams), dtype=np.float64)
        self.draws = 0
        self.counts = np.zeros(len(streams), dtype=np.int64)

    def __iter__(self) -> Iterator[Example]:
        return self

    def __next__(self) -> Example:
        return self.next_with_source()[1]

    def next_with_source(self) -> tuple[int, Example]:
        """The next example and the index of the source it came from."""
        noise = self._rng.random(len(self.streams))  # drawn whatever is active: the random state advances alike
        active = self.introduce_at_draw <= self.draws
        if active.all():
            i = choose_source(self.credits, self.weights, noise, self.jitter)
        else:
            weights = np.where(active, self.weights, 0.0)
            i = choose_source(self.credits, weights / weights.sum(), noise, self.jitter, active)
        item = next(self.streams[i])
        self.draws += 1
        self.counts[i] += 1
        return i, item

    def state_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "draws": self.draws,
            "credits": self.credits.tolist(),
            "counts": self.counts.tolist(),
            "rng": self._rng.bit_generator.state,
            "streams": {s.name: s.state_dict() for s in self.streams},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_keys("multiplexer", state, self.state_dict())
        if state["names"] != self.names:
            raise ValueError(f"multiplexer state is for sources {state['names']}, this one has {self.names}")
        self.draws = state["draws"]
        self.credits = np.asarray(state["credits"], dtype=np.float64)
        self.counts = np.asarray(state["counts"], dtype=np.int64)
        self._rng.bit_generator.state = state["rng"]
        for s in self.streams:
            s.load_state_dict(state["streams"][s.name])

    def shares(self) -> dict[str, float]:
        """Realised share of each source so far."""
        total = max(int(self.counts.sum()), 1)
        return {n: int(c) / total for n, c in zip(self.names, self.counts)}
