"""MGCM with a gradient sync that asks for it (``sync_each_task``: ``trainer.strategy: component_sync``):
the projection of *synchronised* per-task gradients.

Each task's gradient is averaged among the holders of every component first (MAMMOTH's sync, once
per task), then every rank projects, module by module, the synchronised auxiliary gradients off
the synchronised primary one (``mgcm/projection.py``'s ``combine``, built on the same
``subtract_projection_`` as the backward hooks). Shared replicas therefore project
identical gradients and stay identical, and the conflict is judged on what the update will be
made of, not on one rank's share of the data. The cost: one sync per task in the step, and one
gradient-sized buffer per auxiliary task (usually one: ASR beside ST), against the single combined
sync and in-backward projection of the other path (``mgcm/backward.py``).

Ranks must enter the same collectives: the tasks of the step are the union over ranks (one
``all_gather_object``), synchronised in sorted order; a rank without a task's examples contributes
no gradient for it. A task's backward pass reaches, through the routing of a mixed batch, the
components of the other tasks with zero gradients: only the components that the task's examples
run (``model.components_reached``) keep their gradient, so that the average counts the ranks that
really used a component.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nemo_emmett.mgcm.model import ModularModel
from nemo_emmett.mgcm.projection import combine, pair_stats
from nemo_emmett.parts.gradient_sync import GradientSync
from nemo_emmett.parts.metrics import all_gather_objects


def step_tasks(local: list[str]) -> list[str]:
    """The sorted union of every rank's tasks in this step."""
    return sorted({t for tasks in all_gather_objects(sorted(local)) for t in tasks})


def synced_backward(model: ModularModel, sync: GradientSync, batch: Any, shares: dict[str, torch.Tensor],
                    primary_task: str, groups: dict[str, list[nn.Parameter]]) -> dict[str, torch.Tensor]:
    """Per-task backward passes, each synchronised by ``sync``; ``.grad`` ends with
    ``g_p + sum_a project(g_a)`` of the synchronised gradients. Returns (G, 3) ``[dot, |g_p|^2, |g_a|^2]``
    per module for each auxiliary task (as ``MGCMStep.backward``)."""
    shares = {t: s for t, s in shares.items() if s.requires_grad}
    tasks = step_tasks(list(shares))
    owner = model.component_of()
    named = dict(model.named_parameters())
    params = [p for members in groups.values() for p in members]
    order = [t for t in tasks if t != primary_task] + ([primary_task] if primary_task in tasks else [])
    synced: dict[str, dict[nn.Parameter, torch.Tensor]] = {}
    for i, task in enumerate(order):
        for p in params:
            p.grad = None
        if task in shares:
            model.manual_backward(shares[task], retain_graph=any(t in shares for t in order[i + 1:]))
            reached = model.components_reached(batch, task)
            for name, p in named.items():
                if p.grad is not None and owner[name] not in reached:
                    p.grad = None  # zeros routed back from the other tasks' rows: not a use
        sync.sync(params)
        synced[task] = {p: p.grad for p in params if p.grad is not None}
    primary = synced.pop(primary_task, {})
    by_module = {m: [primary.get(p) for p in members] for m, members in groups.items()}
    aux = {t: {m: [g.get(p) for p in members] for m, members in groups.items()} for t, g in synced.items()}
    combined = combine({m: v for m, v in by_module.items() if any(x is not None for x in v)},
                       {t: {m: v for m, v in a.items() if any(x is not None for x in v)} for t, a in aux.items()})
    for m, members in groups.items():
        for p, g in zip(members, combined.get(m) or [None] * len(members)):
            p.grad = g
    stats = {}
    for t, a in aux.items():
        rows = [pair_stats(by_module[m], a[m]) for m in groups]
        stats[t] = torch.stack([torch.stack([s.dot, s.primary_sq, s.aux_sq]) for s in rows])  # (G, 3)
    return stats
