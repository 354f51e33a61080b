"""What every modular model family shares: the task table, routing a batch's examples to their
tasks, and the named components behind parameters (MGCM granularity, per-task sizes, the
OOMptimizer's probe direction, per-component files). The components are records
(``mammoth/component.py``) built once from the task table; everything here reads them."""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.data.examples import direction_key
from nemo_emmett.mammoth.component import Component, components_from_names, longest_prefix_first, owner
from nemo_emmett.mammoth.component_files import restrict_tasks, split_state
from nemo_emmett.mammoth.sync import place
from nemo_emmett.mammoth.tasks import ModularTaskConfig, check_modular
from nemo_emmett.parts.text_processor import TextProcessor


class TaskPrompts(TextProcessor):
    """Prompts per task (direction): a tag only where the task's decoder needs one."""

    def __init__(self, *, templates: dict[str, str], **kw: Any):
        super().__init__(**kw)
        self.templates = templates

    def prompt_ids(self, *, task: str, source_lang: str, target_lang: str) -> list[int]:
        key = direction_key(task, source_lang, target_lang)
        if key not in self.templates:
            raise KeyError(f"no modular task for direction {key}; tasks: {sorted(self.templates)}")
        text = self.templates[key].format(task=task, source_lang=source_lang, target_lang=target_lang)
        return self.encode(text) if text else []


def restore_order(pieces: list[torch.Tensor], order: list[torch.Tensor]) -> torch.Tensor:
    """Rows computed per task group (``pieces[i]`` for the batch rows ``order[i]``) back in batch order."""
    if len(pieces) == 1:
        return pieces[0]
    inverse = torch.argsort(torch.cat(order))
    return torch.cat(pieces)[inverse.to(pieces[0].device)]


class ModularTasks:
    """Mixin for a :class:`~nemo_emmett.models.base.TranslationModel` whose every parameter belongs to
    one named component and whose examples run the components of their task (``cfg.modular.tasks``)."""

    tasks: dict[str, ModularTaskConfig]
    """Direction (``mt:en-de``) -> task; set by ``check_config``, before any module is built."""
    components: dict[str, Component]
    """Component name -> its record (kind, position, sharing id, prefix; holders once placed), in
    first-use order over the task table; set with the tasks, so that ``build_backbone`` builds from them."""
    adapter_components: bool = False
    """True: the components are adapters of a pretrained backbone (``check_modular(adapters=True)``)."""

    def check_config(self) -> None:
        super().check_config()  # the family's own checks (e.g. SALM-T5's model.simul)
        check_modular(self.cfg.modular, adapters=self.adapter_components)
        self.tasks = {t.direction: t for t in self.cfg.modular.tasks}
        names = (n for t in self.cfg.modular.tasks for n in self.task_components(t))
        self.components = components_from_names(names, self.component_prefix)

    @classmethod
    def build_text(cls, cfg: Any) -> TextProcessor:
        base = super().build_text(cfg)
        templates = {t.direction: t.prompt for t in cfg.modular.tasks}
        return TaskPrompts(templates=templates, spm_path=base.spm_path, hf_path=base.hf_path,
                           prompt_template=base.prompt_template)

    @property
    def uses_audio(self) -> bool:
        return any(t.perception is not None for t in self.cfg.modular.tasks)

    @abstractmethod
    def component_prefix(self, component: Component) -> str:
        """Where the family puts the parameters of ``component``: their name prefix, ending with a dot
        (``backbone.components.encoder.0.en.``). Called once per component, before any module exists."""

    def task_components(self, task: ModularTaskConfig) -> list[str]:
        """The components ``task`` runs."""
        return task.components()

    def component_modules(self) -> dict[str, nn.Module]:
        """Component name -> the module holding its parameters."""
        return {name: self.get_submodule(c.module_path) for name, c in self.components.items()}

    def component_of(self) -> dict[str, str]:
        """Parameter name -> its component. Every parameter of the model belongs to exactly one."""
        ordered = longest_prefix_first(self.components.values())
        out = {}
        for pname, _ in self.named_parameters():
            c = owner(pname, ordered)
            if c is None:
                raise RuntimeError(f"parameter {pname!r} belongs to no component")
            out[pname] = c.name
        return out

    def split_weights(self, state: dict[str, torch.Tensor]
                      ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Each component's entries apart (a saved model's ``components/<name>.safetensors``), the rest together."""
        return split_state(state, self.components.values())

    @classmethod
    def restricted_config(cls, cfg: dict[str, Any], directions: list[str]) -> dict[str, Any]:
        """The task table cut down to ``directions``' tasks, so that only their components are built."""
        return restrict_tasks(cfg, directions)

    def mgcm_components(self) -> dict[str, str] | None:
        """MGCM ``component`` granularity: one module per named component (the first match wins)."""
        return {c.name: re.escape(c.prefix) + ".*" for c in longest_prefix_first(self.components.values())}

    def place_components(self, placed: Mapping[str, Component]) -> None:
        """Take this model's holders from ``placed``, the run's records after placement
        (``mammoth/sync.py``'s ``place_components``, called by the ``component_sync`` strategy)."""
        for name, c in self.components.items():
            other = placed.get(name)
            if other is None or other.prefix != c.prefix:
                raise ValueError(f"the placement has no component {name!r} with prefix {c.prefix!r}; it has "
                                 f"{sorted(placed)}")
        self.components = place(self.components.values(), {name: placed[name].holders for name in self.components})

    def task_for(self, task: str, source_lang: str, target_lang: str) -> ModularTaskConfig:
        key = direction_key(task, source_lang, target_lang)
        t = self.tasks.get(key)
        if t is None:
            raise KeyError(f"no modular task for direction {key}; model.modular.tasks has {sorted(self.tasks)}")
        return t

    def task_groups(self, batch: TranslationBatch) -> list[tuple[ModularTaskConfig, torch.Tensor]]:
        """The batch's routes in order of first appearance, each as its first task with the (N,) indices of
        its examples: directions with the same route (:meth:`ModularTaskConfig.route`, the same components
        in the same places) run as one sub-batch, so a batch of one route (``data.batch_by: components``)
        runs one pass."""
        rows: dict[tuple, tuple[ModularTaskConfig, list[int]]] = {}
        for i, key in enumerate(batch.directions):
            task = self.task_for(*key)
            rows.setdefault(task.route(), (task, []))[1].append(i)
        return [(task, torch.tensor(idx, dtype=torch.long)) for task, idx in rows.values()]

    def components_reached(self, batch: TranslationBatch, task: str) -> set[str]:
        """The components that the batch's examples of ``task`` (``st``, ``asr``, ``mt``) run."""
        return {c for t, _ in self.task_groups(batch) if t.task == task for c in self.task_components(t)}

    def parameters_per_task(self) -> dict[str, int]:
        """Parameters each task runs (its components' sizes summed)."""
        sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in self.component_modules().items()}
        return {t.name: sum(sizes[c] for c in self.task_components(t)) for t in self.tasks.values()}

    def probe_direction(self, modality: str) -> tuple[str, str, str] | None:
        """The task of ``modality`` with the most parameters: the heaviest step of its buckets."""
        sizes = self.parameters_per_task()
        tasks = [t for t in self.tasks.values() if (t.perception is not None) == (modality == "audio")]
        if not tasks:
            return None
        t = max(tasks, key=lambda t: sizes[t.name])
        return t.task, t.source_lang, t.target_lang
