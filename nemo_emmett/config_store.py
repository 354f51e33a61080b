"""Hydra's structured schemas for the configs under ``conf/``: every default comes from the typed
dataclasses, a YAML sets only what differs, and an unknown key is an error at composition.

Each top-level YAML opens its defaults list with its family's schema (``- schema: salm_t5``); one that
extends another config switches it with ``- override schema: ...``. A schema is :class:`RunConfig` with
the model class's config dataclass under ``model``: the composed config holds every default, typed, so
``model.mgcm.enabled=true`` or ``data.size_temperature=2`` work without ``+`` whether or not the YAML names the
key. One exception: ``model.optim`` holds only the blocks given (an open dict), because a block that
names another ``_target_`` replaces the default one whole (:func:`nemo_emmett.models.config.merge_optim`),
which a dict merged at composition could no longer tell.

Call :func:`register_configs` before Hydra composes (``examples/train.py``), or compose with
:func:`compose_config` (the tools, benchmarks and tests).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf

from nemo_emmett.data.config import DataConfig
from nemo_emmett.mammoth.modular_salm import ModularSalmT5Config
from nemo_emmett.mammoth.tasks import ModularModelConfig
from nemo_emmett.models.config import BestowGptConfig, ModelConfig, SalmT5Config
from nemo_emmett.oomptimizer.callback import OOMptimizerConfig
from nemo_emmett.parts.monitoring import MonitoringConfig
from nemo_emmett.parts.threads import ThreadsConfig

GROUP = "schema"

FAMILIES: dict[str, tuple[str, type[ModelConfig]]] = {
    "salm_t5": ("nemo_emmett.models.salm_t5.SalmT5", SalmT5Config),
    "bestow_gpt": ("nemo_emmett.models.bestow_gpt.BestowGpt", BestowGptConfig),
    "modular": ("nemo_emmett.mammoth.modular.ModularTranslation", ModularModelConfig),
    "modular_salm_t5": ("nemo_emmett.mammoth.modular_salm.ModularSalmT5", ModularSalmT5Config),
}
"""Schema name -> (model class, its ``config_class``); ``tests/test_configs.py`` checks that they agree."""

TRAINER: dict[str, Any] = {
    "accelerator": "auto",
    "devices": 1,
    "num_nodes": 1,  # SLURM: equal to --nodes (and devices to --ntasks-per-node); Lightning checks both
    "strategy": "auto",  # ddp: training.py turns on DDP's unused-parameter detection (ddp_strategy)
    "max_steps": 1200,
    "max_time": "00:00:13:00",  # a safety net for slower machines (dd:hh:mm:ss): stops, validates, saves
    "val_check_interval": 400,  # steps: the training stream is infinite
    "check_val_every_n_epoch": None,
    "limit_val_batches": 1.0,
    "num_sanity_val_steps": 0,
    "precision": 32,  # bf16-mixed on GPUs that support it
    "gradient_clip_val": 1.0,
    "log_every_n_steps": 10,
    "logger": False,  # exp_manager creates the loggers
    "enable_checkpointing": False,  # exp_manager creates the checkpoint callback
    "use_distributed_sampler": False,  # the data pipeline splits data across ranks itself
}

EXP_MANAGER: dict[str, Any] = {
    "exp_dir": "nemo_experiments",
    "name": "${name}",
    "version": None,
    "use_datetime_version": False,  # one folder per name, so re-running resumes
    "resume_if_exists": True,
    "resume_ignore_no_checkpoint": True,
    "create_tensorboard_logger": True,
    "create_wandb_logger": False,  # W&B beside TensorBoard (docs/monitoring.md): needs wandb_logger_kwargs
    "wandb_logger_kwargs": None,  # Lightning WandbLogger arguments, at least {project: ..., name: ...}
    "create_checkpoint_callback": True,
    "checkpoint_callback_params": {"monitor": "val_loss", "mode": "min", "save_top_k": 1, "save_last": True,
                                   "always_save_nemo": False, "save_nemo_on_train_end": False},
    "seconds_to_sleep": 0,
}


@dataclass
class RunConfig:
    """What every top-level config holds besides ``model`` (added per family by :func:`run_schema`)."""

    name: str = MISSING
    """Experiment name: exp_manager's folder and the sweep folder (``multirun/<name>``)."""
    model_class: str = MISSING
    """The LightningModule to build; set by the schema of its family."""
    seed: int = 1234
    """Model initialisation (the data stream uses ``data.seed``)."""
    shar_root: str = MISSING
    """Root of prepared Shar folders, for ``${shar_root}`` in source paths (``examples/prepare_data.py --out``):
    required where a path names it, never read elsewhere. (A YAML's ``???`` cannot undo a schema default.)"""
    data: DataConfig = field(default_factory=lambda: DataConfig(sampling_rate=II("model.perception.sample_rate")))
    """The data's ``sampling_rate`` is the model's: audio is resampled to the rate its perception takes."""
    oomptimizer: OOMptimizerConfig = field(default_factory=OOMptimizerConfig)
    """Size each bucket's batch to fill memory, measured on the model before fit (``enabled=true``)."""
    threads: ThreadsConfig = field(default_factory=ThreadsConfig)
    """CPU intra-op threads: torch's default (one per core) unless pinned (``threads.threads=N``) or
    measured on the run's own steps with the fastest kept (``threads.mode=auto``: on a loaded machine
    often fewer than one per core)."""
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    """What the run shows: step progress bar with ETA, learning rate, data-stream scalars, the bin plot
    and MGCM's conflict plot (``docs/monitoring.md``)."""
    trainer: dict[str, Any] = field(default_factory=lambda: dict(TRAINER))
    """Lightning ``Trainer`` arguments (free-form; add others with ``+trainer.<key>=``)."""
    exp_manager: dict[str, Any] = field(default_factory=lambda: dict(EXP_MANAGER))
    """NeMo ``exp_manager`` arguments (free-form)."""
    checkpoint_every_n_steps: int | None = None
    """Also save a checkpoint every N training steps, between validations (``<name>--step=<step>.ckpt``
    beside exp_manager's, only the newest kept), so that a killed run loses at most N steps; re-running
    resumes from the newer of it and the ``-last`` one. None: checkpoints at validations only."""


def _nullable_container(hint: Any) -> bool:
    """``X | None`` where X is a dict or a dataclass (``lora: LoraConfig | None``, ``components: dict | None``)."""
    args = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else ()
    return type(None) in args and any(a is dict or get_origin(a) is dict or is_dataclass(a) for a in args)


def composable(cls: type) -> type:
    """``cls`` as a composition schema. OmegaConf 2.3 cannot merge a Hydra override into a null dict or
    dataclass node (``model.lora={r: 8}`` raises AttributeError in ``OmegaConf.update``), so such fields
    become ``Any`` here, at any depth; :func:`parse_model_config` still checks them against ``cls``."""
    hints = get_type_hints(cls)
    changed = []
    for f in fields(cls):
        hint = hints[f.name]
        if _nullable_container(hint):
            changed.append((f.name, Any, field(default=f.default)))
        elif is_dataclass(hint) and (sub := composable(hint)) is not hint:
            changed.append((f.name, sub, field(default_factory=lambda f=f, sub=sub: _recast(_default(f), sub))))
    return make_dataclass(cls.__name__, changed, bases=(cls,)) if changed else cls


def _default(f: Any) -> Any:
    return f.default_factory() if callable(f.default_factory) else f.default


def _recast(obj: Any, cls: type) -> Any:
    """A default instance of a dataclass as ``cls`` (its :func:`composable` subclass), nested fields too."""
    hints = get_type_hints(cls)
    return cls(**{f.name: _recast(getattr(obj, f.name), hints[f.name])
                  if is_dataclass(hints[f.name]) and is_dataclass(getattr(obj, f.name)) else getattr(obj, f.name)
                  for f in fields(cls) if f.init})


def run_schema(family: str) -> DictConfig:
    """The schema of one family: :class:`RunConfig` with its ``model_class`` and its model config."""
    model_class, config_class = FAMILIES[family]
    cls = composable(make_dataclass(f"{config_class.__name__}Run", [
        ("model_class", str, field(default=model_class)),
        ("model", config_class, field(default_factory=config_class)),
    ], bases=(RunConfig,)))
    node = OmegaConf.structured(cls)
    node.model.optim = {}  # the blocks given; parse_model_config merges them into the default (see above)
    OmegaConf.set_struct(node.model.optim, False)
    return node


def register_configs() -> None:
    """Store every family's schema in Hydra's ConfigStore as ``schema/<family>`` (idempotent)."""
    cs = ConfigStore.instance()
    stored = cs.repo.get(GROUP, {})
    for family in FAMILIES:
        if f"{family}.yaml" not in stored:
            cs.store(group=GROUP, name=family, node=run_schema(family), package="_global_")


def compose_config(config_name: str, overrides: Sequence[str] = (), *, config_dir: str | Path,
                   return_hydra_config: bool = False) -> DictConfig:
    """The config ``config_name`` of ``config_dir`` (e.g. ``conf/``) with Hydra ``overrides``, as
    ``examples/train.py`` composes it."""
    register_configs()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
