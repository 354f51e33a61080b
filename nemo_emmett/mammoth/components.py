"""The named components of a modular model, built once from the model's component records.

Every component a task lists exists once, whatever the number of tasks that share it; its
parameters live under ``components.<kind>.<position>.<id>`` (``components.embed.<id>`` for
embeddings), so a parameter's name says which component holds it."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from nemo_emmett.mammoth.component import Component
from nemo_emmett.mammoth.tasks import ModularConfig
from nemo_emmett.modules.transformer import LayerStack


def component_path(name: str) -> str:
    """``encoder.0.en`` -> ``components.encoder.0.en`` (the module path under the bank's owner)."""
    return f"components.{name}"


class ComponentBank(nn.Module):
    """Layer stacks and embedding tables by component name (perception lives with the model)."""

    def __init__(self, components: Iterable[Component], cfg: ModularConfig, *, vocab_size: int, pad_id: int):
        super().__init__()
        self.components = nn.ModuleDict()
        self._names: list[str] = []
        for c in components:
            if c.kind == "perception":
                continue
            if c.kind == "embed":
                module: nn.Module = nn.Embedding(vocab_size, cfg.d_model, padding_idx=pad_id)
                nn.init.normal_(module.weight, std=cfg.d_model ** -0.5)
            else:
                layers = (cfg.encoder_layers if c.kind == "encoder" else cfg.decoder_layers)[c.position]
                module = LayerStack(c.kind, num_layers=layers, d_model=cfg.d_model, n_heads=cfg.n_heads,
                                    d_ff=cfg.d_ff, dropout=cfg.dropout)
            self._slot(c.kind, c.position).add_module(c.sharing_id, module)  # at component_path(c.name)
            self._names.append(c.name)

    def _slot(self, kind: str, pos: int | None) -> nn.ModuleDict:
        if kind not in self.components:
            self.components[kind] = nn.ModuleDict()
        slot = self.components[kind]
        if pos is None:
            return slot
        if str(pos) not in slot:
            slot[str(pos)] = nn.ModuleDict()
        return slot[str(pos)]

    def __getitem__(self, name: str) -> nn.Module:
        try:
            return self.get_submodule(component_path(name))
        except AttributeError:
            raise KeyError(f"no component {name!r}; the model has {self.names()}") from None

    def names(self) -> list[str]:
        """The components built here, in the order they were built."""
        return list(self._names)
