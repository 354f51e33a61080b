"""The cost of a task allocation: gradient bytes all-reduced per step, inside and across nodes, and load.

Pure functions; :mod:`nemo_emmett.mammoth.meta.allocation_search` minimises what they measure.

**Ranks.** ``nodes x gpus_per_node`` devices, numbered node-major as ``torchrun`` and Lightning number
global ranks: rank ``r`` sits on node ``r // gpus_per_node``. An allocation is the task names per rank
(``model.modular.devices``); a task may sit on several ranks (its weight is then split among them).

**Communication** (:func:`ring_bytes`). A component held by ``k > 1`` ranks is all-reduced among them
each step (``mammoth/sync.py``). A ring all-reduce of ``S`` bytes has every rank send
``2 (k - 1) / k * S`` bytes to its ring successor, so each of the ring's ``k`` links carries that much.
With the ranks ordered by node, ``m`` links cross nodes when the holders span ``m > 1`` nodes (none when
``m == 1``): ``inter = m * 2 (k - 1) / k * S``, ``intra = (k - m) * 2 (k - 1) / k * S``, together
``2 (k - 1) S``. The weighted cost is ``intra_node * intra + inter_node * inter`` (:class:`LinkWeights`).

**Curriculum** (:func:`phases`). A task that joins the mix at step ``s`` (``introduce_at_step``) counts
from ``s`` on: the cost is averaged over ``horizon`` training steps, phase by phase, each phase holding
the tasks started by then (a task of weight 0 is never trained and never counts). Per step means
averaged over the horizon.

**Load** (:func:`device_loads`). A rank's share of the training mix: at each phase the weight of its
started tasks (a task on ``c`` ranks gives each ``w / c``) over the weight of all started tasks,
averaged over the phases. Shares sum to 1; perfectly balanced is ``1 / devices`` each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nemo_emmett.mammoth.component import Component


@dataclass(frozen=True)
class Topology:
    nodes: int
    gpus_per_node: int

    def __post_init__(self) -> None:
        for key in ("nodes", "gpus_per_node"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")

    @property
    def size(self) -> int:
        return self.nodes * self.gpus_per_node

    def node(self, rank: int) -> int:
        return rank // self.gpus_per_node


@dataclass(frozen=True)
class LinkWeights:
    intra_node: float = 1.0
    """Cost of a byte between two GPUs of one node (NVLink, PCIe)."""
    inter_node: float = 8.0
    """Cost of a byte between nodes (InfiniBand, Ethernet): several times an intra-node byte."""


@dataclass(frozen=True)
class CommCost:
    intra_bytes: float
    """Bytes sent per step over links inside a node, all ranks together."""
    inter_bytes: float
    """Bytes sent per step over links between nodes."""
    weighted: float
    """``intra_node * intra_bytes + inter_node * inter_bytes``: what the search minimises."""


def ring_bytes(size_bytes: float, ranks: Sequence[int], topology: Topology) -> tuple[float, float]:
    """(intra-node, inter-node) bytes of one ring all-reduce of ``size_bytes`` among ``ranks``."""
    k = len(set(ranks))
    if k < 2:
        return 0.0, 0.0
    m = len({topology.node(r) for r in set(ranks)})
    per_link = 2 * (k - 1) / k * size_bytes
    crossing = m if m > 1 else 0
    return (k - crossing) * per_link, crossing * per_link


def weigh(intra: float, inter: float, links: LinkWeights) -> float:
    return links.intra_node * intra + links.inter_node * inter


def phases(starts: Sequence[int], horizon: int) -> list[tuple[int, float]]:
    """``(first step, fraction of the horizon)`` per phase: one from each distinct start step to the next
    (the last to ``horizon``). ``phases([0, 0, 50], 200) == [(0, 0.25), (50, 0.75)]``."""
    steps = sorted(set(starts))
    if not steps or steps[0] != 0:
        raise ValueError(f"curriculum: at least one trained task must start at step 0, got starts {steps}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon <= steps[-1]:
        raise ValueError(f"allocation.steps must be an integer above the latest curriculum start ({steps[-1]}), "
                         f"got {horizon!r}")
    ends = [*steps[1:], horizon]
    return [(s, (e - s) / horizon) for s, e in zip(steps, ends)]


def task_starts(weights: Mapping[str, float], curriculum: Mapping[str, int]) -> dict[str, int | None]:
    """The step each task starts training at; ``None`` for a task of weight 0 (never trained)."""
    return {n: (None if w == 0 else curriculum.get(n, 0)) for n, w in weights.items()}


def default_horizon(starts: Mapping[str, int | None]) -> int:
    """Twice the latest start (the latest task trains as long as it waited), 1 without a curriculum."""
    latest = max((s for s in starts.values() if s is not None), default=0)
    return 2 * latest if latest else 1


def component_holders(devices: Sequence[Sequence[str]], components: Mapping[str, Sequence[str]],
                      starts: Mapping[str, int | None], step: int) -> dict[str, set[int]]:
    """Component -> the ranks holding a task that uses it and has started by ``step``."""
    out: dict[str, set[int]] = {}
    for rank, names in enumerate(devices):
        for name in names:
            start = starts[name]
            if start is not None and start <= step:
                for c in components[name]:
                    out.setdefault(c, set()).add(rank)
    return out


def communication_cost(devices: Sequence[Sequence[str]], components: Mapping[str, Sequence[str]],
                       sizes: Mapping[str, float], starts: Mapping[str, int | None], horizon: int,
                       topology: Topology, links: LinkWeights = LinkWeights()) -> CommCost:
    """Bytes per step (averaged over ``horizon`` steps) of the component all-reduces of ``devices``:
    ``components`` task -> its components, ``sizes`` component -> gradient bytes, ``starts`` from
    :func:`task_starts`."""
    if len(devices) != topology.size:
        raise ValueError(f"{len(devices)} device lists for {topology.nodes} x {topology.gpus_per_node} devices")
    intra = inter = 0.0
    for step, fraction in phases([s for s in starts.values() if s is not None], horizon):
        for c, ranks in component_holders(devices, components, starts, step).items():
            a, b = ring_bytes(sizes[c], sorted(ranks), topology)
            intra, inter = intra + fraction * a, inter + fraction * b
    return CommCost(intra, inter, weigh(intra, inter, links))


def device_loads(devices: Sequence[Sequence[str]], weights: Mapping[str, float],
                 starts: Mapping[str, int | None], horizon: int) -> list[float]:
    """Each rank's share of the training mix, averaged over the phases (sums to 1)."""
    copies: dict[str, int] = {}
    for names in devices:
        for n in names:
            copies[n] = copies.get(n, 0) + 1
    loads = [0.0] * len(devices)
    for step, fraction in phases([s for s in starts.values() if s is not None], horizon):
        started = {n for n, s in starts.items() if s is not None and s <= step}
        total = sum(weights[n] for n in started)
        for rank, names in enumerate(devices):
            loads[rank] += fraction * sum(weights[n] / copies[n] for n in names if n in started) / total
    return loads


def sync_bytes_per_rank(devices: Sequence[Sequence[str]], components: Mapping[str, Sequence[str]],
                        sizes: Mapping[str, float]) -> list[float]:
    """Bytes each rank sends per step in the component all-reduces (every task started):
    ``2 (k - 1) / k * S`` for each held component of ``S`` bytes held by ``k`` ranks."""
    holders: dict[str, set[int]] = {}
    for rank, names in enumerate(devices):
        for n in names:
            for c in components[n]:
                holders.setdefault(c, set()).add(rank)
    out = [0.0] * len(devices)
    for c, ranks in holders.items():
        k = len(ranks)
        for r in ranks:
            out[r] += 2 * (k - 1) / k * sizes[c]
    return out


def ddp_bytes_per_rank(model_bytes: float, world_size: int) -> float:
    """What plain DDP sends per rank per step: a ring all-reduce of every gradient over the world."""
    return 2 * (world_size - 1) / world_size * model_bytes


def stack_params(kind: str, layers: int, d_model: int, d_ff: int) -> int:
    """Parameters of a ``modules/transformer.py`` ``LayerStack``: per layer self-attention (4 projections with
    biases), the feed-forward pair and two norms (a decoder layer adds cross-attention and a third norm),
    then the final norm."""
    attention = 4 * d_model * d_model + 4 * d_model
    layer = attention + 2 * d_model * d_ff + d_model + d_ff + 4 * d_model
    if kind == "decoder":
        layer += attention + 2 * d_model
    return layers * layer + 2 * d_model


def component_bytes(names: Sequence[str], *, encoder_layers: Sequence[int], decoder_layers: Sequence[int],
                    d_model: int, d_ff: int, vocab_size: int, perception_params: int = 0,
                    bytes_per_param: int = 4) -> dict[str, int]:
    """Gradient bytes per component: layer stacks by :func:`stack_params` (layers at their position), an
    embedding ``vocab_size x d_model``, ``perception.full`` ``perception_params``; adapters (pretrained
    backbones, not written by the meta-config) count 0."""
    out = {}
    for name in names:
        c = Component.parse(name)
        if c.kind in ("encoder", "decoder"):
            layers = (encoder_layers if c.kind == "encoder" else decoder_layers)[c.position]
            params = stack_params(c.kind, layers, d_model, d_ff)
        elif c.kind == "embed":
            params = vocab_size * d_model
        elif c.kind == "perception":
            params = perception_params
        else:
            params = 0
        out[name] = params * bytes_per_param
    return out
