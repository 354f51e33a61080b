"""Gradient synchronisation for a training step that runs its own backward passes (manual
optimization: MGCM), whatever the distributed strategy is.

The step asks the trainer's strategy for a :class:`GradientSync` (:func:`gradient_sync_for`) and
never looks at the strategy's class: a strategy that synchronises in its own way (MAMMOTH's
``component_sync``: each component among its holders) provides one through
:class:`GradientSyncProvider`; otherwise gradients are averaged over the whole world as DDP does
(:class:`DDPGradientSync`), or not at all in one process (:class:`LocalGradientSync`). The protocol
lives here, below both the step and the strategies, so that neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn


class GradientSync(Protocol):
    """How a manually optimised step synchronises ``.grad`` over the ranks that share parameters."""

    sync_each_task: bool
    """True: replicas must project *synchronised* per-task gradients (one :meth:`sync` per task), as
    under component sync, where a component's holders differ from one component to the next; False:
    each rank projects its local gradients and the combined gradient is synchronised once."""

    def no_sync(self) -> AbstractContextManager[object]:
        """The context for the step's backward passes: nothing may be reduced during them."""
        ...

    def sync(self, params: Sequence[nn.Parameter]) -> object:
        """Average the gradients of ``params`` over the ranks that share them (a collective: every
        rank calls it, each with all of its trainable parameters)."""
        ...

    def global_norm(self, params: Sequence[nn.Parameter]) -> torch.Tensor:
        """The 0-d fp32 norm of the whole model's gradient after :meth:`sync`, the same on every rank,
        so that every replica skips or clips alike."""
        ...

    def clip_by_norm(self, params: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
        """Scale the gradients by ``min(1, max_norm / (global norm + 1e-6))``; returns the norm."""
        ...


@runtime_checkable
class GradientSyncProvider(Protocol):
    """A strategy with its own gradient synchronisation (``mammoth/strategy.py``)."""

    def gradient_sync(self) -> GradientSync: ...


def local_grad_norm(params: Sequence[nn.Parameter]) -> torch.Tensor:
    """The 0-d fp32 2-norm of the gradients of ``params`` (those without one count as zero)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        device = next((p.device for p in params), torch.device("cpu"))
        return torch.zeros((), dtype=torch.float32, device=device)
    norms = torch._foreach_norm(grads)  # fp32 accumulation per tensor
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


@dataclass
class LocalGradientSync:
    """One process: nothing to synchronise; the local norm is the global one."""

    sync_each_task: bool = False

    def no_sync(self) -> AbstractContextManager[object]:
        return nullcontext()

    def sync(self, params: Sequence[nn.Parameter]) -> None:
        pass

    def global_norm(self, params: Sequence[nn.Parameter]) -> torch.Tensor:
        return local_grad_norm(params)

    def clip_by_norm(self, params: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


@dataclass
class DDPGradientSync(LocalGradientSync):
    """Every rank holds every parameter: the combined gradient is averaged over the world once, after
    the backward passes (run under the DDP wrapper's ``no_sync``); every rank then holds the same
    gradients, so the local norm is the global one."""

    wrapper: nn.Module | None = None
    """The strategy's ``DistributedDataParallel`` wrapper, if any (its ``no_sync`` stops the per-pass
    all-reduce)."""

    def no_sync(self) -> AbstractContextManager[object]:
        from torch.nn.parallel import DistributedDataParallel

        return self.wrapper.no_sync() if isinstance(self.wrapper, DistributedDataParallel) else nullcontext()

    def sync(self, params: Sequence[nn.Parameter]) -> None:
        """The gradients averaged (:func:`all_reduce_gradients`), and the module's buffers (BatchNorm
        statistics) made rank 0's, as DDP does at every forward with ``broadcast_buffers``: Lightning
        turns that off with its reducer under manual optimization, and the replicas' statistics
        would otherwise drift apart (and so would their validation scores)."""
        if world_size() > 1:
            all_reduce_gradients(params)
            from torch.nn.parallel import DistributedDataParallel

            if isinstance(self.wrapper, DistributedDataParallel) and self.wrapper.broadcast_buffers:
                broadcast_buffers(self.wrapper.module)


def gradient_sync_for(strategy: object) -> GradientSync:
    """The strategy's own sync (:class:`GradientSyncProvider`), else DDP's (a ``DistributedDataParallel``
    wrapper in ``strategy.model``, or several ranks), else the local one."""
    if isinstance(strategy, GradientSyncProvider):
        return strategy.gradient_sync()
    from torch.nn.parallel import DistributedDataParallel

    wrapper = getattr(strategy, "model", None)
    if isinstance(wrapper, DistributedDataParallel) or world_size() > 1:
        return DDPGradientSync(wrapper=wrapper)
    return LocalGradientSync()


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def broadcast_buffers(module: nn.Module) -> None:
    """Every buffer of ``module`` set to rank 0's (a collective: every rank calls it)."""
    import torch.distributed as dist

    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def all_reduce_gradients(params: Sequence[nn.Parameter], bucket_bytes: int = 25 * 2**20) -> None:
    """Average ``.grad`` over the ranks of the default process group, one all-reduce per bucket of
    about ``bucket_bytes`` (flattened), as DDP does once per step. A gradient missing on some ranks
    counts as zeros there, so that every rank holds the same buckets and takes the same step; a
    parameter that no rank used keeps ``grad=None`` (as under DDP with ``find_unused_parameters``), so
    that the optimizer leaves it and its state alone, as in one process (a zero gradient would not:
    AdamW's momentum and weight decay would still move it)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    if not params:
        return
    used = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)  # (P,)
    dist.all_reduce(used)  # how many ranks used each parameter
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buckets: dict[tuple, list[list[torch.Tensor]]] = {}
    for p in params:
        key = (p.grad.dtype, p.grad.device)
        lists = buckets.setdefault(key, [[]])
        if lists[-1] and sum(g.numel() for g in lists[-1]) * p.grad.element_size() >= bucket_bytes:
            lists.append([])
        lists[-1].append(p.grad)
    for lists in buckets.values():
        for grads in lists:
            flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numel,)
            dist.all_reduce(flat)
            flat.div_(world)
            for g, chunk in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(chunk.view_as(g))
    for p, n in zip(params, used.tolist()):
        if n == 0:
            p.grad = None
