"""MGCM in the training step: per-task backward passes, projection inside the backward, one update.

**Per-task losses inside one step** (not per-task accumulation over an accumulation window).
Batches are modality-homogeneous: an audio batch mixes ST and ASR examples, a text batch holds
MT. The batch loss is split by task (:meth:`BatchLoss.task_shares`: each task's examples' NLL over
all the batch's target tokens, plus their weighted CTC; the shares sum to the plain loss), and
the shares are back-propagated apart through one forward graph. Accumulating per task over a
window would need one full gradient buffer per task, which is what MGCM avoids. Consequences: a
step without the primary task (a text batch) or with it alone passes its gradients unchanged, so
MT is only ever compared with ST when a batch holds both; ``accumulate_grad_batches > 1`` is
refused.

**Memory.** One auxiliary task in the step (ST + ASR, the common case): the auxiliary share is
back-propagated first (the graph is kept), so ``.grad`` holds ``g_a``; then the primary share,
with per-parameter hooks that receive ``g_p`` before it is accumulated: they add the module's
fp32 dot and norm, keep a reference to ``g_p``, and once every parameter of the module has
accumulated (``.grad = g_a + g_p``) subtract ``c g_p`` in place where the module conflicts. Extra
memory: the primary gradient of the modules in progress (one module, transient). With several
auxiliary tasks the primary share goes first and a copy of ``g_p`` is kept to project every
auxiliary task against: one gradient-sized buffer. Both paths keep the forward graph for the
second backward pass (the activations stay alive until it ends), as any per-task method does.

**Around it.** Lightning's manual optimization (the model sets ``automatic_optimization = False``):
``manual_backward`` (the fp16 grad scaler scales every share alike, so the projection is
unaffected), the backward passes under DDP's ``no_sync`` and then one bucketed all-reduce of the
combined gradients (projection uses each rank's local gradients), then ``opt.step()`` in whose
``on_before_optimizer_step`` (gradients already unscaled) a non-finite gradient skips the step
(the scaler skips and lowers its scale; otherwise gradients are dropped, so the optimizer leaves
weights and state alone) and clipping is applied; then ``zero_grad`` and the LR scheduler.

**Under ``trainer.strategy: component_sync``** (ranks hold different components): each task's
gradient is synchronised among each component's holders first and the projection applies to the
synchronised gradients (``parts/mgcm_sync.py``: one sync and one gradient buffer per auxiliary
task), so that shared replicas project identical gradients. The finiteness check and norm clipping
use the strategy's global norm (each component counted once), so that every replica skips or
scales alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.mgcm.projection import (
    DEFAULT_MODULE_TYPES,
    PairStats,
    dot_fp32,
    group_parameters,
    module_type,
)

if TYPE_CHECKING:
    from nemo_emmett.models.base import TranslationModel
    from nemo_emmett.models.config import MGCMConfig

log = logging.getLogger(__name__)

STAT_FIELDS = ("counted", "conflicts", "cos_sum", "removed_sq", "aux_sq")
"""Per module type and step: modules with both gradients nonzero, those in conflict, the sum of
their cosines, the squared norm removed, the squared norm of the auxiliary gradient."""


class BackwardProjector:
    """Hooks for one backward pass that project an auxiliary gradient off the primary one, module
    by module, as gradients arrive.

    ``primary_incoming=True``: ``.grad`` holds the auxiliary gradient and the pass brings the
    primary one (kept by reference until its module is complete). ``False``: ``.grad`` holds the
    primary gradient (plus auxiliary ones already projected), ``reference`` a copy of the primary
    gradient, and the pass brings an auxiliary one. Either way, once a module is complete,
    ``.grad -= c g_p`` where ``c = g_p . g_a / |g_p|^2 < 0``."""

    def __init__(self, groups: Sequence[Sequence[nn.Parameter]], *, primary_incoming: bool,
                 reference: dict[nn.Parameter, torch.Tensor] | None = None,
                 reference_sq: torch.Tensor | None = None):
        self.groups = groups
        self.primary_incoming = primary_incoming
        self.reference = reference if reference is not None else {}
        device = next(p.device for g in groups for p in g)
        self.reference_sq = reference_sq if reference_sq is not None else group_sq_norms(groups, device)  # (G,)
        G = len(groups)
        self.dot: list[torch.Tensor | None] = [None] * G
        self.incoming_sq: list[torch.Tensor | None] = [None] * G
        self.arrived = [0] * G
        self.pending: list[list[tuple[nn.Parameter, torch.Tensor]]] = [[] for _ in range(G)]
        self.done = [False] * G
        self.handles = []
        for gi, params in enumerate(groups):
            for p in params:
                self.handles.append(p.register_hook(self._pre_hook(gi, p)))
                self.handles.append(p.register_post_accumulate_grad_hook(self._post_hook(gi)))

    def _pre_hook(self, gi: int, p: nn.Parameter):
        def hook(grad: torch.Tensor) -> None:
            other = p.grad if self.primary_incoming else self.reference.get(p)
            if (d := dot_fp32(grad, other)) is not None:
                self.dot[gi] = d if self.dot[gi] is None else self.dot[gi] + d
            sq = dot_fp32(grad, grad)
            self.incoming_sq[gi] = sq if self.incoming_sq[gi] is None else self.incoming_sq[gi] + sq
            if self.primary_incoming:
                self.pending[gi].append((p, grad))  # g_p until its module is complete
        return hook

    def _post_hook(self, gi: int):
        def hook(_: nn.Parameter) -> None:
            self.arrived[gi] += 1
            if self.arrived[gi] == len(self.groups[gi]):
                self._finish(gi)
        return hook

    def _finish(self, gi: int) -> None:
        stats = self._stats(gi)
        neg_c = -stats.coefficient  # 0-d fp32; 0 outside conflicts (no host sync)
        if self.primary_incoming:
            for p, g_p in self.pending[gi]:
                p.grad.addcmul_(g_p, neg_c)  # .grad = g_a + g_p - c g_p
        else:
            for p in self.groups[gi]:
                if p in self.reference:
                    p.grad.addcmul_(self.reference[p], neg_c)
        self.pending[gi] = []
        self.done[gi] = True

    def _stats(self, gi: int) -> PairStats:
        zero = self.reference_sq.new_zeros(())
        dot = self.dot[gi] if self.dot[gi] is not None else zero
        incoming = self.incoming_sq[gi] if self.incoming_sq[gi] is not None else zero
        ref = self.reference_sq[gi]
        return PairStats(dot, incoming, ref) if self.primary_incoming else PairStats(dot, ref, incoming)

    def close(self) -> torch.Tensor:
        """Remove the hooks, finish modules that got part of their gradients, and return (G, 3) fp32
        ``[dot, |g_p|^2, |g_a|^2]`` per module (zeros where a gradient is missing)."""
        for h in self.handles:
            h.remove()
        self.handles = []
        for gi in range(len(self.groups)):
            if not self.done[gi] and self.arrived[gi] > 0:
                self._finish(gi)
        rows = []
        for gi in range(len(self.groups)):
            s = self._stats(gi)
            rows.append(torch.stack([s.dot, s.primary_sq, s.aux_sq]))
        return torch.stack(rows)  # (G, 3)


def group_sq_norms(groups: Sequence[Sequence[nn.Parameter]], device: torch.device,
                   grads: dict[nn.Parameter, torch.Tensor] | None = None) -> torch.Tensor:
    """(G,) fp32 squared norm of each group's gradient (``.grad``, or ``grads``)."""
    out = torch.zeros(len(groups), dtype=torch.float32, device=device)
    for gi, params in enumerate(groups):
        for p in params:
            g = p.grad if grads is None else grads.get(p)
            if g is not None:
                out[gi] += dot_fp32(g, g)
    return out


def all_reduce_gradients(params: Sequence[nn.Parameter], bucket_bytes: int = 25 * 2**20) -> None:
    """Average ``.grad`` over the ranks of the default process group, one all-reduce per bucket of
    about ``bucket_bytes`` (flattened), as DDP does once per step. A missing gradient counts as
    zeros, so that every rank holds the same buckets and takes the same step."""
    import torch.distributed as dist

    world = dist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buckets: dict[tuple, list[list[torch.Tensor]]] = {}
    for p in params:
        key = (p.grad.dtype, p.grad.device)
        lists = buckets.setdefault(key, [[]])
        if lists[-1] and sum(g.numel() for g in lists[-1]) * p.grad.element_size() >= bucket_bytes:
            lists.append([])
        lists[-1].append(p.grad)
    for lists in buckets.values():
        for grads in lists:
            flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numel,)
            dist.all_reduce(flat)
            flat.div_(world)
            for g, chunk in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(chunk.view_as(g))


class MGCMStep:
    """The training step of a :class:`TranslationModel` with MGCM on; built in the model's ``__init__``
    (after freezing: only trainable parameters are grouped)."""

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
        group_types = [module_type(members[0], types) for members in self.groups.values()]
        self.type_names = list(dict.fromkeys(group_types))
        self.group_type_index = torch.tensor([self.type_names.index(t) for t in group_types])  # (G,)
        self.skipped_steps = 0
        self._window: dict[str, torch.Tensor] = {}  # aux task -> (num types, len(STAT_FIELDS)) sums
        log.info("MGCM: primary task %r, %d modules (%s granularity; types: %s)", cfg.primary_task,
                 len(self.groups), cfg.granularity, ", ".join(self.type_names))

    # ---- the step ---------------------------------------------------------------------------
    def training_step(self, model: TranslationModel, batch: TranslationBatch) -> torch.Tensor:
        opt = model.optimizers()
        loss = model.batch_loss(batch)
        total = loss.total()
        model.log_training(batch, total.detach(), {k: v.detach() for k, v in loss.logged().items()})
        params = dict(model.named_parameters())
        groups = [[params[n] for n in members] for members in self.groups.values()]
        sync = _component_sync(model)
        if sync is not None:  # project the synchronised per-task gradients (parts/mgcm_sync.py)
            from nemo_emmett.mgcm.sync import synced_backward

            stats = synced_backward(model, sync, batch, loss.task_shares(), self.cfg.primary_task,
                                    dict(zip(self.groups, groups)))
            sync.skip_next_sync = True  # opt.step() would average the same gradients again
        else:
            with self._no_sync(model):
                stats = self.backward(model, loss.task_shares(), total, groups)
            if _world_size() > 1:
                all_reduce_gradients([p for members in groups for p in members])
        opt.step()  # -> on_before_optimizer_step: finiteness check, clipping
        opt.zero_grad()
        schedulers = model.lr_schedulers()
        for s in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers is not None else []:
            s.step()
        self._record(stats)
        self._log(model)
        return total.detach()

    def backward(self, model: TranslationModel, shares: dict[str, torch.Tensor], total: torch.Tensor,
                 groups: list[list[nn.Parameter]]) -> dict[str, torch.Tensor]:
        """Back-propagate the task shares with MGCM; ``.grad`` ends with the combined gradient.
        Returns (G, 3) ``[dot, |g_p|^2, |g_a|^2]`` per module for each auxiliary task."""
        shares = {t: s for t, s in shares.items() if s.requires_grad}
        primary = shares.pop(self.cfg.primary_task, None)
        if primary is None or not shares:  # nothing to project against, or nothing to project
            model.manual_backward(total)
            return {}
        aux = list(shares.items())
        if len(aux) == 1:
            task, share = aux[0]
            model.manual_backward(share, retain_graph=True)  # .grad = g_a
            projector = BackwardProjector(groups, primary_incoming=True)
            try:
                model.manual_backward(primary)  # hooks: .grad = g_a + g_p - c g_p per conflicting module
            finally:
                out = projector.close()
            return {task: out}
        model.manual_backward(primary, retain_graph=True)  # .grad = g_p
        reference = {p: p.grad.detach().clone() for g in groups for p in g if p.grad is not None}  # one buffer
        reference_sq = group_sq_norms(groups, next(iter(reference.values())).device, reference)
        out = {}
        for i, (task, share) in enumerate(aux):
            projector = BackwardProjector(groups, primary_incoming=False, reference=reference,
                                          reference_sq=reference_sq)
            try:
                model.manual_backward(share, retain_graph=i < len(aux) - 1)
            finally:
                out[task] = projector.close()
        return out

    @staticmethod
    def _no_sync(model: TranslationModel):
        """DDP must not reduce per backward pass: the combined gradient is reduced once, after."""
        from torch.nn.parallel import DistributedDataParallel

        wrapper = getattr(model.trainer.strategy, "model", None)
        return wrapper.no_sync() if isinstance(wrapper, DistributedDataParallel) else nullcontext()

    def before_optimizer_step(self, model: TranslationModel, optimizer: torch.optim.Optimizer) -> None:
        """Called from ``on_before_optimizer_step``, where an fp16 grad scaler has unscaled the gradients."""
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        sync = _component_sync(model)
        if sync is not None:  # the whole model's norm, the same on every rank
            total = sync.global_norm()
        else:
            norms = torch._foreach_norm([p.grad for p in params])  # fp32 accumulation per tensor
            total = torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
        if not bool(torch.isfinite(total)):
            self.skipped_steps += 1
            log.warning("MGCM: non-finite gradient (norm %s) at step %d: step skipped (%d so far)",
                        float(total), model.global_step, self.skipped_steps)
            if getattr(model.trainer.precision_plugin, "scaler", None) is None:
                for p in params:  # optimizers leave parameters without gradients (and their state) alone
                    p.grad = None
            return  # a grad scaler found it too: it skips the step and lowers its scale
        if self.cfg.gradient_clip_val and sync is not None and self.cfg.gradient_clip_algorithm == "norm":
            sync.clip_by_global_norm(self.cfg.gradient_clip_val)
        elif self.cfg.gradient_clip_val:
            model.clip_gradients(optimizer, gradient_clip_val=self.cfg.gradient_clip_val,
                                 gradient_clip_algorithm=self.cfg.gradient_clip_algorithm)

    # ---- statistics ----------------------------------------------------------------------------
    def _record(self, stats: dict[str, torch.Tensor]) -> None:
        for task, s in stats.items():  # s: (G, 3) [dot, |g_p|^2, |g_a|^2]
            dot, pp, aa = s.unbind(1)
            counted = (pp > 0) & (aa > 0)
            cos = torch.where(counted, dot / (pp * aa).sqrt().clamp_min(torch.finfo(torch.float32).tiny), 0.0)
            conflict = counted & (dot < 0)
            removed = torch.where(conflict, dot * dot / pp.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
            rows = torch.stack([counted.float(), conflict.float(), cos, removed, aa], dim=1)  # (G, 5)
            idx = self.group_type_index.to(rows.device)
            window = self._window.setdefault(task, rows.new_zeros(len(self.type_names), len(STAT_FIELDS)))
            window.index_add_(0, idx, rows)  # (types, 5)

    def _log(self, model: TranslationModel) -> None:
        model.log("mgcm/skipped_steps", float(self.skipped_steps))
        every = self.cfg.log_every_n_steps or max(model.trainer.log_every_n_steps, 1)
        if (model.global_step % every) != 0 or not self._window:  # global_step already counts this step
            return
        primary = self.cfg.primary_task
        for task, window in self._window.items():
            w = window.tolist()
            for values, suffix in [([sum(col) for col in zip(*w)], ""), *((row, f"/{t}") for t, row in zip(self.type_names, w))]:
                for name, value in summarize(values).items():
                    if value is not None:
                        model.log(f"mgcm/{primary}-{task}/{name}{suffix}", value)
        self._window = {}


def summarize(sums: Sequence[float]) -> dict[str, float | None]:
    """Window statistics from summed ``STAT_FIELDS``: the share of modules (with both gradients
    nonzero) in conflict, their mean cosine, and the share of the auxiliary gradient's norm that
    the projection removed. None where undefined."""
    counted, conflicts, cos_sum, removed_sq, aux_sq = sums
    return {
        "conflict_share": conflicts / counted if counted else None,
        "mean_cos": cos_sum / counted if counted else None,
        "norm_removed": (removed_sq / aux_sq) ** 0.5 if aux_sq > 0 else None,
    }


def _component_sync(model: TranslationModel) -> Any:
    """The trainer's ComponentSyncStrategy, or None."""
    from nemo_emmett.mammoth.strategy import ComponentSyncStrategy

    strategy = model.trainer.strategy
    return strategy if isinstance(strategy, ComponentSyncStrategy) else None


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def prepare_trainer_config(cfg: Any) -> None:
    """With ``model.mgcm.enabled`` (manual optimization), move ``trainer.gradient_clip_val`` and
    ``gradient_clip_algorithm`` into ``model.mgcm`` (Lightning refuses them with manual
    optimization) and refuse gradient accumulation. ``cfg``: the full Hydra config, edited in place."""
    from omegaconf import open_dict

    mgcm = cfg.model.get("mgcm") or {}
    if not mgcm.get("enabled", False):
        return
    accumulate = cfg.trainer.get("accumulate_grad_batches", 1)
    if accumulate not in (None, 1):
        raise ValueError(f"trainer.accumulate_grad_batches={accumulate} with model.mgcm.enabled=true: MGCM projects "
                         "per-task gradients within one step (manual optimization); set it to 1")
    with open_dict(cfg):
        for key in ("gradient_clip_val", "gradient_clip_algorithm"):
            value = cfg.trainer.pop(key, None)
            if value is None:
                continue
            cfg.model.setdefault("mgcm", {})
            if cfg.model.mgcm.get(key) is not None and cfg.model.mgcm[key] != value:
                raise ValueError(f"trainer.{key}={value} and model.mgcm.{key}={cfg.model.mgcm[key]} disagree; set one")
            cfg.model.mgcm[key] = value
