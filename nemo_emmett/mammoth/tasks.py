"""Typed configuration of modular (MAMMOTH) models: layer-stack sizes and the task table.

A *task* is one direction and modality (``mt`` en->de, ``st`` en->fr, ``asr`` en) with the named
components it runs at each position and its prompt (preprocessing). Training data reach a task
by their direction: a source with ``task: mt, source_lang: en, target_lang: de`` trains the task
with those three values. A task that no training source reaches is an error at start-up
(:func:`check_task_data`), unless it says ``zero_shot: true`` (validated, never trained: a warning). ``examples/config_config.py`` writes this table from sharing patterns;
it can also be written by hand."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nemo_emmett.data.examples import AUDIO_TASKS, TASKS, direction_key
from nemo_emmett.data.transforms import parse_transforms
from nemo_emmett.mammoth.component import Component
from nemo_emmett.mammoth.sharing import check_id
from nemo_emmett.models.config import ModelConfig
from nemo_emmett.parts.text_processor import DEFAULT_PROMPT

log = logging.getLogger(__name__)


@dataclass
class ModularTaskConfig:
    name: str = "???"
    """Unique name, e.g. ``mt_en-de``; the component files and logs use the direction instead."""
    task: str = "mt"
    """``mt``, ``st`` or ``asr``."""
    source_lang: str = "???"
    target_lang: str = "???"
    encoder: list[str] = field(default_factory=list)
    """One ``encoder.<position>.<id>`` component per encoder position, in order."""
    decoder: list[str] = field(default_factory=list)
    """One ``decoder.<position>.<id>`` per decoder position."""
    source_embed: str = "embed.full"
    """Embeds the prompt and the source text."""
    target_embed: str = "embed.full"
    """Embeds the decoder input and, tied, scores the output."""
    perception: str | None = None
    """``perception.full`` for audio tasks (one speech encoder shared by every audio task)."""
    prompt: str = DEFAULT_PROMPT
    """Prompt before the input; may use {task}, {source_lang}, {target_lang}. The target-language tag
    is needed where a decoder serves several target languages; '' for none."""
    encoder_adapter: str | None = None
    """Pretrained backbones (``ModularSalmT5``): ``encoder_adapter.<id>``, a bottleneck adapter after every
    encoder layer of the frozen backbone (``encoder`` and ``decoder`` stay empty)."""
    decoder_adapter: str | None = None
    """Likewise ``decoder_adapter.<id>`` after every decoder layer."""
    transforms: list[dict[str, Any]] | None = None
    """The training transforms of this task's sources (``data/transforms.py``: filters, ``subword_sampling``),
    given at start-up to each source of the task's direction that lists none of its own; null: those sources
    keep ``data.transforms``. Checked when the config is parsed (errors name the task)."""
    zero_shot: bool = False
    """True: no training source has this direction (a zero-shot or evaluation-only task; the meta-config
    tool sets it for tasks of weight 0). False: start-up refuses the run when no training source has it."""

    def __post_init__(self) -> None:
        parse_transforms(self.transforms, f"task {self.name!r}: transforms")

    @property
    def direction(self) -> str:
        return direction_key(self.task, self.source_lang, self.target_lang)

    def route(self) -> tuple:
        """What the task computes with: its task name and its components in their places. Directions with
        equal routes run as one sub-batch (``ModularTasks.task_groups``) and may share a batch
        (``data.batch_by: components``); only their prompts and targets differ."""
        return (self.task, self.perception, self.source_embed, tuple(self.encoder), self.encoder_adapter,
                self.target_embed, tuple(self.decoder), self.decoder_adapter)

    def components(self) -> list[str]:
        """Every component the task runs, without repeats, in forward order."""
        names = [self.perception, self.source_embed, *self.encoder, self.encoder_adapter, self.target_embed,
                 *self.decoder, self.decoder_adapter]
        return list(dict.fromkeys(n for n in names if n is not None))


@dataclass
class ModularConfig:
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 256
    dropout: float = 0.1
    encoder_layers: list[int] = field(default_factory=lambda: [1, 1])
    """Layers of the stack at each encoder position (every task has one component per position)."""
    decoder_layers: list[int] = field(default_factory=lambda: [1, 1])
    tasks: list[ModularTaskConfig] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    """Language groups the sharing ids came from (a record for readers; names are already resolved)."""
    devices: list[list[str]] | None = None
    """Task names per device (the meta-config tool's allocation, for component-aware distributed training)."""
    adapter_bottleneck: int = 64
    """Width of the bottleneck adapters (pretrained backbones)."""


@dataclass
class ModularModelConfig(ModelConfig):
    modular: ModularConfig = field(default_factory=ModularConfig)


def check_modular(cfg: ModularConfig, *, adapters: bool = False) -> None:
    """Restrictions on the task table, with errors that name the task and key. ``adapters``: the
    components are adapters of a pretrained backbone (no layer stacks; every task names its two adapters)."""
    if not cfg.tasks:
        raise ValueError("model.modular.tasks is empty: list the tasks (examples/config_config.py writes them)")
    for key in ("encoder_layers", "decoder_layers"):
        layers = getattr(cfg, key)
        if adapters and layers:
            raise ValueError(f"model.modular.{key} must be [] with a pretrained backbone (its layers are fixed), got {layers}")
        if not adapters and (not layers or any(n < 1 for n in layers)):
            raise ValueError(f"model.modular.{key} must list at least one stack of >= 1 layers, got {layers}")
    if adapters and cfg.adapter_bottleneck < 1:
        raise ValueError(f"model.modular.adapter_bottleneck must be >= 1, got {cfg.adapter_bottleneck}")
    names, directions = set(), {}
    for i, t in enumerate(cfg.tasks):
        where = f"model.modular.tasks[{i}] ({t.name!r})"
        check_id(t.name, f"{where}: name")
        if t.name in names:
            raise ValueError(f"{where}: task name is used twice")
        names.add(t.name)
        if t.task not in TASKS:
            raise ValueError(f"{where}: task {t.task!r} is not one of {TASKS}")
        check_id(t.source_lang, f"{where}: source_lang")
        check_id(t.target_lang, f"{where}: target_lang")
        if t.direction in directions:
            raise ValueError(f"{where}: direction {t.direction} is already task {directions[t.direction]!r}")
        directions[t.direction] = t.name
        for side, layers in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
            comps = getattr(t, side)
            if len(comps) != len(layers):
                raise ValueError(f"{where}: {len(comps)} {side} components {comps}, but model.modular.{side}_layers "
                                 f"has {len(layers)} positions: every task needs one component per position")
            for pos, name in enumerate(comps):
                c = Component.parse(name)
                if c.kind != side or c.position != pos:
                    raise ValueError(f"{where}: {side}[{pos}] is {name!r}; expected {side}.{pos}.<id>")
        for key in ("encoder_adapter", "decoder_adapter"):
            value = getattr(t, key)
            if adapters and (value is None or Component.parse(value).kind != key):
                raise ValueError(f"{where}: {key} must be a {key}.<id> component with a pretrained backbone, got {value!r}")
            if not adapters and value is not None:
                raise ValueError(f"{where}: {key} {value!r} needs a pretrained backbone (ModularSalmT5); "
                                 "layer-stack models have none")
        for key in () if adapters else ("source_embed", "target_embed"):  # a pretrained backbone embeds itself
            if Component.parse(getattr(t, key)).kind != "embed":
                raise ValueError(f"{where}: {key} {getattr(t, key)!r} is not an embed.<id> component")
        if t.task in AUDIO_TASKS:
            if t.perception is None or Component.parse(t.perception).kind != "perception":
                raise ValueError(f"{where}: an {t.task} task needs perception: perception.full, got {t.perception!r}")
        elif t.perception is not None:
            raise ValueError(f"{where}: a text task has no perception, got {t.perception!r}")
    perceptions = {t.perception for t in cfg.tasks if t.perception is not None}
    if len(perceptions) > 1:
        raise ValueError(f"model.modular.tasks name {len(perceptions)} perception components {sorted(perceptions)}; "
                         "one speech encoder serves every audio task (perception.full)")
    if cfg.devices is not None:
        placed = [n for dev in cfg.devices for n in dev]
        unknown = sorted(set(placed) - names)
        if unknown:
            raise ValueError(f"model.modular.devices names unknown task(s) {unknown}; tasks are {sorted(names)}")


def check_task_data(tasks: Sequence[ModularTaskConfig], train_directions: Iterable[str]) -> list[str]:
    """Every task is trained by a source of its direction, or says ``zero_shot: true``; a zero-shot task
    is trained by none. Errors name the task, its direction and the directions that have data; returns
    the zero-shot tasks (each warned: never trained, only validated)."""
    have = sorted(set(train_directions))
    zero_shot = []
    for i, t in enumerate(tasks):
        where = f"model.modular.tasks[{i}] ({t.name!r}, direction {t.direction})"
        if t.zero_shot:
            if t.direction in have:
                raise ValueError(f"{where} says zero_shot: true, but data.train_sources train it: set zero_shot: "
                                 "false, or leave its sources out")
            zero_shot.append(t.name)
            log.warning("%s: zero_shot: no training source; its components train only through other tasks", where)
        elif t.direction not in have:
            raise ValueError(f"{where}: no training source has this direction, so it would never be trained; "
                             f"data.train_sources have {have}. Add a source with task: {t.task}, source_lang: "
                             f"{t.source_lang}, target_lang: {t.target_lang}, or set zero_shot: true on the task "
                             "(validated, not trained)")
    return zero_shot


def with_task_transforms(sources: list[dict[str, Any]], tasks: Sequence[ModularTaskConfig]) -> list[dict[str, Any]]:
    """Training source entries with their task's ``transforms`` (the task table's), where the task has some and
    the source lists none of its own (a source's own list wins, as over ``data.transforms``)."""
    by_direction = {t.direction: t.transforms for t in tasks if t.transforms is not None}
    return [{**s, "transforms": by_direction[d]} if s.get("transforms") is None and (
        d := direction_key(s["task"], s["source_lang"], s["target_lang"])) in by_direction else s for s in sources]
