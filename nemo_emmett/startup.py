"""Start-up in one direction: sources, then the tokenizer, then the data module and the model, which
both receive that tokenizer.

1. :func:`resolve_sources`: the data config with its sources: ``data.train_sources``, or NeMo's
   ``data.input_cfg`` (its entries converted into cached Shar folders where they are not ours, NeMo's dicts
   of shard URLs listed to be streamed: ``data/prepare/nemo_inputs.py``); with neither and ``data.demo.enabled``, the embedded demo corpus
   is built (or found in the cache) and its sources filled in. Nothing after this step writes data.
2. :func:`resolve_model_config`: the model config with its tokenizer: its own (``spm_path``,
   ``hf_path`` or the pretrained backbone's folder), ``data.tokenizer.model_path``, or a
   SentencePiece model trained on the training text (cached). The path is written into the config,
   so that checkpoints restore with the same tokenizer.
   A modular model's task table is checked against the sources: a task no training source reaches is
   an error (``mammoth/tasks.py`` ``check_task_data``).
3. :func:`build_data_and_model`: the tokenizer (the model class's text processor, with its
   prompts), then ``EmmettDataModule(data, text=...)`` (bucketing counts tokens with it) and the
   model (``cls(cfg, text=...)``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from nemo_emmett.data.batch_groups import component_groups
from nemo_emmett.data.config import DataConfig, parse_data_config
from nemo_emmett.data.datamodule import EmmettDataModule
from nemo_emmett.data.examples import TASKS, direction_key
from nemo_emmett.data.plan import resolve_sources as resolve_specs
from nemo_emmett.mammoth.tasks import check_task_data, with_task_transforms
from nemo_emmett.models.base import TranslationModel
from nemo_emmett.models.config import parse_model_config
from nemo_emmett.parts.text_processor import TextProcessor

log = logging.getLogger(__name__)


def resolve_sources(cfg: DataConfig | DictConfig | dict[str, Any]) -> DataConfig:
    """``cfg`` parsed, with its training sources: ``train_sources``, or those of NeMo's ``input_cfg`` (then set
    to null: its weights and tags are in the sources), or the demo corpus's; every source's ``num_examples``
    counted once (the tokenizer's cache key and the plan's weights read it)."""
    cfg = parse_data_config(cfg)
    train, validation = cfg.train_sources, cfg.validation_sources
    if cfg.input_cfg is not None:
        if train:
            raise ValueError("data.train_sources and data.input_cfg are both given: give one (input_cfg is NeMo's "
                             "spelling of the training sources, turned into train_sources at start-up)")
        from nemo_emmett.data.prepare.nemo_inputs import input_cfg_sources

        train = input_cfg_sources(cfg.input_cfg, cfg.reweight_temperature, allow_incomplete=cfg.allow_incomplete)
    elif cfg.reweight_temperature is not None:
        raise ValueError("data.reweight_temperature applies to data.input_cfg only (NeMo's w_i^T per level); for "
                         "train_sources without weights use data.size_temperature (p_i ~ n_i^(1/T))")
    if not train:
        if not cfg.demo.enabled:
            raise ValueError("data.train_sources is empty and data.demo.enabled is false: nothing to train on")
        from nemo_emmett.data.prepare.demo import demo_sources

        train, demo_validation = demo_sources(cfg.demo)
        validation = validation or demo_validation
    if cfg.tasks is not None:
        train, validation = only_tasks(train, cfg.tasks, "train_sources"), only_tasks(validation, cfg.tasks, None)
    return dataclasses.replace(  # input_cfg is now in train_sources (with its weights): resolving again keeps them
        cfg, input_cfg=None, reweight_temperature=None, train_sources=[s.as_config() for s in resolve_specs(train, "train_sources",
                                                                         allow_incomplete=cfg.allow_incomplete)],
        validation_sources=[s.as_config() for s in resolve_specs(validation, "validation_sources",
                                                                         allow_incomplete=cfg.allow_incomplete)])


def only_tasks(sources: list, tasks: list[str], required: str | None) -> list:
    """The sources (dicts or :class:`SourceSpec`) of ``tasks`` (``data.tasks``), the others logged; none left of
    a ``required`` list is an error naming it."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"data.tasks: unknown task(s) {unknown}; expected some of {list(TASKS)}")
    kept = [s for s in sources if _field(s, "task") in tasks]
    left = [f"{_field(s, 'name')} ({_field(s, 'task')})" for s in sources if _field(s, "task") not in tasks]
    if left:
        log.info("data.tasks=%s: %d of %d %s kept; left out: %s", list(tasks), len(kept), len(sources),
                 required or "validation_sources", ", ".join(left))
    if required and sources and not kept:
        raise ValueError(f"data.tasks={list(tasks)} leaves no {required}: their tasks are "
                         f"{sorted({_field(s, 'task') for s in sources})}")
    return kept


def _field(source: Any, key: str) -> Any:
    """A field of a source given as a dict (config) or a ``SourceSpec`` (demo corpus)."""
    return source.get(key) if isinstance(source, dict) else getattr(source, key)


def data_tokenizer(data: DataConfig) -> str:
    """The SentencePiece model of a run whose model has no tokenizer of its own: ``data.tokenizer.model_path``,
    or one trained on the training text (cached by the sources' content and the settings)."""
    tok = data.tokenizer
    if tok.model_path is not None:
        return tok.model_path
    from nemo_emmett.data.prepare.tokenizer import tokenizer_for_sources

    specs = resolve_specs(data.train_sources, "train_sources", allow_incomplete=data.allow_incomplete)
    return str(tokenizer_for_sources(specs, vocab_size=tok.vocab_size, sample_examples=tok.sample_examples,
                                     allow_incomplete=data.allow_incomplete))


def resolve_model_config(model_cfg: DictConfig | dict[str, Any], data: DataConfig) -> dict[str, Any]:
    """``model_cfg`` as a plain dict whose tokenizer is set: the model's own, else :func:`data_tokenizer`."""
    plain = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    tok = dict(plain.get("tokenizer") or {})
    pretrained = (plain.get("backbone") or {}).get("pretrained_path")
    if tok.get("spm_path") is None and tok.get("hf_path") is None and pretrained is None:
        tok["spm_path"] = data_tokenizer(data)
    return {**plain, "tokenizer": tok}


def model_class(name: str) -> type[TranslationModel]:
    cls = get_class(name)
    if not (isinstance(cls, type) and issubclass(cls, TranslationModel)):
        raise TypeError(f"model_class {name!r} is not a nemo_emmett TranslationModel")
    return cls


@dataclasses.dataclass
class RunInputs:
    """What a run is built from, resolved in order (module docstring)."""

    data: DataConfig
    """With its sources."""
    model_class: type[TranslationModel]
    model: dict[str, Any]
    """The model config with its tokenizer set."""
    text: TextProcessor
    """The tokenizer both the data module and the model receive."""
    batch_groups: dict[str, str] | None = None
    """A modular model's directions grouped by the components they run (``data.batch_by: components``)."""

    def data_module(self, *, rank_directions: list[list[str]] | None = None) -> EmmettDataModule:
        """The data module, set up (its plan built). ``rank_directions``: as in :class:`EmmettDataModule`."""
        data = EmmettDataModule(self.data, text=self.text, rank_directions=rank_directions,
                                batch_groups=self.batch_groups)
        data.setup("fit")
        return data

    def build_model(self) -> TranslationModel:
        return self.model_class(self.model, text=self.text)


def resolve_run(cfg: DictConfig) -> RunInputs:
    """Sources, then the tokenizer, of a full run config (``data``, ``model``, ``model_class``)."""
    data = resolve_sources(cfg.data)
    cls = model_class(cfg.model_class)
    model_cfg = resolve_model_config(cfg.model, data)
    parsed = parse_model_config(model_cfg, cls.config_class)
    groups = None
    if getattr(parsed, "modular", None) is not None:  # a modular model: every task has data, or says zero_shot
        check_task_data(parsed.modular.tasks, [direction_key(s["task"], s["source_lang"], s["target_lang"])
                                               for s in data.train_sources])
        data = dataclasses.replace(data, train_sources=with_task_transforms(data.train_sources, parsed.modular.tasks))
        groups = component_groups({t.direction: t.route() for t in parsed.modular.tasks})
    return RunInputs(data, cls, model_cfg, cls.build_text(parsed), groups)  # its tokenizer, prompts included


def build_data_and_model(cfg: DictConfig, *, rank_directions: list[list[str]] | None = None
                         ) -> tuple[EmmettDataModule, TranslationModel]:
    """The data module (set up) and the model of a full run config, in that order, sharing one tokenizer."""
    run = resolve_run(cfg)
    return run.data_module(rank_directions=rank_directions), run.build_model()
