"""The training recipe behind ``emmett-train``: config -> Trainer -> sources -> tokenizer -> data and
model (``startup.py``) -> fit."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo_emmett.data.stats import DataStreamStats
from nemo_emmett.mammoth.strategy import ComponentSyncStrategy  # registers trainer.strategy: component_sync
from nemo_emmett.mammoth.sync import rank_task_table
from nemo_emmett.mgcm.config import prepare_trainer_config
from nemo_emmett.oomptimizer.callback import OOMptimizer
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


def train(cfg: DictConfig) -> pl.LightningModule:
    from nemo.utils.exp_manager import exp_manager

    log.info("Config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    apply_threads(threads_config(cfg))
    pl.seed_everything(cfg.seed, workers=False)  # model init; the data stream has its own data.seed
    prepare_trainer_config(cfg)  # MGCM steps the optimizer itself: trainer.gradient_clip_val moves to model.mgcm
    trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), callbacks=build_callbacks(cfg))
    with open_dict(cfg):
        cfg.exp_manager.version = sweep_version(cfg.exp_manager.get("version"), hydra_job_num())
    exp_manager(trainer, cfg.exp_manager)
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
