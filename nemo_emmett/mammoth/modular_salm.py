"""Modular SALM-T5 for pretrained backbones: a frozen Hugging Face encoder-decoder (T5, mT5, Marian,
NLLB) shared by every task (``backbone.full``), with bottleneck adapters as the per-task components.

Each task names an ``encoder_adapter.<id>`` and a ``decoder_adapter.<id>`` (one adapter after every
encoder / decoder layer, shared by sharing pattern like any component) and the speech perception
for audio tasks. Forward hooks on the backbone's layers apply the adapters of the task being run;
a batch's examples are routed by direction, so only the adapters of the tasks present run and get
gradients. Everything else is SALM-T5 (``models/salm_t5.py``): speech embeddings and the prompt as
the encoder input, Hugging Face ``generate`` for decoding (the hooks act inside it too)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.mammoth.component import Component
from nemo_emmett.mammoth.routing import ModularTasks, restore_order
from nemo_emmett.mammoth.tasks import ModularConfig, ModularTaskConfig
from nemo_emmett.models.config import SalmT5Config
from nemo_emmett.models.salm_t5 import SalmT5
from nemo_emmett.modules.adapters import LayerAdapters, layer_list, with_adapter

BACKBONE = "backbone.full"
SIDES = ("encoder_adapter", "decoder_adapter")


@dataclass
class ModularSalmT5Config(SalmT5Config):
    modular: ModularConfig = field(default_factory=lambda: ModularConfig(encoder_layers=[], decoder_layers=[]))
    freeze: list[str] = field(default_factory=lambda: [r"backbone\..*"])
    """The pretrained backbone stays frozen: the adapters (and the perception) train."""


class ModularSalmT5(ModularTasks, SalmT5):
    config_class = ModularSalmT5Config
    adapter_components = True

    def build_backbone(self) -> nn.Module:
        backbone = super().build_backbone()
        sides = {"encoder_adapter": layer_list(backbone.get_encoder()),
                 "decoder_adapter": layer_list(backbone.get_decoder())}
        d, bottleneck = backbone.get_input_embeddings().embedding_dim, self.cfg.modular.adapter_bottleneck
        self.adapters = nn.ModuleDict({side: nn.ModuleDict() for side in SIDES})
        for c in self.components.values():
            if c.kind in SIDES:  # at adapters.<side>.<sharing id>: component_prefix
                self.adapters[c.kind][c.sharing_id] = LayerAdapters(len(sides[c.kind]), d, bottleneck)
        self._active: ModularTaskConfig | None = None
        for side, layers in sides.items():
            for i, layer in enumerate(layers):
                layer.register_forward_hook(self._hook(side, i))
        return backbone

    def _hook(self, side: str, index: int):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if self._active is None:
                raise RuntimeError("the backbone ran outside a task: call it through logits/generate_ids, which "
                                   "route each example to its task's adapters")
            adapters = self.adapters[side][self.components[getattr(self._active, side)].sharing_id]
            return with_adapter(output, adapters.layers[index])
        return hook

    @contextmanager
    def running(self, task: ModularTaskConfig) -> Iterator[None]:
        """The backbone's layers apply ``task``'s adapters inside this block."""
        previous, self._active = self._active, task
        try:
            yield
        finally:
            self._active = previous

    def direction_scope(self, task: str, source_lang: str, target_lang: str) -> AbstractContextManager:
        """The direction's adapters, for callers that run the backbone themselves (simultaneous decoding);
        an unknown direction is an error naming the model's tasks."""
        return self.running(self.task_for(task, source_lang, target_lang))

    # ---- components -------------------------------------------------------------------------
    def component_prefix(self, component: Component) -> str:
        """The whole pretrained model is ``backbone.full``; each adapter its own ``adapters`` entry."""
        if component.kind in SIDES:
            return f"adapters.{component.kind}.{component.sharing_id}."
        return {"backbone": "backbone.", "perception": "perception."}[component.kind]

    def task_components(self, task: ModularTaskConfig) -> list[str]:
        return [c for c in [task.perception, BACKBONE, task.encoder_adapter, task.decoder_adapter] if c is not None]

    # ---- forward ----------------------------------------------------------------------------
    def logits(self, batch: TranslationBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        groups = self.task_groups(batch)
        pieces, auxes, order = [], [], []
        for task, idx in groups:
            with self.running(task):
                logits, aux = super().logits(batch if len(groups) == 1 else batch.take_rows(idx))
            pieces.append(logits)
            auxes.append(aux)
            order.append(idx)
        aux = {k: restore_order([a[k] for a in auxes], order) for k in auxes[0]}  # (B,) per-example losses
        return restore_order(pieces, order), aux

    def generate_ids(self, batch: TranslationBatch) -> list[list[int]]:
        out: list[list[int] | None] = [None] * len(batch)
        for task, idx in self.task_groups(batch):
            with self.running(task):
                for i, ids in zip(idx.tolist(), super().generate_ids(batch.take_rows(idx))):
                    out[i] = ids
        return out
