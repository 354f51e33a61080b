"""MGCM in the training step: per-task backward passes, projection, one synchronised update.

**Per-task losses inside one step** (not per-task accumulation over an accumulation window).
Batches are modality-homogeneous: an audio batch mixes ST and ASR examples, a text batch holds
MT. The batch loss is split by task (:meth:`BatchLoss.task_shares`: each task's examples' NLL over
all the batch's target tokens, plus their weighted CTC; the shares sum to the plain loss), and
the shares are back-propagated apart through one forward graph (``mgcm/backward.py``: the
projection inside the backward pass). Accumulating per task over a window would need one full
gradient buffer per task, which is what MGCM avoids. Consequences: a step without the primary
task (a text batch) or with it alone passes its gradients unchanged, so MT is only compared with ST
in a fused step (``data.fusion: zip``: an audio and a text batch in one step, their losses joined by
``BatchLoss.concat``; MT is then one more auxiliary task); ``accumulate_grad_batches > 1`` is refused.

**Around it.** Lightning's manual optimization (the model sets ``automatic_optimization = False``):
``manual_backward`` (the fp16 grad scaler scales every share alike, so the projection is
unaffected), the backward passes under the gradient sync's ``no_sync`` (DDP's) and then one
synchronisation of the combined gradients (projection uses each rank's local gradients), then
``opt.step()`` in whose ``on_before_optimizer_step`` (gradients already unscaled) a non-finite
gradient skips the step (the scaler skips and lowers its scale; otherwise gradients are dropped,
so the optimizer leaves weights and state alone) and clipping is applied; then ``zero_grad`` and
the LR scheduler.

**The gradient sync** (``parts/gradient_sync.py``) comes from the trainer's strategy through a
protocol, whatever the strategy's class: one process (nothing), DDP (one bucketed all-reduce over
the world), or the strategy's own. Under ``trainer.strategy: component_sync`` (ranks hold
different components) the sync asks for ``sync_each_task``: each task's gradient is synchronised
among each component's holders first and the projection applies to the synchronised gradients
(``mgcm/sync.py``: one sync and one gradient buffer per auxiliary task), so that shared replicas
project identical gradients. The finiteness check and norm clipping use the sync's global norm
(each component counted once), so that every replica skips or scales alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from nemo_emmett.mgcm.backward import projected_backward
from nemo_emmett.mgcm.config import MGCMConfig
from nemo_emmett.mgcm.grouping import DEFAULT_MODULE_TYPES, group_parameters, module_type
from nemo_emmett.mgcm.model import Backward, MGCMModel, ModularModel
from nemo_emmett.mgcm.stats import StatsWindow
from nemo_emmett.parts.gradient_sync import gradient_sync_for

log = logging.getLogger(__name__)


class MGCMStep:
    """The training step of a model with MGCM on (:class:`~nemo_emmett.mgcm.model.MGCMModel`); built in
    the model's ``__init__`` (after freezing: only trainable parameters are grouped)."""

    def __init__(self, cfg: MGCMConfig, named_parameters: Iterable[tuple[str, nn.Parameter]], *,
                 components: dict[str, str] | None = None):
        """``components``: the model's named components (``component`` granularity when ``cfg.components``
        is null)."""
        if cfg.gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(f"mgcm.gradient_clip_algorithm must be 'norm' or 'value', got {cfg.gradient_clip_algorithm!r}")
        if cfg.log_every_n_steps is not None and cfg.log_every_n_steps < 1:
            raise ValueError(f"mgcm.log_every_n_steps must be >= 1 or null, got {cfg.log_every_n_steps}")
        self.cfg = cfg
        names = [n for n, p in named_parameters if p.requires_grad]
        self.groups = group_parameters(names, granularity=cfg.granularity, module_patterns=cfg.module_patterns,
                                       components=cfg.components if cfg.components is not None else components)
        types = cfg.module_types if cfg.module_types is not None else DEFAULT_MODULE_TYPES
        self.window = StatsWindow([module_type(members[0], types) for members in self.groups.values()])
        self.skipped_steps = 0
        self.history: list[tuple[int, dict[str, float]]] = []
        """(step, metrics) of every window logged in this run (``mgcm/conflict_plot.py`` draws them)."""
        log.info("MGCM: primary task %r, %d modules (%s granularity; types: %s)", cfg.primary_task,
                 len(self.groups), cfg.granularity, ", ".join(self.window.type_names))

    def training_step(self, model: MGCMModel, batch: Any) -> torch.Tensor:
        opt = model.optimizers()
        loss = model.batch_loss(batch)
        total = loss.total()
        model.log_training(batch, total.detach(), {k: v.detach() for k, v in loss.logged().items()})
        params = dict(model.named_parameters())
        groups = [[params[n] for n in members] for members in self.groups.values()]
        sync = gradient_sync_for(model.trainer.strategy)
        if sync.sync_each_task:  # project the synchronised per-task gradients
            from nemo_emmett.mgcm.sync import synced_backward

            if not isinstance(model, ModularModel):
                raise TypeError(f"{type(model).__name__}: a gradient sync per task (trainer.strategy: component_sync) "
                                "needs a modular model (component_of, components_reached)")
            stats = synced_backward(model, sync, batch, loss.task_shares(), self.cfg.primary_task,
                                    dict(zip(self.groups, groups)))
        else:
            with sync.no_sync():
                stats = self.backward(model, loss.task_shares(), total, groups)
            sync.sync([p for members in groups for p in members])
        opt.step()  # -> on_before_optimizer_step: finiteness check, clipping
        opt.zero_grad()
        schedulers = model.lr_schedulers()
        for s in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers is not None else []:
            s.step()
        self.window.record(stats)
        self._log(model)
        return total.detach()

    def backward(self, model: Backward, shares: dict[str, torch.Tensor], total: torch.Tensor,
                 groups: list[list[nn.Parameter]]) -> dict[str, torch.Tensor]:
        """Back-propagate the task shares with MGCM (:func:`~nemo_emmett.mgcm.backward.projected_backward`);
        ``.grad`` ends with the combined, not yet synchronised, gradient. Returns (G, 3)
        ``[dot, |g_p|^2, |g_a|^2]`` per module for each auxiliary task."""
        return projected_backward(model, shares, total, groups, self.cfg.primary_task)

    def before_optimizer_step(self, model: MGCMModel, optimizer: torch.optim.Optimizer) -> None:
        """Called from ``on_before_optimizer_step``, where an fp16 grad scaler has unscaled the gradients.
        Every rank calls the sync's collectives here, whether or not it holds a gradient."""
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        sync = gradient_sync_for(model.trainer.strategy)
        total = sync.global_norm(params)  # the whole model's norm, the same on every rank
        if not bool(torch.isfinite(total)):
            self.skipped_steps += 1
            log.warning("MGCM: non-finite gradient (norm %s) at step %d: step skipped (%d so far)",
                        float(total), model.global_step, self.skipped_steps)
            if getattr(model.trainer.precision_plugin, "scaler", None) is None:
                for p in params:  # optimizers leave parameters without gradients (and their state) alone
                    p.grad = None
            return  # a grad scaler found it too: it skips the step and lowers its scale
        if self.cfg.gradient_clip_val and self.cfg.gradient_clip_algorithm == "norm":
            sync.clip_by_norm(params, self.cfg.gradient_clip_val)
        elif self.cfg.gradient_clip_val:  # by value: elementwise, the same on every replica
            model.clip_gradients(optimizer, gradient_clip_val=self.cfg.gradient_clip_val,
                                 gradient_clip_algorithm=self.cfg.gradient_clip_algorithm)

    def _log(self, model: MGCMModel) -> None:
        model.log("mgcm/skipped_steps", float(self.skipped_steps))
        every = self.cfg.log_every_n_steps or max(model.trainer.log_every_n_steps, 1)
        if (model.global_step % every) != 0 or not self.window:  # global_step already counts this step
            return
        metrics = self.window.flush(self.cfg.primary_task)
        self.history.append((model.global_step, metrics))
        for name, value in metrics.items():
            model.log(name, value)
