"""MGCM's modules: which parameter tensors are projected together, and their types for logging.

Granularities (:func:`group_parameters`): ``tensor`` (every parameter alone), ``module`` (the
submodule that owns a parameter, or a regex capture), ``component`` (named components).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

GRANULARITIES = ("tensor", "module", "component")

DEFAULT_MODULE_TYPES = {
    "embeddings": r".*(shared|embed_tokens|embed_positions|lm_head|wte|wpe)\..*",
    "perception": r"perception\..*",
    "encoder": r".*encoder\..*",
    "decoder": r".*decoder\..*",
}
"""Module types for the logged statistics: the first regex (full match) over a group's first
parameter name wins; groups matching none are ``other``."""


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
