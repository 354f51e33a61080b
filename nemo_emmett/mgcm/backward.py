"""MGCM inside the backward pass: per-task backward passes whose hooks project, module by module,
as gradients arrive, so that no per-task gradient is copied in the common case.

**Memory.** One auxiliary task in the step (ST + ASR, the common case): the auxiliary share is
back-propagated first (the graph is kept), so ``.grad`` holds ``g_a``; then the primary share,
with per-parameter hooks that receive ``g_p`` before it is accumulated: they add the module's
fp32 dot and norm, keep a reference to ``g_p``, and once every parameter of the module has
accumulated (``.grad = g_a + g_p``) subtract ``c g_p`` in place where the module conflicts. Extra
memory: the primary gradient of the modules in progress (one module, transient). With several
auxiliary tasks the primary share goes first and a copy of ``g_p`` is kept to project every
auxiliary task against: one gradient-sized buffer. Both paths keep the forward graph for the
second backward pass (the activations stay alive until it ends), as any per-task method does.
The update itself is :func:`~nemo_emmett.mgcm.projection.subtract_projection_`, the same as the
synchronised path's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nemo_emmett.mgcm.model import Backward
from nemo_emmett.mgcm.projection import PairStats, dot_fp32, subtract_projection_


def projected_backward(model: Backward, shares: dict[str, torch.Tensor], total: torch.Tensor,
                       groups: list[list[nn.Parameter]], primary_task: str) -> dict[str, torch.Tensor]:
    """Back-propagate the task shares with MGCM; ``.grad`` ends with the combined gradient.
    Returns (G, 3) ``[dot, |g_p|^2, |g_a|^2]`` per module for each auxiliary task."""
    shares = {t: s for t, s in shares.items() if s.requires_grad}
    primary = shares.pop(primary_task, None)
    if primary is None or not shares:  # nothing to project against, or nothing to project
        model.manual_backward(total)
        return {}
    aux = list(shares.items())
    if len(aux) == 1:
        task, share = aux[0]
        model.manual_backward(share, retain_graph=True)  # .grad = g_a
        projector = BackwardProjector(groups, primary_incoming=True)
        try:
            model.manual_backward(primary)  # hooks: .grad = g_a + g_p - c g_p per conflicting module
        finally:
            out = projector.close()
        return {task: out}
    model.manual_backward(primary, retain_graph=True)  # .grad = g_p
    reference = {p: p.grad.detach().clone() for g in groups for p in g if p.grad is not None}  # one buffer
    reference_sq = group_sq_norms(groups, next(iter(reference.values())).device, reference)
    out = {}
    for i, (task, share) in enumerate(aux):
        projector = BackwardProjector(groups, primary_incoming=False, reference=reference,
                                      reference_sq=reference_sq)
        try:
            model.manual_backward(share, retain_graph=i < len(aux) - 1)
        finally:
            out[task] = projector.close()
    return out


class BackwardProjector:
    """Hooks for one backward pass that project an auxiliary gradient off the primary one, module
    by module, as gradients arrive.

    ``primary_incoming=True``: ``.grad`` holds the auxiliary gradient and the pass brings the
    primary one (kept by reference until its module is complete). ``False``: ``.grad`` holds the
    primary gradient (plus auxiliary ones already projected), ``reference`` a copy of the primary
    gradient, and the pass brings an auxiliary one. Either way, once a module is complete,
    ``.grad -= c g_p`` where ``c = g_p . g_a / |g_p|^2 < 0``."""

    def __init__(self, groups: Sequence[Sequence[nn.Parameter]], *, primary_incoming: bool,
                 reference: dict[nn.Parameter, torch.Tensor] | None = None,
                 reference_sq: torch.Tensor | None = None):
        self.groups = groups
        self.primary_incoming = primary_incoming
        self.reference = reference if reference is not None else {}
        device = next(p.device for g in groups for p in g)
        self.reference_sq = reference_sq if reference_sq is not None else group_sq_norms(groups, device)  # (G,)
        G = len(groups)
        self.dot: list[torch.Tensor | None] = [None] * G
        self.incoming_sq: list[torch.Tensor | None] = [None] * G
        self.arrived = [0] * G
        self.pending: list[list[tuple[nn.Parameter, torch.Tensor]]] = [[] for _ in range(G)]
        self.done = [False] * G
        self.handles = []
        for gi, params in enumerate(groups):
            for p in params:
                self.handles.append(p.register_hook(self._pre_hook(gi, p)))
                self.handles.append(p.register_post_accumulate_grad_hook(self._post_hook(gi)))

    def _pre_hook(self, gi: int, p: nn.Parameter):
        def hook(grad: torch.Tensor) -> None:
            other = p.grad if self.primary_incoming else self.reference.get(p)
            if (d := dot_fp32(grad, other)) is not None:
                self.dot[gi] = d if self.dot[gi] is None else self.dot[gi] + d
            sq = dot_fp32(grad, grad)
            self.incoming_sq[gi] = sq if self.incoming_sq[gi] is None else self.incoming_sq[gi] + sq
            if self.primary_incoming:
                self.pending[gi].append((p, grad))  # g_p until its module is complete
        return hook

    def _post_hook(self, gi: int):
        def hook(_: nn.Parameter) -> None:
            self.arrived[gi] += 1
            if self.arrived[gi] == len(self.groups[gi]):
                self._finish(gi)
        return hook

    def _finish(self, gi: int) -> None:
        c = self._stats(gi).coefficient  # 0-d fp32; 0 outside conflicts (no host sync)
        if self.primary_incoming:  # .grad = g_a + g_p - c g_p
            subtract_projection_([p.grad for p, _ in self.pending[gi]], [g_p for _, g_p in self.pending[gi]], c)
        else:  # .grad = g_p + (projected earlier tasks) + g_a - c g_p
            params = [p for p in self.groups[gi] if p in self.reference]
            subtract_projection_([p.grad for p in params], [self.reference[p] for p in params], c)
        self.pending[gi] = []
        self.done[gi] = True

    def _stats(self, gi: int) -> PairStats:
        zero = self.reference_sq.new_zeros(())
        dot = self.dot[gi] if self.dot[gi] is not None else zero
        incoming = self.incoming_sq[gi] if self.incoming_sq[gi] is not None else zero
        ref = self.reference_sq[gi]
        return PairStats(dot, incoming, ref) if self.primary_incoming else PairStats(dot, ref, incoming)

    def close(self) -> torch.Tensor:
        """Remove the hooks, finish modules that got part of their gradients, and return (G, 3) fp32
        ``[dot, |g_p|^2, |g_a|^2]`` per module (zeros where a gradient is missing)."""
        for h in self.handles:
            h.remove()
        self.handles = []
        for gi in range(len(self.groups)):
            if not self.done[gi] and self.arrived[gi] > 0:
                self._finish(gi)
        rows = []
        for gi in range(len(self.groups)):
            s = self._stats(gi)
            rows.append(torch.stack([s.dot, s.primary_sq, s.aux_sq]))
        return torch.stack(rows)  # (G, 3)


def group_sq_norms(groups: Sequence[Sequence[nn.Parameter]], device: torch.device,
                   grads: dict[nn.Parameter, torch.Tensor] | None = None) -> torch.Tensor:
    """(G,) fp32 squared norm of each group's gradient (``.grad``, or ``grads``)."""
    out = torch.zeros(len(groups), dtype=torch.float32, device=device)
    for gi, params in enumerate(groups):
        for p in params:
            g = p.grad if grads is None else grads.get(p)
            if g is not None:
                out[gi] += dot_fp32(g, g)
    return out
