"""MGCM, modular gradient conflict mitigation (arXiv 2409.15911): the arithmetic.

Multi-task training with a *primary* task (speech translation) and *auxiliary* tasks (ASR, text
MT). For each module ``m`` (a group of parameter tensors) and each auxiliary task ``a``::

    if cos(g_p^m, g_a^m) < 0:   g_a^m <- g_a^m - (g_p^m . g_a^m / |g_p^m|^2) g_p^m

The primary gradient is never changed; the update is ``g_p + sum_a g_a`` (projected). A module
without a primary gradient (missing, or all zeros) takes the auxiliary gradients unchanged.
Dots and norms are accumulated in fp32 whatever the gradient dtype.

Plain functions over lists of tensors (one list per module, ``None`` for a missing gradient), so
that they can be tested on hand-made vectors. The update itself is written once,
:func:`subtract_projection_`: the backward hooks (``mgcm/backward.py``, inside the backward pass,
without per-task gradient copies) and :func:`combine` (the synchronised path, ``mgcm/sync.py``, and
the tests' reference) both call it. Which tensors form a module: ``mgcm/grouping.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

Grads = Sequence[torch.Tensor | None]


@dataclass(frozen=True)
class PairStats:
    """fp32 tensors, 0-d over one module (or (G,) over G modules at once: every property is
    elementwise): ``dot = g_p . g_a``, ``primary_sq = |g_p|^2``, ``aux_sq = |g_a|^2``."""

    dot: torch.Tensor
    primary_sq: torch.Tensor
    aux_sq: torch.Tensor

    @property
    def cos(self) -> torch.Tensor:
        """Cosine; 0 where either gradient is zero."""
        denom = (self.primary_sq * self.aux_sq).sqrt()
        return torch.where(denom > 0, self.dot / denom.clamp_min(torch.finfo(torch.float32).tiny), 0.0)

    @property
    def coefficient(self) -> torch.Tensor:
        """``c`` with projected ``g_a = g_a - c g_p``: ``dot / |g_p|^2`` in conflict, else 0.
        A tensor (no host sync): decided on the device."""
        conflict = (self.dot < 0) & (self.primary_sq > 0)
        return torch.where(conflict, self.dot / self.primary_sq.clamp_min(torch.finfo(torch.float32).tiny), 0.0)

    @property
    def removed_sq(self) -> torch.Tensor:
        """``|c g_p|^2 = dot^2 / |g_p|^2`` in conflict, else 0: the squared norm the projection removes."""
        return self.coefficient * self.dot


def dot_fp32(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """``a . b`` in fp32 (None when either is missing)."""
    if a is None or b is None:
        return None
    return torch.dot(a.detach().reshape(-1).float(), b.detach().reshape(-1).float())


def sq_norm_fp32(a: torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None else dot_fp32(a, a)


def _zero(grads: Iterable[torch.Tensor | None]) -> torch.Tensor:
    device = next((g.device for g in grads if g is not None), torch.device("cpu"))
    return torch.zeros((), dtype=torch.float32, device=device)


def pair_stats(primary: Grads, aux: Grads) -> PairStats:
    """Statistics of one module; ``primary[i]`` and ``aux[i]`` are the gradients of its i-th tensor."""
    if len(primary) != len(aux):
        raise ValueError(f"a module's primary and auxiliary gradients differ in length: {len(primary)} vs {len(aux)}")
    dot = pp = aa = _zero([*primary, *aux])
    for p, a in zip(primary, aux):
        if p is not None and a is not None and p.shape != a.shape:
            raise ValueError(f"gradient shapes differ within a module: {tuple(p.shape)} vs {tuple(a.shape)}")
        if (d := dot_fp32(p, a)) is not None:
            dot = dot + d
        if p is not None:
            pp = pp + sq_norm_fp32(p)
        if a is not None:
            aa = aa + sq_norm_fp32(a)
    return PairStats(dot, pp, aa)


def subtract_projection_(targets: Grads, primary: Grads, coefficient: torch.Tensor) -> None:
    """The MGCM update of one module, in place: ``targets[i] -= c primary[i]`` for every tensor with a
    primary gradient (``targets[i]`` must then exist); ``c``: :attr:`PairStats.coefficient`, 0-d fp32,
    0 outside conflicts.

    A target is the auxiliary gradient (:func:`project_auxiliary`), or ``.grad`` already holding
    ``g_a + g_p`` or ``g_p + projected g_a`` (the backward hooks): subtracting ``c g_p`` is the same
    update either way, so it is written once. ``c`` stays a tensor (no host sync), so a module out of
    conflict still costs the arithmetic."""
    neg_c = -coefficient
    for t, p in zip(targets, primary):
        if p is not None:
            t.addcmul_(p, neg_c)  # t - c p, in t's dtype


def project_auxiliary(primary: Grads, aux: Grads) -> tuple[list[torch.Tensor | None], PairStats]:
    """The auxiliary gradients of one module after MGCM (new tensors; inputs are not modified),
    and the module's statistics. Non-conflicting, primary-less or zero-primary modules come back
    unchanged; a tensor without an auxiliary gradient stays ``None`` unless the projection gives
    it a component (``-c g_p``)."""
    stats = pair_stats(primary, aux)
    c = stats.coefficient
    if not bool(c != 0):  # a host sync, which keeps missing gradients missing (no zeros built)
        return [None if a is None else a.clone() for a in aux], stats
    out = [a.clone() if a is not None else None if p is None else torch.zeros_like(p) for p, a in zip(primary, aux)]
    subtract_projection_(out, primary, c)
    return out, stats


def combine(primary: Mapping[str, Grads], aux: Mapping[str, Mapping[str, Grads]]
            ) -> dict[str, list[torch.Tensor | None]]:
    """The MGCM update per module: ``g_p + sum over auxiliary tasks of projected g_a``.

    ``primary``: module -> gradients of its tensors; ``aux``: task -> module -> gradients (the same
    tensor order). A module may be missing from any task (no gradient). The synchronised path's
    update, and the reference that the in-backward implementation is tested against."""
    modules = list(dict.fromkeys([*primary, *(m for task in aux.values() for m in task)]))
    out: dict[str, list[torch.Tensor | None]] = {}
    for m in modules:
        p = primary.get(m)
        total = None if p is None else [None if g is None else g.clone() for g in p]
        for task_grads in aux.values():
            if (a := task_grads.get(m)) is None:
                continue
            projected = [None if g is None else g.clone() for g in a] if p is None else project_auxiliary(p, a)[0]
            total = projected if total is None else [_add(t, x) for t, x in zip(total, projected)]
        out[m] = total
    return out


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b
