"""Tasks to devices for component-aware distributed training (the meta-config's ``nodes x gpus_per_node``).

:func:`allocate_devices` is the greedy start (node-blind); :func:`allocate` improves it by local search
(``allocation_search.py``) on the cost of ``allocation_cost.py`` and checks the result against the
meta-config's bounds; :func:`meta_allocation` does both for a meta-config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nemo_emmett.mammoth.meta.allocation_cost import (
    CommCost,
    LinkWeights,
    Topology,
    communication_cost,
    component_bytes,
    default_horizon,
    device_loads,
    task_starts,
)
from nemo_emmett.mammoth.meta.allocation_search import Problem, capacity, local_search, objective
from nemo_emmett.mammoth.meta.schema import AllocationSpec, MetaConfig
from nemo_emmett.mammoth.tasks import ModularConfig, ModularTaskConfig


def allocate_devices(tasks: Sequence[ModularTaskConfig], weights: Mapping[str, float], num_devices: int, *,
                     slack: float = 0.1) -> list[list[str]]:
    """Task names per device: tasks that share components together where the load allows.

    Greedy, heaviest task first (ties: table order). A device may take a task while its load (sum of
    weights) stays within ``(1 + slack) * total / num_devices``; when none can, the least-loaded ones may.
    Among those, the task goes where it adds the fewest components the device does not hold yet
    (components every task uses do not count: every device holds them), ties to the lower load, then
    the lower index. A device still empty (fewer tasks than devices) gets a copy of the task with the
    most weight per copy, so every device trains and every task is on at least one device.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"devices must be an integer >= 1, got {num_devices!r}")
    comps = {t.name: set(t.components()) for t in tasks}
    everywhere = set.intersection(*comps.values()) if comps else set()
    order = sorted(range(len(tasks)), key=lambda i: -weights[tasks[i].name])
    capacity = (1 + slack) * sum(weights[t.name] for t in tasks) / num_devices
    held: list[set[str]] = [set() for _ in range(num_devices)]
    load = [0.0] * num_devices
    placed: list[list[int]] = [[] for _ in range(num_devices)]
    for i in order:
        name, w = tasks[i].name, weights[tasks[i].name]
        fits = [k for k in range(num_devices) if load[k] + w <= capacity + 1e-12]
        if not fits:
            fits = [k for k in range(num_devices) if load[k] == min(load)]
        k = min(fits, key=lambda k: (len(comps[name] - everywhere - held[k]), load[k], k))
        held[k] |= comps[name]
        load[k] += w
        placed[k].append(i)
    copies = {i: 1 for i in range(len(tasks))}
    for k in range(num_devices):
        if not placed[k] and tasks:
            i = min(copies, key=lambda i: (-weights[tasks[i].name] / copies[i], i))
            copies[i] += 1
            placed[k].append(i)
    return [[tasks[i].name for i in sorted(p)] for p in placed]


@dataclass(frozen=True)
class Allocation:
    devices: list[list[str]]
    """Task names per rank (node-major: rank ``r`` on node ``r // gpus_per_node``)."""
    cost: CommCost
    loads: list[float]
    """Each rank's share of the training mix."""
    greedy: list[list[str]]
    greedy_cost: CommCost


def check_spec(spec: AllocationSpec) -> None:
    """Values the search cannot take, named as the meta-config's ``allocation.<key>``."""
    def bad(key: str, what: str) -> ValueError:
        return ValueError(f"allocation.{key} must be {what}, got {getattr(spec, key)!r}")

    for key in ("intra_node", "inter_node", "balance_tolerance"):
        v = getattr(spec, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0):
            raise bad(key, "a finite number >= 0")
    for key, low in (("tasks_per_device", 1), ("iterations", 0), ("vocab_size", 1), ("perception_params", 0),
                     ("bytes_per_param", 1), ("steps", 1)):
        v = getattr(spec, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise bad(key, f"an integer >= {low}")


def allocate(tasks: Sequence[ModularTaskConfig], weights: Mapping[str, float], topology: Topology, *,
             sizes: Mapping[str, float], curriculum: Mapping[str, int] | None = None,
             spec: AllocationSpec | None = None) -> Allocation:
    """Greedy, then local search; errors when the bounds of ``spec`` cannot be met, naming the key."""
    spec = AllocationSpec() if spec is None else spec
    check_spec(spec)
    names = [t.name for t in tasks]
    if spec.tasks_per_device is not None and len(names) > topology.size * spec.tasks_per_device:
        raise ValueError(f"allocation.tasks_per_device={spec.tasks_per_device}: {len(names)} tasks do not fit on "
                         f"{topology.nodes} x {topology.gpus_per_node} devices (at most "
                         f"{topology.size * spec.tasks_per_device}); raise it or add devices")
    starts = task_starts({n: weights[n] for n in names}, curriculum or {})
    horizon = default_horizon(starts) if spec.steps is None else spec.steps
    p = Problem(topology=topology, components={t.name: t.components() for t in tasks}, sizes=sizes,
                weights={n: weights[n] for n in names}, starts=starts, horizon=horizon,
                links=LinkWeights(spec.intra_node, spec.inter_node), balance_tolerance=spec.balance_tolerance,
                tasks_per_device=spec.tasks_per_device)
    greedy = allocate_devices(tasks, weights, topology.size)
    cap = capacity(p, greedy)
    devices = local_search(p, greedy, iterations=spec.iterations, seed=spec.seed, cap=cap)
    over, _, overload, _, _ = objective(p, devices, cap)
    if over:
        raise ValueError(f"allocation.tasks_per_device={spec.tasks_per_device}: the search found no allocation "
                         f"within it in {spec.iterations} iterations; raise it or allocation.iterations")
    loads = device_loads(devices, p.weights, starts, horizon)
    if overload > 1e-9:
        need = max(loads) * topology.size - 1
        raise ValueError(f"allocation.balance_tolerance={spec.balance_tolerance}: no allocation found keeps every "
                         f"device within {1 + spec.balance_tolerance:.3g}x the mean load (the best found has "
                         f"{1 + need:.3g}x: balance_tolerance >= {need:.3g}, or null for greedy's balance)")
    cost = communication_cost(devices, p.components, sizes, starts, horizon, topology, p.links)
    return Allocation(devices, cost, loads, greedy,
                      communication_cost(greedy, p.components, sizes, starts, horizon, topology, p.links))


def meta_topology(meta: MetaConfig) -> Topology | None:
    """``nodes x gpus_per_node``, or one node of ``devices``; None when neither is given."""
    if meta.devices is not None:
        if meta.nodes is not None or meta.gpus_per_node is not None:
            raise ValueError(f"give devices={meta.devices} (one node) or nodes with gpus_per_node, not both")
        if isinstance(meta.devices, bool) or not isinstance(meta.devices, int) or meta.devices < 1:
            raise ValueError(f"devices must be an integer >= 1, got {meta.devices!r}")
        return Topology(1, meta.devices)
    if meta.nodes is None and meta.gpus_per_node is None:
        return None
    if meta.gpus_per_node is None:
        raise ValueError(f"nodes={meta.nodes} needs gpus_per_node (devices per node)")
    return Topology(1 if meta.nodes is None else meta.nodes, meta.gpus_per_node)


def meta_allocation(meta: MetaConfig, tasks: Sequence[ModularTaskConfig],
                    weights: Mapping[str, float]) -> list[list[str]] | None:
    """The meta-config's allocation of ``tasks`` (sizes from its model sizes), or None without devices."""
    topology = meta_topology(meta)
    if topology is None:
        return None
    spec, base = meta.allocation, ModularConfig()
    d_model = base.d_model if meta.d_model is None else meta.d_model
    d_ff = base.d_ff if meta.d_ff is None else meta.d_ff
    names = list(dict.fromkeys(c for t in tasks for c in t.components()))
    sizes = component_bytes(names, encoder_layers=[s.layers for s in meta.sharing.encoder],
                            decoder_layers=[s.layers for s in meta.sharing.decoder], d_model=d_model, d_ff=d_ff,
                            vocab_size=spec.vocab_size, perception_params=spec.perception_params,
                            bytes_per_param=spec.bytes_per_param)
    return allocate(tasks, weights, topology, sizes=sizes, curriculum=meta.curriculum, spec=spec).devices
