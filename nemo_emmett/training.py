"""The training recipe behind ``emmett-train``: config -> Trainer -> sources -> tokenizer -> data and
model (``startup.py``) -> fit."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo_emmett.data.stats import DataStreamStats
from nemo_emmett.mammoth.strategy import ComponentSyncStrategy  # registers trainer.strategy: component_sync
from nemo_emmett.mammoth.sync import rank_task_table
from nemo_emmett.mgcm.config import prepare_trainer_config
from nemo_emmett.oomptimizer.callback import OOMptimizer
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


def threads_config(cfg: DictConfig) -> ThreadsConfig:
    block = cfg.get("threads")
    return ThreadsConfig(**OmegaConf.to_container(block, resolve=True)) if block is not None else ThreadsConfig()


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = [DataStreamStats()]
    block = cfg.get("oomptimizer")
    oomptimizer = OOMptimizer(OmegaConf.to_container(block, resolve=True) if block is not None else None)
    if oomptimizer.cfg.enabled:
        callbacks.append(oomptimizer)
    threads = threads_config(cfg)
    if threads.mode == "auto":
        callbacks.append(ThreadTuner(threads))
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


def train(cfg: DictConfig) -> pl.LightningModule:
    from nemo.utils.exp_manager import exp_manager

    log.info("Config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    apply_threads(threads_config(cfg))
    pl.seed_everything(cfg.seed, workers=False)  # model init; the data stream has its own data.seed
    prepare_trainer_config(cfg)  # MGCM steps the optimizer itself: trainer.gradient_clip_val moves to model.mgcm
    trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), callbacks=build_callbacks(cfg))
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
