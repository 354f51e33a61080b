"""Optimizer and LR scheduler from ``_target_`` blocks, for Lightning's ``configure_optimizers``.

One helper builds both, so every model takes the same YAML::

    optim:
      optimizer: {_target_: torch.optim.AdamW, lr: 1e-3, betas: [0.9, 0.98], weight_decay: 0.01}
      lr_scheduler: {_target_: nemo.core.optim.lr_scheduler.InverseSquareRootAnnealing, warmup_steps: 100}
      # or any scheduler of NeMo's registry by name: {name: CosineAnnealing, warmup_steps: 100, min_lr: 1e-5}
      no_decay: ['(^|\\.)bias$', '(?i)norm']   # optional; regexes (re.search) on parameter names

The optimizer is instantiated with ``_partial_`` because parameters only exist at run time (and Hydra
would try to wrap tensors in OmegaConf if passed as kwargs). The schedulers are NeMo's
(``nemo.core.optim.lr_scheduler``) and step per optimizer step, never per epoch: runs are step-based.
A scheduler that takes ``max_steps`` gets the trainer's when its block names none (as NeMo's
``prepare_lr_scheduler`` does); NeMo's schedulers drop to ``min_lr`` after ``max_steps``, and a resumed
run keeps the ``max_steps`` its checkpoint was written with (it is part of the scheduler's state).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

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
    model_or_params: nn.Module | NamedParams | Iterable[nn.Parameter], optim_cfg: dict | DictConfig,
    *, max_steps: int | None = None,
) -> dict:
    """Return ``{"optimizer": ..., ["lr_scheduler": {"scheduler": ..., "interval": "step"}]}``.

    Only parameters with ``requires_grad`` are optimised, so freezing must happen before this
    call. Plain (unnamed) parameters all go to the decayed group. ``max_steps``: the trainer's, for a
    scheduler block that needs it and names none (None or -1: no trainer, or no step limit).
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
        block = OmegaConf.to_container(sched_cfg, resolve=True)
        out["lr_scheduler"] = {"scheduler": build_scheduler(optimizer, block, max_steps=max_steps), "interval": "step"}
    return out


def scheduler_target(block: dict[str, Any]) -> str:
    """The class (or factory) an ``optim.lr_scheduler`` block names: its ``_target_``, or the class NeMo's
    registry (``AVAILABLE_SCHEDULERS``, what NeMo's ``get_scheduler`` reads) holds under its ``name``."""
    from nemo.core.optim.lr_scheduler import AVAILABLE_SCHEDULERS

    if ("_target_" in block) == ("name" in block):
        raise ValueError("optim.lr_scheduler needs a '_target_' (e.g. nemo.core.optim.lr_scheduler.CosineAnnealing) "
                         f"or a 'name' of NeMo's registry ({', '.join(AVAILABLE_SCHEDULERS)}), not "
                         f"{'both' if '_target_' in block else 'neither'}, or null for no scheduler; got {block}")
    if "_target_" in block:
        return block["_target_"]
    cls = AVAILABLE_SCHEDULERS.get(block["name"])
    if cls is None:
        raise ValueError(f"optim.lr_scheduler.name: unknown scheduler {block['name']!r}; NeMo's registry has "
                         f"{', '.join(AVAILABLE_SCHEDULERS)}")
    return f"{cls.__module__}.{cls.__qualname__}"


def build_scheduler(optimizer: torch.optim.Optimizer, block: dict[str, Any], *, max_steps: int | None = None) -> Any:
    """The scheduler of one ``optim.lr_scheduler`` block (see :func:`scheduler_target`) on ``optimizer``.
    A scheduler with a ``max_steps`` argument that the block leaves out gets ``max_steps`` when it is > 0,
    and is an error when it is not and the argument has no default."""
    target = scheduler_target(block)
    factory = hydra.utils.get_object(target)
    kwargs = {k: v for k, v in block.items() if k not in ("_target_", "name")}
    param = inspect.signature(factory).parameters.get("max_steps")
    if param is not None and "max_steps" not in kwargs:
        if max_steps is not None and max_steps > 0:
            kwargs["max_steps"] = max_steps
        elif param.default is inspect.Parameter.empty:
            raise ValueError(f"optim.lr_scheduler: {target} needs max_steps, and the trainer's is {max_steps}: set "
                             "optim.lr_scheduler.max_steps, or trainer.max_steps to a number of steps > 0")
    try:
        return factory(optimizer, **kwargs)
    except TypeError as e:  # an unknown or missing argument: name the block, not only the class
        raise ValueError(f"optim.lr_scheduler {block}: {target} refused its arguments: {e}") from e
