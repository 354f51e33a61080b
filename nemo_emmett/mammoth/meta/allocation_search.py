"""Local search over ``nodes x gpus_per_node``: tasks to ranks with the fewest component bytes, balanced.

Starts from the greedy allocation (:func:`nemo_emmett.mammoth.meta.allocation.allocate_devices`, node-blind),
then proposes ``iterations`` random changes from a ``random.Random(seed)``: move one task (copy) to another
rank, or swap two on different ranks. A change is kept only when it lowers the objective, compared in this
order (:func:`objective`):

1. tasks above ``tasks_per_device`` on a rank, summed;
2. ranks with no task training from step 0, beyond those unavoidable (fewer step-0 tasks than ranks);
3. the largest rank load above the capacity: ``(1 + balance_tolerance) / devices``, or without a tolerance the
   greedy start's largest load (as balanced as greedy, never less);
4. the weighted bytes per step (:func:`nemo_emmett.mammoth.meta.allocation_cost.communication_cost`);
5. a tie-break: how concentrated each component's holders are per node (the sum over nodes of the squared
   number of holder ranks there, weighed by size). The ring cost is flat until a node holds none of a
   component: this term lets the search move holders node by node until one is emptied.

A third move swaps the whole task lists of two ranks on different nodes: it changes no load, only which
node holds what, which a node-blind start gets wrong.

So the result is never worse than the start, and the same for the same seed. Every rank keeps at least
one task, and no rank holds two copies of one task. MAMMOTH's ``gpu_assignment.py`` also swaps task slots
from a random start, over counts of holders per component; here bytes are weighed by component size, ring
links and the curriculum, and load balance is a bound rather than a penalty.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nemo_emmett.mammoth.meta.allocation_cost import (
    LinkWeights,
    Topology,
    device_loads,
    phases,
    ring_bytes,
    weigh,
)

_EPS = 1e-9


@dataclass(frozen=True)
class Problem:
    """What the search needs: the tasks, their components and start steps, and the machine."""

    topology: Topology
    components: Mapping[str, Sequence[str]]
    """Task name -> its components."""
    sizes: Mapping[str, float]
    """Component -> gradient bytes."""
    weights: Mapping[str, float]
    starts: Mapping[str, int | None]
    """Task -> the step it starts at; None: never trained (weight 0)."""
    horizon: int
    links: LinkWeights = LinkWeights()
    balance_tolerance: float | None = None
    tasks_per_device: int | None = None


class AllocationState:
    """An allocation with what the objective needs, updated move by move."""

    def __init__(self, p: Problem, devices: Sequence[Sequence[str]]):
        self.p = p
        self.phases = phases([s for s in p.starts.values() if s is not None], p.horizon)
        first = {step: j for j, (step, _) in enumerate(self.phases)}
        self.items = [n for names in devices for n in names]
        self.dev = [r for r, names in enumerate(devices) for _ in names]
        self.first = [None if p.starts[n] is None else first[p.starts[n]] for n in self.items]
        copies = {n: self.items.count(n) for n in set(self.items)}
        self.load = [0.0] * p.topology.size
        totals = [sum(w for n, w in p.weights.items() if p.starts[n] is not None and p.starts[n] <= step)
                  for step, _ in self.phases]
        self.item_load = [0.0 if f is None else sum(frac * p.weights[n] / copies[n] / totals[j]
                                                    for j, (_, frac) in enumerate(self.phases) if j >= f)
                          for n, f in zip(self.items, self.first)]
        self.on: list[dict[str, int]] = [{} for _ in range(p.topology.size)]
        self.count = [0] * p.topology.size
        self.start0 = [0] * p.topology.size
        self.holders: dict[str, list[dict[int, int]]] = {c: [{} for _ in self.phases] for names in
                                                           p.components.values() for c in names}
        self.cost: dict[str, list[float]] = {c: [0.0] * len(self.phases) for c in self.holders}
        self.nodes: dict[str, list[dict[int, int]]] = {c: [{} for _ in self.phases] for c in self.holders}
        self.comm = 0.0
        self.spread = 0.0
        self.members: list[set[int]] = [set() for _ in range(p.topology.size)]
        for i, r in enumerate(self.dev):
            self._place(i, r, +1)
        step0 = sum(f == 0 for f in self.first)
        self.unavoidable_idle = max(0, p.topology.size - step0)

    def _place(self, i: int, r: int, sign: int) -> None:
        name = self.items[i]
        self.on[r][name] = self.on[r].get(name, 0) + sign
        if not self.on[r][name]:
            del self.on[r][name]
        self.count[r] += sign
        (self.members[r].add if sign > 0 else self.members[r].discard)(i)
        self.load[r] += sign * self.item_load[i]
        if self.first[i] is None:
            return
        self.start0[r] += sign * (self.first[i] == 0)
        for c in self.p.components[name]:
            for j in range(self.first[i], len(self.phases)):
                h = self.holders[c][j]
                before = len(h)
                h[r] = h.get(r, 0) + sign
                if not h[r]:
                    del h[r]
                if len(h) != before:  # the holder set changed: re-cost this phase of this component
                    on_node, node = self.nodes[c][j], self.p.topology.node(r)
                    x = on_node.get(node, 0)
                    # spread = -sum of squared holders per node: x -> x + 1 adds 2x + 1, x -> x - 1 takes 2x - 1
                    self.spread -= self.phases[j][1] * self.p.sizes[c] * (2 * x + 1 if sign > 0 else 1 - 2 * x)
                    on_node[node] = x + sign
                    new = self.phases[j][1] * weigh(*ring_bytes(self.p.sizes[c], list(h), self.p.topology),
                                                    self.p.links)
                    self.comm += new - self.cost[c][j]
                    self.cost[c][j] = new

    def move(self, i: int, r: int) -> None:
        self._place(i, self.dev[i], -1)
        self.dev[i] = r
        self._place(i, r, +1)

    def swap_ranks(self, a: int, b: int) -> None:
        """Rank ``a``'s tasks to ``b`` and ``b``'s to ``a``."""
        mine, theirs = list(self.members[a]), list(self.members[b])
        for i in mine:
            self.move(i, b)
        for k in theirs:
            self.move(k, a)

    def objective(self, capacity: float) -> tuple[int, int, float, float, float]:
        limit = self.p.tasks_per_device
        over = 0 if limit is None else sum(max(0, c - limit) for c in self.count)
        idle = max(0, sum(s == 0 for s in self.start0) - self.unavoidable_idle)
        return over, idle, max(0.0, max(self.load) - capacity), self.comm, self.spread

    def devices(self) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in self.count]
        for i, r in enumerate(self.dev):
            out[r].append(self.items[i])
        order = {n: k for k, n in enumerate(self.p.components)}
        return [sorted(names, key=order.__getitem__) for names in out]


def better(new: tuple[int, int, float, float, float], old: tuple[int, int, float, float, float]) -> bool:
    """Lexicographically lower, with float terms equal within a relative ``1e-9``."""
    for a, b in zip(new, old):
        tol = _EPS * max(1.0, abs(a), abs(b))
        if a < b - tol:
            return True
        if a > b + tol:
            return False
    return False


def capacity(p: Problem, start: Sequence[Sequence[str]]) -> float:
    """The largest load a rank may take: ``(1 + balance_tolerance) / devices``, or the start's largest."""
    if p.balance_tolerance is None:
        return max(device_loads(start, p.weights, p.starts, p.horizon))
    return (1 + p.balance_tolerance) / p.topology.size


def objective(p: Problem, devices: Sequence[Sequence[str]], cap: float) -> tuple[int, int, float, float, float]:
    """The search's objective of ``devices`` (see the module docstring), computed from scratch."""
    return AllocationState(p, devices).objective(cap)


def local_search(p: Problem, start: Sequence[Sequence[str]], *, iterations: int, seed: int,
                 cap: float | None = None) -> list[list[str]]:
    """``start`` improved by ``iterations`` random moves and swaps, each kept only if it lowers the objective."""
    if len(start) != p.topology.size:
        raise ValueError(f"the start allocation has {len(start)} devices, not {p.topology.size}")
    cap = capacity(p, start) if cap is None else cap
    s = AllocationState(p, start)
    rng = random.Random(seed)
    n, size = len(s.items), p.topology.size
    current = s.objective(cap)
    if n < 2 or size < 2:
        return s.devices()
    gpus = p.topology.gpus_per_node
    for _ in range(iterations):
        u = rng.random()
        if u < 0.2 and p.topology.nodes > 1:  # swap ranks a and b, on different nodes
            a = rng.randrange(size)
            b = rng.randrange(size - gpus)
            b += gpus * (b >= p.topology.node(a) * gpus)  # skip a's node
            s.swap_ranks(a, b)
            new = s.objective(cap)
            if better(new, current):
                current = new
            else:
                s.swap_ranks(a, b)
            continue
        i = rng.randrange(n)
        a = s.dev[i]
        if u < 0.6:  # move i to rank b
            b = rng.randrange(size - 1)
            b += b >= a
            if s.count[a] == 1 or s.items[i] in s.on[b]:
                continue
            s.move(i, b)
            new = s.objective(cap)
            if better(new, current):
                current = new
            else:
                s.move(i, a)
        else:  # swap i and k
            k = rng.randrange(n)
            b = s.dev[k]
            if a == b or s.items[i] in s.on[b] or s.items[k] in s.on[a]:
                continue
            s.move(i, b)
            s.move(k, a)
            new = s.objective(cap)
            if better(new, current):
                current = new
            else:
                s.move(k, b)
                s.move(i, a)
    return s.devices()


def random_allocation(size: int, items: Sequence[str], seed: int) -> list[list[str]]:
    """A baseline: ``items`` (task names, copies repeated) shuffled and dealt round-robin to ``size`` ranks."""
    order = list(items)
    random.Random(seed).shuffle(order)
    return [order[r::size] for r in range(size)]
