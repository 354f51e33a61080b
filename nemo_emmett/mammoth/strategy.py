"""``trainer.strategy: component_sync``: Lightning's DDP machinery without the DDP wrapper, each
component's gradient averaged only among the ranks that hold it (MAMMOTH, arXiv 2403.07544).

Ranks hold different parameters (each builds only its tasks' components: ``training.py``), so the
module is never wrapped in ``DistributedDataParallel``; everything else is DDP's: process launch
and cluster environments (torchrun, SLURM), the default process group (NCCL on GPU, gloo on CPU),
``barrier``/``broadcast``/``reduce`` for logging and checkpoint callbacks. The LightningModule
must be a modular model (``ModularTasks``: ``ModularTranslation``, ``ModularSalmT5``) whose
component records cover every parameter. At ``setup``: the ranks exchange their component records,
which come back with their holders (``mammoth/sync.py``'s ``place_components``; the model takes
its own), create one process group per distinct holder set, and copy every shared component from
its lowest holder. Every optimizer step under automatic optimization: the closure
(forward and backward) runs, then :func:`sync_gradients`, then Lightning's hooks and clipping; norm
clipping (``trainer.gradient_clip_val``) uses the *global* norm (each component counted once), so
the replicas scale alike.

**Manual optimization: the module synchronises, never the optimizer step.** A LightningModule that
runs its own backward passes (MGCM) gets the strategy's sync through :meth:`gradient_sync` (the
``GradientSync`` protocol of ``parts/gradient_sync.py``: ``sync_each_task``, ``no_sync``, ``sync``,
``global_norm``, ``clip_by_norm``) and synchronises when its projection needs it (each task's
gradient apart: ``mgcm/sync.py``); ``optimizer_step`` then steps on the gradients as they are, so
nothing is averaged twice.

**Checkpoints.** ``state_dict`` holds every component once (from its lowest holder, gathered to
rank 0), ``optimizer_states`` every rank's optimizer state (``{"component_sync_ranks": [...]}``);
on load each rank takes its own parameters and its own optimizer state. The data stream state
already covers every rank (``EmmettDataModule.state_dict``). Resume with the same placement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import move_data_to_device
from lightning_utilities.core.apply_func import apply_to_collection
from torch import nn

from nemo_emmett.mammoth.component import Component
from nemo_emmett.mammoth.routing import ModularTasks
from nemo_emmett.mammoth.sync import (
    SyncStats,
    broadcast_components,
    clip_by_global_norm,
    global_grad_norm,
    new_groups,
    place_components,
    sync_gradients,
)

log = logging.getLogger(__name__)

NAME = "component_sync"
RANKS_KEY = "component_sync_ranks"


def _to_cpu(obj: Any) -> Any:
    """Every tensor of a (nested) state detached and on the CPU, for gathering and saving."""
    return move_data_to_device(apply_to_collection(obj, torch.Tensor, torch.Tensor.detach), "cpu")


def component_parameters(module: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parameters of each of ``module``'s components; every parameter must be in one."""
    if not isinstance(module, ModularTasks):
        raise TypeError(f"trainer.strategy={NAME} needs a model with named components (a modular model), "
                        f"got {type(module).__name__}")
    out = {name: list(m.parameters()) for name, m in module.component_modules().items()}
    covered = {id(p) for ps in out.values() for p in ps}
    stray = [n for n, p in module.named_parameters() if id(p) not in covered]
    if stray:
        raise RuntimeError(f"parameters outside every component cannot be synchronised by {NAME}: {stray[:5]}")
    return out


class ComponentSyncStrategy(DDPStrategy):
    strategy_name = NAME

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.components: dict[str, Component] = {}
        """Every component of the run, its holders filled, in sorted name order (the same on every rank)."""
        self.groups: dict[tuple[int, ...], Any] = {}
        self.last_stats: SyncStats | None = None
        """What the last step's sync communicated (for benchmarks and logging)."""
        self.checkpoint_hyperparameters: dict[str, Any] | None = None
        """Hyper-parameters to save instead of rank 0's own (``training.py``: the full task table, so
        that a checkpoint rebuilds the whole model)."""

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self, trainer: Any) -> None:
        """DDP's ``setup`` without the wrapper and without syncing every module state from rank 0."""
        assert self.accelerator is not None and self.model is not None
        self.accelerator.setup(trainer)
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        self.setup_components()
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if trainer.state.fn == TrainerFn.FITTING:
            from lightning.fabric.utilities.optimizer import _optimizers_to_device

            _optimizers_to_device(self.optimizers, self.root_device)

    def configure_ddp(self) -> None:  # never wrap: ranks hold different parameters
        pass

    def setup_components(self) -> None:
        module = self.lightning_module
        params = component_parameters(module)
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, [module.components[name] for name in sorted(params)])
        self.components = place_components(gathered)
        module.place_components(self.components)
        self.groups = new_groups(self.components)
        broadcast_components(module.component_modules(), self.components, self.groups, rank=self.global_rank)
        shared = {c.name: list(c.holders) for c in self.components.values() if len(c.holders) > 1}
        log.info("%s: rank %d holds %d component(s); %d shared over %d group(s): %s", NAME, self.global_rank,
                 len(params), len(shared), len(self.groups), shared)

    # ---- the step: the GradientSync protocol (parts/gradient_sync.py) ------------------------------
    sync_each_task = True
    """MGCM must project synchronised per-task gradients: holders differ from one component to the
    next, so only synchronised gradients are the same on every replica."""

    def gradient_sync(self) -> ComponentSyncStrategy:
        """The strategy itself: it implements the ``GradientSync`` protocol (for manual optimization)."""
        return self

    def no_sync(self) -> AbstractContextManager[object]:
        return nullcontext()  # no DDP wrapper: nothing is reduced during a backward pass

    def sync(self, params: Sequence[nn.Parameter] | None = None) -> SyncStats:
        """Average this rank's component gradients with their other holders (collective over the world).
        ``params``: every trainable parameter of this rank (None: the same), since a holder that left
        one out would flatten a different buffer than the others."""
        by_component = component_parameters(self.lightning_module)
        if params is not None:
            given = {id(p) for p in params}
            left_out = sum(p.requires_grad and id(p) not in given for ps in by_component.values() for p in ps)
            if left_out:
                raise ValueError(f"{NAME}: sync() was given {len(given)} parameters but {left_out} trainable "
                                 "component parameter(s) are not among them; pass all of them")
        self.last_stats = sync_gradients(by_component, self.components, self.groups, rank=self.global_rank,
                                         device=self.root_device)
        return self.last_stats

    def global_norm(self, params: Sequence[nn.Parameter] | None = None) -> torch.Tensor:
        """The whole model's gradient norm (each component once), the same on every rank."""
        return global_grad_norm(self._component_parameters(params), self.components, rank=self.global_rank,
                                device=self.root_device)

    def clip_by_norm(self, params: Sequence[nn.Parameter] | None, max_norm: float) -> torch.Tensor:
        """Norm clipping with the whole model's norm, the same on every rank; returns the norm."""
        return clip_by_global_norm(self._component_parameters(params), self.components, max_norm, rank=self.global_rank)

    def _component_parameters(self, params: Sequence[nn.Parameter] | None) -> dict[str, list[nn.Parameter]]:
        by_component = component_parameters(self.lightning_module)
        if params is None:
            return by_component
        wanted = {id(p) for p in params}
        return {c: [p for p in ps if id(p) in wanted] for c, ps in by_component.items()}

    def optimizer_step(self, optimizer: Any, closure: Callable[[], Any], model: Any = None, **kwargs: Any) -> Any:
        def synced() -> Any:
            out = closure()  # forward + backward (automatic), or nothing (manual: backward already done)
            if self.lightning_module.automatic_optimization:  # manual: the module synchronised already
                self.sync()
            self._clip_automatic()
            return out

        return super().optimizer_step(optimizer, synced, model, **kwargs)

    def _clip_automatic(self) -> None:
        """``trainer.gradient_clip_val`` by norm: clip here by the global norm; Lightning's local clip
        that follows then finds every local norm within the limit and leaves the gradients alone. The
        gradients are still scaled under fp16 (unscaling comes after the closure): the limit is scaled too."""
        module = self.lightning_module
        trainer = module.trainer
        val, algorithm = trainer.gradient_clip_val, trainer.gradient_clip_algorithm
        if not module.automatic_optimization or not val or (algorithm is not None and str(algorithm) != "norm"):
            return
        scaler = getattr(self.precision_plugin, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None else 1.0
        self.clip_by_norm(None, float(val) * scale)

    # ---- checkpoints --------------------------------------------------------------------------
    def lightning_module_state_dict(self) -> dict[str, Any]:
        """Every entry once, from the lowest rank that has it, gathered on rank 0 (others: their own)."""
        local = self.lightning_module.state_dict()
        keys: list[Any] = [None] * self.world_size
        dist.all_gather_object(keys, list(local))
        first: dict[str, int] = {}
        for r, ks in enumerate(keys):
            for k in ks:
                first.setdefault(k, r)
        mine = {k: _to_cpu(v) for k, v in local.items() if first[k] == self.global_rank}
        parts = self._gather_to_zero(mine)
        if not self.is_global_zero:
            return local
        return {k: parts[first[k]][k] for k in first}

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        from lightning.pytorch.core.optimizer import LightningOptimizer

        opt = optimizer._optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
        parts = self._gather_to_zero(_to_cpu(opt.state_dict()))
        return {RANKS_KEY: parts if self.is_global_zero else None}

    def _gather_to_zero(self, obj: Any) -> list[Any]:
        out: list[Any] | None = [None] * self.world_size if self.is_global_zero else None
        dist.gather_object(obj, out, dst=0)
        return out if out is not None else []

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        if self.checkpoint_hyperparameters is not None and "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = self.checkpoint_hyperparameters
        super().save_checkpoint(checkpoint, filepath, storage_options)

    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        full = checkpoint["state_dict"]
        module = self.lightning_module
        own = list(module.state_dict())
        missing = [k for k in own if k not in full]
        if missing and strict:
            raise KeyError(f"checkpoint lacks {len(missing)} entries of rank {self.global_rank}'s components, "
                           f"e.g. {missing[:5]}: resume with the same tasks and placement")
        module.load_state_dict({k: full[k] for k in own if k in full}, strict=strict)

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        from lightning.fabric.utilities.optimizer import _optimizer_to_device

        for optimizer, saved in zip(self.optimizers, checkpoint["optimizer_states"]):
            ranks = saved.get(RANKS_KEY) if isinstance(saved, dict) else None
            if ranks is None:
                raise ValueError(f"the checkpoint's optimizer state was not saved by {NAME}")
            if len(ranks) != self.world_size:
                raise ValueError(f"the checkpoint holds optimizer states of {len(ranks)} ranks; this run has "
                                 f"{self.world_size}: resume with the same placement")
            optimizer.load_state_dict(ranks[self.global_rank])
            _optimizer_to_device(optimizer, self.root_device)

    @classmethod
    def register_strategies(cls, strategy_registry: Any) -> None:
        strategy_registry.register(NAME, cls, description="MAMMOTH: gradients averaged among each component's holders")


if NAME not in StrategyRegistry:
    ComponentSyncStrategy.register_strategies(StrategyRegistry)
