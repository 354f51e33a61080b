"""The training recipe behind ``emmett-train``: config -> Trainer -> sources -> tokenizer -> data and
model (``startup.py``) -> fit."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo_emmett.data.bin_plot import BinPlot
from nemo_emmett.data.stats import DataStreamStats
from nemo_emmett.mammoth.strategy import ComponentSyncStrategy  # registers trainer.strategy: component_sync
from nemo_emmett.mammoth.sync import rank_task_table
from nemo_emmett.mgcm.config import prepare_trainer_config
from nemo_emmett.mgcm.conflict_plot import ConflictPlot
from nemo_emmett.oomptimizer.callback import OOMptimizer
from nemo_emmett.parts.monitoring import LoggedLearningRateMonitor, MonitoringConfig
from nemo_emmett.parts.progress_bar import StepProgressBar
from nemo_emmett.parts.run_lock import lock_folder
from nemo_emmett.parts.step_checkpoint import StepCheckpoint, newest_checkpoint
from nemo_emmett.parts.threads import ThreadsConfig, ThreadTuner, apply_threads
from nemo_emmett.startup import build_data_and_model

log = logging.getLogger(__name__)


def sweep_version(version: str | None, job_num: int | None) -> str | None:
    """The experiment version of a job: each job of a Hydra sweep (``-m``) gets its own folder, so
    jobs never share logs or resume each other's checkpoints; a plain run keeps ``version``."""
    if job_num is None or version is not None:
        return version
    return f"sweep_job{job_num}"


def hydra_job_num() -> int | None:
    """The job number inside a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return int(HydraConfig.get().job.num)


DDP_WITH_UNUSED = {"ddp": "ddp_find_unused_parameters_true", "ddp_spawn": "ddp_spawn_find_unused_parameters_true",
                   "ddp_fork": "ddp_fork_find_unused_parameters_true",
                   "ddp_notebook": "ddp_notebook_find_unused_parameters_true"}
DDP_TARGETS = ("lightning.pytorch.strategies.DDPStrategy", "lightning.pytorch.strategies.ddp.DDPStrategy")


def ddp_strategy(strategy: Any) -> Any:
    """``trainer.strategy`` as the Trainer should get it: plain DDP (``ddp``, ``ddp_spawn``, ...) with
    the detection of unused parameters on (Lightning's ``ddp_find_unused_parameters_true`` and its
    kin); anything else unchanged.

    Why: every model family here runs only part of its modules on some batches. A text batch never
    runs the speech perception (nor BESTOW-GPT's speech cross-attention), an audio batch without
    transcripts skips the CTC head, and a modular model runs only its task's components. Under
    DDP's default (``find_unused_parameters=False``) the reducer then waits for gradients that never
    come, and the next step fails ("Expected to have finished reduction in the prior iteration") or
    hangs. With detection on, DDP walks the autograd graph from the loss once per step and marks
    what it did not reach as ready; a parameter that no rank used keeps ``grad=None``, so AdamW
    leaves it and its moments alone, exactly as in one process on the same batches. This is what
    NeMo documents for its collections (``DDPStrategy(find_unused_parameters=True)``).

    Not chosen: adding ``0 * sum(unused parameters)`` to the loss, so that every parameter gets a
    gradient and DDP's default (even ``static_graph``) works. Those zero gradients are not "no
    gradient": AdamW would still move the speech encoder on steps where no rank saw audio (its
    momentum and weight decay), so training would differ from a single-process run, and every model
    would have to know which modules a batch skipped. ``static_graph=True`` is no option either: the
    graph differs between text and audio batches. The cost of detection is one traversal of the
    autograd graph per step; a run that knows all its batches use every parameter can say so with
    ``trainer.strategy=ddp_find_unused_parameters_false`` (left as given, as is a strategy object); a
    ``_target_`` block of Lightning's ``DDPStrategy`` gets ``find_unused_parameters: true`` unless it sets it.
    Manually optimised steps (MGCM) never use DDP's reducer: they synchronise themselves
    (``parts/gradient_sync.py``), with the same rule for parameters no rank used."""
    if isinstance(strategy, str) and strategy in DDP_WITH_UNUSED:
        return DDP_WITH_UNUSED[strategy]
    if isinstance(strategy, Mapping) and strategy.get("_target_") in DDP_TARGETS:
        return {"find_unused_parameters": True, **strategy}
    return strategy


def trainer_kwargs(trainer_cfg: DictConfig | dict[str, Any], callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """The Trainer's keyword arguments from ``cfg.trainer``, through NeMo's ``resolve_trainer_cfg``: a
    ``strategy`` and ``callbacks`` given as ``_target_`` blocks become objects, and ``precision: bf16-true``
    (or ``fp16-true``) NeMo's plugin that keeps audio in fp32::

        trainer:
          strategy: {_target_: lightning.pytorch.strategies.DDPStrategy, gradient_as_bucket_view: true}
          callbacks: [{_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val_loss, patience: 3}]

    The strategy (a name or a block) goes through :func:`ddp_strategy` first. ``callbacks`` (the recipe's own,
    :func:`build_callbacks`) come first and the YAML's after them, so the YAML adds and never replaces.
    NeMo instantiates only the targets of its allow-list (Lightning's callbacks, strategies and loggers,
    NeMo's classes): others are an error naming them."""
    from nemo.core.classes.common import UnsafeTargetError
    from nemo.utils.trainer_utils import resolve_trainer_cfg

    given = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    blocks = given.get("callbacks")
    if blocks is not None and not (isinstance(blocks, list) and all(isinstance(b, dict) and "_target_" in b
                                                                   for b in blocks)):
        raise ValueError("trainer.callbacks must be a list of _target_ blocks, e.g. [{_target_: "
                         f"lightning.pytorch.callbacks.EarlyStopping, monitor: val_loss}}]; got {blocks}")
    if "strategy" in given:
        given["strategy"] = ddp_strategy(given["strategy"])
    try:
        kwargs = resolve_trainer_cfg(OmegaConf.create(given))
    except UnsafeTargetError as e:
        raise ValueError(f"trainer.strategy or trainer.callbacks: {e}") from e
    kwargs["callbacks"] = [*callbacks, *(kwargs.get("callbacks") or [])]
    return kwargs


def threads_config(cfg: DictConfig) -> ThreadsConfig:
    block = cfg.get("threads")
    return ThreadsConfig(**OmegaConf.to_container(block, resolve=True)) if block is not None else ThreadsConfig()


def monitoring_config(cfg: DictConfig) -> MonitoringConfig:
    block = cfg.get("monitoring")
    return MonitoringConfig(**OmegaConf.to_container(block, resolve=True)) if block is not None else MonitoringConfig()


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    shown = monitoring_config(cfg)
    callbacks: list[pl.Callback] = [DataStreamStats(shown.data_stats_every_n_steps)]
    block = cfg.get("oomptimizer")
    oomptimizer = OOMptimizer(OmegaConf.to_container(block, resolve=True) if block is not None else None)
    if oomptimizer.cfg.enabled:
        callbacks.append(oomptimizer)
    threads = threads_config(cfg)
    if threads.mode == "auto":
        callbacks.append(ThreadTuner(threads))
    if shown.progress_bar and (cfg.get("trainer") or {}).get("enable_progress_bar", True):
        callbacks.append(StepProgressBar(refresh_rate=shown.progress_refresh_steps))
    if shown.learning_rate:
        callbacks.append(LoggedLearningRateMonitor())
    if shown.bin_plot:  # after the OOMptimizer: its on_fit_start sizes the batches the plot shows
        callbacks.append(BinPlot())
    if shown.conflict_plot:
        callbacks.append(ConflictPlot(shown.conflict_plot_every_n_steps))
    return callbacks


def checkpoint_dir(trainer: pl.Trainer, em: DictConfig) -> Path:
    """Where exp_manager will write (and resume) this run's checkpoints, computed before it runs."""
    from nemo.utils.exp_manager import get_log_dir

    dirpath = (em.get("checkpoint_callback_params") or {}).get("dirpath")
    if dirpath:
        return Path(dirpath)
    log_dir, *_ = get_log_dir(trainer=trainer, exp_dir=em.get("exp_dir"), name=em.get("name"),
                              version=em.get("version"), explicit_log_dir=em.get("explicit_log_dir"),
                              use_datetime_version=em.get("use_datetime_version", True),
                              resume_if_exists=em.get("resume_if_exists", False))
    return Path(log_dir) / "checkpoints"


def lock_experiment(trainer: pl.Trainer, ckpt_dir: Path) -> None:
    """Rank 0 holds the lock of the checkpoint folder until it ends (a SIGKILL releases it too): a
    second run of the same experiment would overwrite this one's checkpoints, so it stops at once.
    (Inside the checkpoint folder: exp_manager moves the files of the run folder itself to ``run_N``.)"""
    if trainer.global_rank == 0:
        lock_folder(ckpt_dir, hint="Wait for it to finish (re-running then resumes it), or start a separate run "
                                   "with another exp_manager.version=... or name=...")


# What exp_manager and Lightning put into os.environ for the processes of ONE run (the version folder its
# DDP ranks share, the global seed): restored when the run ends, so that a second run in the same process
# (a recipe's next stage, an in-process sweep) or a training subprocess it starts is not pinned to them.
RUN_ENVIRON = ("NEMO_EXPM_VERSION", "PL_GLOBAL_SEED", "PL_SEED_WORKERS")


def train(cfg: DictConfig) -> pl.LightningModule:
    saved = {key: os.environ.get(key) for key in RUN_ENVIRON}
    try:
        return train_once(cfg)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train_once(cfg: DictConfig) -> pl.LightningModule:
    from nemo.utils.exp_manager import exp_manager

    log.info("Config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    apply_threads(threads_config(cfg))
    pl.seed_everything(cfg.seed, workers=False)  # model init; the data stream has its own data.seed
    prepare_trainer_config(cfg)  # MGCM steps the optimizer itself: trainer.gradient_clip_val moves to model.mgcm
    trainer = pl.Trainer(**trainer_kwargs(cfg.trainer, build_callbacks(cfg)))
    with open_dict(cfg):
        cfg.exp_manager.version = sweep_version(cfg.exp_manager.get("version"), hydra_job_num())
    ckpt_dir = checkpoint_dir(trainer, cfg.exp_manager)
    lock_experiment(trainer, ckpt_dir)
    exp_manager(trainer, cfg.exp_manager)
    if cfg.checkpoint_every_n_steps is not None:
        trainer.callbacks.append(StepCheckpoint(ckpt_dir, name=cfg.name, every_n_steps=cfg.checkpoint_every_n_steps))
    if cfg.exp_manager.get("resume_if_exists") and not cfg.exp_manager.get("resume_from_checkpoint"):
        newest = newest_checkpoint(ckpt_dir)  # exp_manager knows only its -last checkpoint
        if newest is not None and str(newest) != str(trainer.ckpt_path):
            log.info("Resuming from the newest checkpoint %s (exp_manager chose %s)", newest, trainer.ckpt_path)
            trainer.ckpt_path = str(newest)
    full_modular, rank_directions = None, None
    if isinstance(trainer.strategy, ComponentSyncStrategy):  # each rank builds and reads only its tasks
        full_modular = OmegaConf.to_container(cfg.model.modular, resolve=True)
        mine, rank_directions = rank_task_table(full_modular, trainer.world_size, trainer.global_rank)
        cfg.model.modular.merge_with(mine)  # a typed node: merged into (its lists replaced), not assigned a dict
    data, model = build_data_and_model(cfg, rank_directions=rank_directions)
    if full_modular is not None:  # checkpoints rebuild the whole model
        trainer.strategy.checkpoint_hyperparameters = {"cfg": {**model.hparams["cfg"], "modular": full_modular}}
    trainer.fit(model, datamodule=data)
    return model
