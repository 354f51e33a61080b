"""Process-group helpers and worker bodies for the multi-process component-sync tests (no pytest here:
the workers import only what they run)."""

from __future__ import annotations

import os
import time
import traceback
import zlib
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


def run_workers(fn, world_size: int, *args, timeout_s: float = 90.0) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` spawned processes; a worker that fails
    or the group that outlives ``timeout_s`` (a hang) fails the caller instead of blocking it."""
    import torch.multiprocessing as mp

    ctx = mp.start_processes(_guarded, args=(fn, world_size, *args), nprocs=world_size, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            raise TimeoutError(f"{world_size} workers still running after {timeout_s:.0f} s: a collective hangs")


def _guarded(rank: int, fn, world_size: int, *args) -> None:
    try:
        fn(rank, world_size, *args)
    except BaseException:
        traceback.print_exc()
        raise


def init_group(rank: int, world_size: int, init_file: str, timeout_s: float = 30.0) -> None:
    """gloo over loopback; a collective nobody answers raises after ``timeout_s`` rather than blocking."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))


# ---- the math test: tiny linear components ---------------------------------------------------------
HELD = {0: ["own.0", "shared", "shared_idle", "shared_sometimes"], 1: ["own.1", "shared", "shared_idle", "shared_sometimes"]}
"""What each rank holds. ``shared_sometimes``: held by both, run only by rank 0's task; ``shared_idle``: run by nobody."""


def make_component(name: str, salt: int = 0) -> nn.Module:
    torch.manual_seed(zlib.crc32(name.encode()) + salt)
    return nn.Linear(3, 3)


def local_loss(rank: int, modules: dict[str, nn.Module]) -> torch.Tensor:
    x = torch.arange(6, dtype=torch.float32).view(2, 3) * (rank + 1) / 10
    loss = modules[f"own.{rank}"](modules["shared"](x)).pow(2).sum()
    if rank == 0:
        loss = loss + modules["shared_sometimes"](x).sum()
    return loss


def sync_step_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    from nemo_emmett.mammoth.sync import (
        broadcast_components,
        holders_from_components,
        new_groups,
        sync_gradients,
    )

    init_group(rank, world_size, init_file)
    # rank 1 starts its shared replicas from other values: the broadcast makes them rank 0's
    modules = {name: make_component(name, salt=rank if name.startswith("shared") else 0) for name in HELD[rank]}
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, sorted(modules))
    holders = holders_from_components(gathered)
    groups = new_groups(holders)
    broadcast_components(modules, holders, groups, rank=rank)
    local_loss(rank, modules).backward()
    params = {name: list(m.parameters()) for name, m in modules.items()}
    stats = sync_gradients(params, holders, groups, rank=rank)
    grads_none = {name: all(p.grad is None for p in ps) for name, ps in params.items()}
    with torch.no_grad():
        for ps in params.values():
            for p in ps:
                if p.grad is not None:
                    p.sub_(0.1 * p.grad)
    torch.save({"state": {n: m.state_dict() for n, m in modules.items()}, "bytes": stats.bytes,
                "used": stats.used, "grads_none": grads_none}, Path(out_dir) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


# ---- end to end: a tiny ModularTranslation through trainer.strategy=component_sync ------------------
def lightning_worker(rank: int, world_size: int, port: int, cfg: dict, out_dir: str, max_steps: int,
                     ckpt_path: str | None, kill_at: int | None = None, val_every: int | None = None) -> None:
    """What ``training.py`` does under ``trainer.strategy: component_sync`` (without exp_manager and
    NeMo): the rank's task table and data, then fit; saves the batches seen and the final weights.
    ``kill_at``: the process kills itself (SIGKILL, as a preempted job) once that step is done;
    ``val_every``: validate every so many steps (else never), and save the logged metrics."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0", GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from nemo_emmett.data.datamodule import EmmettDataModule
    from nemo_emmett.mammoth.modular import ModularTranslation
    from nemo_emmett.mammoth.strategy import ComponentSyncStrategy
    from nemo_emmett.mammoth.sync import rank_task_table

    class Seen(pl.Callback):
        def __init__(self):
            self.ids: list[list[str]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.ids.append(list(batch.ids))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if kill_at is not None and trainer.global_step >= kill_at:
                import signal

                os.kill(os.getpid(), signal.SIGKILL)

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    pl.seed_everything(rank, verbose=False)  # different initial values per rank: setup must broadcast them
    seen = Seen()
    trainer = pl.Trainer(accelerator="cpu", devices=world_size, strategy="component_sync", max_steps=max_steps,
                         limit_val_batches=0 if val_every is None else 1.0, val_check_interval=val_every,
                         check_val_every_n_epoch=None, num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, default_root_dir=out_dir,
                         gradient_clip_val=None if cfg["model"].get("mgcm") else 1.0,  # MGCM clips itself
                         callbacks=[seen, ModelCheckpoint(dirpath=Path(out_dir) / "ckpt", every_n_train_steps=3,
                                                          save_top_k=-1)])
    assert isinstance(trainer.strategy, ComponentSyncStrategy)
    sync_steps = []  # the global step of every gradient sync
    strategy_sync = trainer.strategy.sync

    def counted_sync(*args, **kwargs):
        sync_steps.append(trainer.global_step)
        return strategy_sync(*args, **kwargs)

    trainer.strategy.sync = counted_sync
    modular, rank_directions = rank_task_table(cfg["model"]["modular"], trainer.world_size, trainer.global_rank)
    model = ModularTranslation({**cfg["model"], "modular": modular})
    data = EmmettDataModule(cfg["data"], text=model.text, rank_directions=rank_directions)
    trainer.strategy.checkpoint_hyperparameters = {"cfg": {**model.hparams["cfg"], "modular": cfg["model"]["modular"]}}
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    stats = trainer.strategy.last_stats
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    holders = {name: list(c.holders) for name, c in trainer.strategy.components.items()}
    model_holders = {name: list(c.holders) for name, c in model.components.items()}
    torch.save({"ids": seen.ids, "state": model.state_dict(), "holders": holders, "model_holders": model_holders,
                "bytes": stats.bytes, "used": stats.used, "metrics": metrics, "sync_steps": sync_steps},
               Path(out_dir) / f"rank{rank}.pt")
