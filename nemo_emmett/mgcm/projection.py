"""MGCM, modular gradient conflict mitigation (arXiv 2409.15911): the arithmetic.

Multi-task training with a *primary* task (speech translation) and *auxiliary* tasks (ASR, text
MT). For each module ``m`` (a group of parameter tensors) and each auxiliary task ``a``::

    if cos(g_p^m, g_a^m) < 0:   g_a^m <- g_a^m - (g_p^m . g_a^m / |g_p^m|^2) g_p^m

The primary gradient is never changed; the update is ``g_p + sum_a g_a`` (projected). A module
without a primary gradient (missing, or all zeros) takes the auxiliary gradients unchanged.
Dots and norms are accumulated in fp32 whatever the gradient dtype.

Plain functions over lists of tensors (one list per module, ``None`` for a missing gradient), so
that they can be tested on hand-made vectors; :mod:`nemo_emmett.mgcm.step` applies the same
rule inside the backward pass, module by module, without per-task gradient copies.

Module granularity (:func:`group_parameters`): ``tensor`` (every parameter alone), ``module``
(the submodule that owns a parameter, or a regex capture), ``component`` (named components).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

GRANULARITIES = ("tensor", "module", "component")

DEFAULT_MODULE_TYPES = {
    "embeddings": r".*(shared|embed_tokens|embed_positions|lm_head|wte|wpe)\..*",
    "perception": r"perception\..*",
    "encoder": r".*encoder\..*",
    "decoder": r".*decoder\..*",
}
"""Module types for the logged statistics: the first regex (full match) over a group's first
parameter name wins; groups matching none are ``other``."""

Grads = Sequence[torch.Tensor | None]


@dataclass(frozen=True)
class PairStats:
    """fp32 0-d tensors over one module: ``dot = g_p . g_a``, ``primary_sq = |g_p|^2``,
    ``aux_sq = |g_a|^2``."""

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


def project_auxiliary(primary: Grads, aux: Grads) -> tuple[list[torch.Tensor | None], PairStats]:
    """The auxiliary gradients of one module after MGCM (new tensors; inputs are not modified),
    and the module's statistics. Non-conflicting, primary-less or zero-primary modules come back
    unchanged; a tensor without an auxiliary gradient stays ``None`` unless the projection gives
    it a component (``-c g_p``)."""
    stats = pair_stats(primary, aux)
    c = stats.coefficient
    conflict = bool(c != 0)
    out: list[torch.Tensor | None] = []
    for p, a in zip(primary, aux):
        if p is None or not conflict:
            out.append(None if a is None else a.clone())
            continue
        step = (c * p.float()).to(p.dtype)
        out.append(-step if a is None else a - step)
    return out, stats


def combine(primary: Mapping[str, Grads], aux: Mapping[str, Mapping[str, Grads]]
            ) -> dict[str, list[torch.Tensor | None]]:
    """The MGCM update per module: ``g_p + sum over auxiliary tasks of projected g_a``.

    ``primary``: module -> gradients of its tensors; ``aux``: task -> module -> gradients (the same
    tensor order). A module may be missing from any task (no gradient). The reference that the
    in-backward implementation is tested against."""
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


def group_parameters(names: Iterable[str], *, granularity: str, module_patterns: Sequence[str] = (),
                     components: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Group parameter names into MGCM modules, in order of first appearance.

    - ``tensor``: every parameter is its own module.
    - ``module``: the first of ``module_patterns`` (regexes with one capture group, full match over
      the parameter name) that matches gives the module name, its capture; a parameter that
      matches none belongs to the submodule that owns it (the name without its last part: a
      Linear's weight and bias, a norm's scale and shift, go together).
    - ``component``: ``components`` maps component names to regexes (full match); the first that
      matches names the module. Every parameter must match one. Modular (MAMMOTH) models supply
      them from their named components (``mgcm_components``); other models take them from YAML.
    """
    names = list(names)
    if granularity not in GRANULARITIES:
        raise ValueError(f"mgcm.granularity must be one of {GRANULARITIES}, got {granularity!r}")
    groups: dict[str, list[str]] = {}
    if granularity == "tensor":
        for n in names:
            groups[n] = [n]
        return groups
    if granularity == "module":
        regexes = [_compile(p, "mgcm.module_patterns", need_group=True) for p in module_patterns]
        for n in names:
            m = next((m for r in regexes if (m := r.fullmatch(n))), None)
            key = m.group(1) if m is not None else (n.rsplit(".", 1)[0] if "." in n else n)
            groups.setdefault(key, []).append(n)
        return groups
    if not components:
        raise ValueError("mgcm.granularity=component needs mgcm.components: {name: regex over parameter names}")
    regexes = {c: _compile(p, f"mgcm.components.{c}") for c, p in components.items()}
    unmatched = []
    for n in names:
        key = next((c for c, r in regexes.items() if r.fullmatch(n)), None)
        if key is None:
            unmatched.append(n)
        else:
            groups.setdefault(key, []).append(n)
    if unmatched:
        raise ValueError(f"mgcm.components: {len(unmatched)} parameter(s) match no component pattern, e.g. "
                         f"{unmatched[:3]}; add a pattern for them (a catch-all: {{rest: '.*'}})")
    return groups


def module_type(name: str, types: Mapping[str, str]) -> str:
    """The first type whose regex fully matches ``name``, else ``other``."""
    for t, pattern in types.items():
        if re.fullmatch(pattern, name):
            return t
    return "other"


def _compile(pattern: str, key: str, need_group: bool = False) -> re.Pattern:
    try:
        r = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{key}: {pattern!r} is not a valid regex ({e})") from e
    if need_group and r.groups < 1:
        raise ValueError(f"{key}: {pattern!r} needs a capture group naming the module, e.g. '(backbone\\.encoder\\.block\\.\\d+)\\..*'")
    return r
