"""Optimizer and LR scheduler from ``_target_`` blocks, for Lightning's ``configure_optimizers``.

One helper builds both, so every model takes the same YAML::

    optim:
      optimizer: {_target_: torch.optim.AdamW, lr: 1e-3, betas: [0.9, 0.98], weight_decay: 0.01}
      lr_scheduler: {_target_: nemo_emmett.parts.optim.warmup_inverse_sqrt, warmup_steps: 100}
      no_decay: ['(^|\\.)bias$', '(?i)norm']   # optional; regexes (re.search) on parameter names

Both blocks are instantiated with ``_partial_`` because parameters and the optimizer only exist
at run time (and Hydra would try to wrap tensors in OmegaConf if passed as kwargs).
The schedulers step per optimizer step, never per epoch: runs are step-based.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

DEFAULT_NO_DECAY = (r"(^|\.)bias$", r"(?i)norm", r"(^|\.)ln_")
"""Biases and normalisation weights: decaying them pulls scales towards 0 and only hurts."""

NamedParams = Iterable[tuple[str, nn.Parameter]]


def _named_trainable(model_or_params: nn.Module | NamedParams | Iterable[nn.Parameter]) -> list:
    """(name, param) pairs with requires_grad; unnamed params get names that no pattern matches."""
    if isinstance(model_or_params, nn.Module):
        pairs = list(model_or_params.named_parameters())
    else:
        pairs = [p if isinstance(p, tuple) else (f"<unnamed {i}>", p) for i, p in enumerate(model_or_params)]
    return [(n, p) for n, p in pairs if p.requires_grad]


def param_groups(named: list[tuple[str, nn.Parameter]], no_decay: Iterable[str]) -> list[dict]:
    """Split into a decayed group and a ``weight_decay=0`` group; empty groups are left out."""
    regexes = [re.compile(p) for p in no_decay]
    decay, keep = [], []
    for name, p in named:
        (keep if any(r.search(name) for r in regexes) else decay).append(p)
    groups = [{"params": decay}] if decay else []
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    return groups


def build_optimizer_and_scheduler(
    model_or_params: nn.Module | NamedParams | Iterable[nn.Parameter], optim_cfg: dict | DictConfig
) -> dict:
    """Return ``{"optimizer": ..., ["lr_scheduler": {"scheduler": ..., "interval": "step"}]}``.

    Only parameters with ``requires_grad`` are optimised, so freezing must happen before this
    call. Plain (unnamed) parameters all go to the decayed group.
    """
    cfg = optim_cfg if isinstance(optim_cfg, DictConfig) else OmegaConf.create(optim_cfg)
    opt_cfg = cfg.get("optimizer")
    if opt_cfg is None or "_target_" not in opt_cfg:
        raise ValueError("optim.optimizer needs a '_target_' (e.g. torch.optim.AdamW); got "
                         f"{None if opt_cfg is None else OmegaConf.to_container(opt_cfg)}")
    named = _named_trainable(model_or_params)
    if not named:
        raise ValueError("No trainable parameters (all have requires_grad=False): check the freeze patterns")
    no_decay = cfg.no_decay if "no_decay" in cfg else DEFAULT_NO_DECAY
    optimizer = hydra.utils.instantiate(opt_cfg, _partial_=True, _convert_="all")(
        param_groups(named, no_decay)
    )
    out: dict = {"optimizer": optimizer}
    sched_cfg = cfg.get("lr_scheduler")
    if sched_cfg is not None:
        if "_target_" not in sched_cfg:
            raise ValueError("optim.lr_scheduler needs a '_target_' (e.g. "
                             "nemo_emmett.parts.optim.warmup_inverse_sqrt), or null for no scheduler")
        scheduler = hydra.utils.instantiate(sched_cfg, _partial_=True, _convert_="all")(optimizer)
        out["lr_scheduler"] = {"scheduler": scheduler, "interval": "step"}
    return out


def warmup_inverse_sqrt(optimizer: torch.optim.Optimizer, warmup_steps: int) -> LambdaLR:
    """Linear warmup to the peak LR at update ``warmup_steps``, then ``sqrt(warmup / update)``.

    ``update = step + 1`` counts the update about to be made, so the first one is not wasted at
    LR 0: factor ``update / warmup`` below the peak, ``sqrt(warmup / update)`` after; both are 1 at
    ``update == warmup``.
    """
    if warmup_steps < 1:
        raise ValueError(f"warmup_inverse_sqrt needs warmup_steps >= 1, got {warmup_steps}")

    def factor(step: int) -> float:
        update = step + 1
        return update / warmup_steps if update < warmup_steps else math.sqrt(warmup_steps / update)

    return LambdaLR(optimizer, factor)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warmup (``(step + 1) / warmup``), then cosine from 1 at ``warmup_steps`` down to
    ``min_lr_ratio`` at ``max_steps``, flat after; a floor keeps late steps useful."""
    if not 0 <= warmup_steps < max_steps:
        raise ValueError(f"warmup_cosine needs 0 <= warmup_steps < max_steps, got {warmup_steps}, {max_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / (max_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
