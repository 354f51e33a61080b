"""Component-aware gradient synchronisation (MAMMOTH, arXiv 2403.07544, Algorithm 1): the pure parts.

Each rank trains a few tasks and holds only their components (``encoder.0.en``, ``decoder.1.full``...).
A component's gradient is averaged among the ranks that hold it, never over the whole world:

* **placement**: :func:`tasks_per_rank` (``model.modular.devices``, or round-robin), then
  :func:`component_holders` (component -> the ranks holding it); at run time each rank's model
  records (``mammoth/component.py``) gathered and given their holders (:func:`place_components`);
* **groups**: one process group per distinct set of holders with more than one rank
  (:func:`holder_sets`; components held by the same ranks share a group and one all-reduce),
  created in the same (sorted) order on every rank, as ``torch.distributed.new_group`` requires;
* **sync** (:func:`sync_gradients`): one all-reduce of the *used* vector over the world (how many
  ranks gave each component a gradient this step), then per holder set one all-reduce of the
  flattened gradients of its used components; each is divided by its own used count. A holder
  that did not use a component sends zeros and receives the average as its gradient, so every
  replica takes the same optimizer step; a component used by no rank skips communication and
  keeps ``grad = None`` (the optimizer leaves it and its state alone). Every holder of a set
  takes part in its collective whether or not it used anything, so nobody waits forever.

The divisor is the number of ranks that *used* the component (a rank whose batch had no task
running it does not dilute the average), not the number of holders, as in MAMMOTH.

The functions below that need holders take either ``{component: [ranks]}`` (any names: benchmarks
and tests use plain modules) or placed records ``{name: Component}``, read through :func:`holder_map`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nemo_emmett.mammoth.component import Component

Holders = Mapping[str, Sequence[int]] | Mapping[str, Component]
"""Component -> the ranks holding it, as plain rank lists or as placed records."""


def tasks_per_rank(task_names: Sequence[str], world_size: int,
                   devices: Sequence[Sequence[str]] | None = None) -> list[list[str]]:
    """The task names each rank trains: ``devices`` (the meta-config tool's allocation, one list per
    rank), or task ``i`` on rank ``i % world_size`` when absent. Errors name the offending key."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if not task_names:
        raise ValueError("no tasks to place on ranks (model.modular.tasks is empty)")
    if devices is None:
        if len(task_names) < world_size:
            raise ValueError(f"{len(task_names)} task(s) {list(task_names)} for {world_size} ranks: round-robin placement "
                             "leaves a rank without a task; give model.modular.devices (a task may sit on several ranks)")
        return [list(task_names[r::world_size]) for r in range(world_size)]
    if len(devices) != world_size:
        raise ValueError(f"model.modular.devices lists {len(devices)} device(s) but the run has {world_size} ranks "
                         "(trainer.devices x trainer.num_nodes)")
    known = set(task_names)
    for r, names in enumerate(devices):
        if not names:
            raise ValueError(f"model.modular.devices[{r}] is empty: every rank needs at least one task")
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"model.modular.devices[{r}] names unknown task(s) {unknown}; tasks are {sorted(known)}")
        if len(set(names)) != len(names):
            raise ValueError(f"model.modular.devices[{r}] lists a task twice: {list(names)}")
    unplaced = sorted(known - {n for names in devices for n in names})
    if unplaced:
        raise ValueError(f"model.modular.devices places no rank on task(s) {unplaced}")
    return [list(names) for names in devices]


def component_holders(placement: Sequence[Sequence[str]],
                      task_components: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """Component -> the sorted ranks whose tasks run it, in sorted component order."""
    out: dict[str, set[int]] = {}
    for rank, tasks in enumerate(placement):
        for t in tasks:
            for c in task_components[t]:
                out.setdefault(c, set()).add(rank)
    return {c: sorted(out[c]) for c in sorted(out)}


def holders_from_components(per_rank: Sequence[Sequence[str]]) -> dict[str, list[int]]:
    """The same map from what each rank holds (``per_rank[r]``: rank r's component names)."""
    return component_holders([[str(r)] for r in range(len(per_rank))],
                             {str(r): names for r, names in enumerate(per_rank)})


def place(components: Iterable[Component], holders: Mapping[str, Sequence[int]]) -> dict[str, Component]:
    """Name -> the record with ``holders`` filled (sorted), in the order given; a component that
    ``holders`` does not cover is an error (it would never be synchronised)."""
    out = {}
    for c in components:
        if not holders.get(c.name):
            raise ValueError(f"component {c.name!r} has no holders; the placement covers {sorted(holders)}")
        out[c.name] = replace(c, holders=tuple(sorted(holders[c.name])))
    return out


def place_components(per_rank: Sequence[Iterable[Component]]) -> dict[str, Component]:
    """Every component of the world once, its holders the ranks whose model has it, in sorted name
    order (the order of the used vector); ``per_rank[r]``: rank r's records (an all_gather of its
    ``model.components``). One component built differently on two ranks (another prefix, kind...) is
    an error: their parameters would not line up."""
    per_rank = [list(cs) for cs in per_rank]
    first: dict[str, tuple[int, Component]] = {}
    for rank, cs in enumerate(per_rank):
        for c in cs:
            r0, c0 = first.setdefault(c.name, (rank, c))
            if replace(c0, holders=()) != replace(c, holders=()):
                raise ValueError(f"component {c.name!r} differs between rank {r0} ({c0}) and rank {rank} ({c})")
    holders = holders_from_components([[c.name for c in cs] for cs in per_rank])
    return place((first[name][1] for name in sorted(first)), holders)


def holder_map(holders: Holders) -> dict[str, tuple[int, ...]]:
    """``{component: (ranks)}`` in sorted name order (the same on every rank), from rank lists or from
    placed records; a record without holders is an error (it was never placed)."""
    out = {}
    for name in sorted(holders):
        value = holders[name]
        ranks = tuple(value.holders if isinstance(value, Component) else value)
        if not ranks:
            raise ValueError(f"component {name!r} has no holders: place it first (place_components)")
        out[name] = ranks
    return out


def holder_sets(holders: Holders) -> list[tuple[int, ...]]:
    """The distinct sets of more than one holder, sorted: the process groups to create, in order."""
    return sorted({r for r in holder_map(holders).values() if len(r) > 1})


def new_groups(holders: Holders) -> dict[tuple[int, ...], Any]:
    """Create the process groups of :func:`holder_sets`. Every rank of the world must call this with
    the same ``holders`` (``new_group`` is collective over the world, even for ranks outside the group)."""
    return {ranks: dist.new_group(list(ranks)) for ranks in holder_sets(holders)}


@dataclass
class SyncStats:
    """What one :func:`sync_gradients` call communicated from this rank (payload bytes per collective)."""

    bytes: int = 0
    collectives: int = 0
    used: dict[str, int] = field(default_factory=dict)
    """Component -> ranks that used it this step (every component of the world)."""


def _trainable(params: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    return [p for p in params if p.requires_grad]


def _flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


def _unflatten_into(flat: torch.Tensor, targets: Sequence[torch.Tensor]) -> None:
    for t, chunk in zip(targets, flat.split([t.numel() for t in targets])):
        t.copy_(chunk.view_as(t))


def sync_gradients(params: Mapping[str, Sequence[nn.Parameter]], holders: Holders,
                   groups: Mapping[tuple[int, ...], Any], *, rank: int, device: torch.device | None = None,
                   world_group: Any = None) -> SyncStats:
    """Average each component's gradient among the ranks that used it (module docstring).

    ``params``: this rank's components -> their parameters (frozen ones are skipped); ``holders``:
    every component of the world -> its ranks (the same map on every rank); ``groups``: from
    :func:`new_groups`. Gradients are summed in their own dtype, one collective per holder set
    and dtype."""
    ranks_of = holder_map(holders)
    names = list(ranks_of)
    if device is None:
        device = next((p.device for ps in params.values() for p in ps), torch.device("cpu"))
    used = torch.zeros(len(names), dtype=torch.float32, device=device)  # (C,): float, so NCCL and gloo agree
    for i, c in enumerate(names):
        if c in params and any(p.grad is not None for p in _trainable(params[c])):
            used[i] = 1.0
    stats = SyncStats()
    if dist.get_world_size(world_group) > 1:
        dist.all_reduce(used, group=world_group)
        stats.bytes += used.numel() * used.element_size()
        stats.collectives += 1
    counts = [int(n) for n in used.tolist()]
    stats.used = dict(zip(names, counts))
    for ranks in holder_sets(ranks_of):
        if rank not in ranks:
            continue
        members = [(c, counts[i]) for i, c in enumerate(names) if ranks_of[c] == ranks and counts[i] > 0]
        by_dtype: dict[torch.dtype, list[tuple[int, nn.Parameter]]] = {}
        for c, n in members:
            for p in _trainable(params[c]):
                by_dtype.setdefault(p.dtype, []).append((n, p))
        for dtype in sorted(by_dtype, key=str):  # the same order on every holder
            entries = by_dtype[dtype]
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in entries]
            flat = _flatten(grads)  # (sum of numel,)
            dist.all_reduce(flat, group=groups[ranks])
            stats.bytes += flat.numel() * flat.element_size()
            stats.collectives += 1
            divisor = torch.cat([torch.full((p.numel(),), float(n), dtype=dtype, device=flat.device)
                                 for n, p in entries])
            flat.div_(divisor)
            for (_, p), chunk in zip(entries, flat.split([p.numel() for _, p in entries])):
                if p.grad is None:
                    p.grad = chunk.view_as(p).clone()
                else:
                    p.grad.copy_(chunk.view_as(p))
    return stats


def broadcast_components(modules: Mapping[str, nn.Module], holders: Holders,
                         groups: Mapping[tuple[int, ...], Any], *, rank: int) -> int:
    """Make the replicas of every shared component identical: its parameters and buffers come from
    its lowest holder. Returns the payload bytes this rank took part in."""
    ranks_of = holder_map(holders)
    sent = 0
    for ranks in holder_sets(ranks_of):
        if rank not in ranks:
            continue
        tensors = [t for c in ranks_of if ranks_of[c] == ranks
                   for t in (*modules[c].parameters(), *modules[c].buffers())]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for dtype in sorted(by_dtype, key=str):
            ts = by_dtype[dtype]
            with torch.no_grad():
                flat = _flatten([t.detach() for t in ts])
                dist.broadcast(flat, src=ranks[0], group=groups[ranks])
                _unflatten_into(flat, [t.data for t in ts])
            sent += flat.numel() * flat.element_size()
    return sent


def global_grad_norm(params: Mapping[str, Sequence[nn.Parameter]], holders: Holders, *,
                     rank: int, device: torch.device | None = None, world_group: Any = None) -> torch.Tensor:
    """The 2-norm of the whole model's gradient after :func:`sync_gradients`, each component counted
    once (by its lowest holder): the same 0-d fp32 value on every rank, so that norm clipping scales
    every replica alike."""
    if device is None:
        device = next((p.device for ps in params.values() for p in ps), torch.device("cpu"))
    ranks_of = holder_map(holders)
    sq = torch.zeros((), dtype=torch.float32, device=device)
    for c, ps in params.items():
        if ranks_of[c][0] != rank:
            continue
        grads = [p.grad for p in _trainable(ps) if p.grad is not None]
        if grads:
            sq = sq + torch.stack([g.float().pow(2).sum() for g in grads]).sum()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(world_group) > 1:
        dist.all_reduce(sq, group=world_group)
    return sq.sqrt()


def clip_by_global_norm(params: Mapping[str, Sequence[nn.Parameter]], holders: Holders,
                        max_norm: float, *, rank: int, world_group: Any = None) -> torch.Tensor:
    """Scale every gradient by ``min(1, max_norm / (norm + 1e-6))`` with the global norm (as
    ``torch.nn.utils.clip_grad_norm_`` does with a local one); returns the norm."""
    norm = global_grad_norm(params, holders, rank=rank, world_group=world_group)
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    grads = [p.grad for ps in params.values() for p in _trainable(ps) if p.grad is not None]
    if grads:
        torch._foreach_mul_(grads, coef.to(grads[0].device))
    return norm


def rank_task_table(modular: Mapping[str, Any], world_size: int, rank: int) -> tuple[dict[str, Any], list[list[str]]]:
    """``model.modular`` (a plain dict) restricted to the tasks of ``rank`` (its model then builds only
    their components), and the directions every rank trains (for the data module)."""
    from nemo_emmett.mammoth.tasks import ModularTaskConfig

    tasks = list(modular["tasks"])
    placement = tasks_per_rank([t["name"] for t in tasks], world_size, modular.get("devices"))
    direction = {t["name"]: ModularTaskConfig(**t).direction for t in tasks}
    mine = set(placement[rank])
    restricted = {**modular, "tasks": [t for t in tasks if t["name"] in mine], "devices": None}
    return restricted, [[direction[n] for n in names] for names in placement]
