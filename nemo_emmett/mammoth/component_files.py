"""Per-component weights of modular models: each component written once, a task loading only its own.

An export of a modular model (``nemo_emmett/export.py``) holds ``components/<name>.pt`` for every
named component (its entries of the model's state dict, full key names) instead of one
``model_weights.pt`` for everything; ``model_weights.pt`` keeps whatever belongs to no component
(nothing, for :class:`~nemo_emmett.mammoth.modular.ModularTranslation`). Restoring for some
directions builds the model from a task table cut down to them, so that only their components
exist, and reads only those members of the archive."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from nemo_emmett.data.examples import direction_key
from nemo_emmett.mammoth.component import Component, longest_prefix_first, owner

COMPONENTS_DIR = "components"


def component_member(name: str) -> str:
    return f"{COMPONENTS_DIR}/{name}.pt"


def split_state(state: Mapping[str, torch.Tensor], components: Iterable[Component]
                ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """``({component name: its entries}, the rest)``: each key goes to the component whose prefix it
    starts with (the longest, where prefixes nest), as parameters do (``ModularTasks.component_of``)."""
    components = list(components)
    ordered = longest_prefix_first(components)
    parts: dict[str, dict[str, torch.Tensor]] = {c.name: {} for c in components}  # in the model's order
    rest = {}
    for key, value in state.items():
        c = owner(key, ordered)
        (parts[c.name] if c is not None else rest)[key] = value
    return parts, rest


def restrict_tasks(cfg: dict[str, Any], directions: Iterable[str]) -> dict[str, Any]:
    """A model config whose task table keeps only the tasks of ``directions`` (``mt:en-de`` or task
    names); an unknown one is an error listing what the model has."""
    tasks = cfg["modular"]["tasks"]
    wanted = list(dict.fromkeys(directions))
    keep, found = [], set()
    for t in tasks:
        direction = direction_key(t["task"], t["source_lang"], t["target_lang"])
        hit = {direction, t["name"]} & set(wanted)
        if hit:
            keep.append(t)
            found |= hit
    missing = [d for d in wanted if d not in found]
    if missing:
        have = sorted(direction_key(t["task"], t["source_lang"], t["target_lang"]) for t in tasks)
        raise ValueError(f"the model has no task for {missing}; its tasks: {have}")
    names = {t["name"] for t in keep}
    modular = {**cfg["modular"], "tasks": keep}
    if modular.get("devices") is not None:
        modular["devices"] = [[n for n in dev if n in names] for dev in modular["devices"]]
    return {**cfg, "modular": modular}
