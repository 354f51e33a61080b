"""MGCM's typed configuration (``model.mgcm``) and the trainer settings it takes over."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MGCMConfig:
    """Modular gradient conflict mitigation (the arithmetic in ``mgcm/projection.py``, the step in
    ``mgcm/step.py``)."""

    enabled: bool = False
    """True: manual optimization; per-task backward passes; each auxiliary task's gradient is projected,
    module by module, off the primary one where they conflict (negative cosine)."""
    primary_task: str = "st"
    """The task whose gradient is never changed (a value of ``batch["tasks"]``)."""
    granularity: str = "module"
    """``tensor`` (each parameter), ``module`` (the owning submodule, or ``module_patterns``) or
    ``component`` (``components``)."""
    module_patterns: list[str] = field(default_factory=list)
    """``module`` granularity: regexes (full match over parameter names) with one capture group that
    names the module, e.g. ``'(backbone\\.(?:en|de)coder\\.block\\.\\d+\\.layer\\.\\d+)\\..*'`` (a T5
    sub-layer); parameters matching none go by their owning submodule."""
    components: dict[str, str] | None = None
    """``component`` granularity: {name: regex (full match over parameter names)}; the first match names
    a parameter's component, every parameter must match one. null with a modular (MAMMOTH) model: its
    own named components."""
    module_types: dict[str, str] | None = None
    """Types for the logged statistics, {type: regex over a module's first parameter name}, first
    match wins, else ``other``; null: ``mgcm.grouping.DEFAULT_MODULE_TYPES`` (embeddings, perception,
    encoder, decoder)."""
    log_every_n_steps: int | None = None
    """Statistics are averaged over this many steps and logged at the window's end; null: the
    trainer's ``log_every_n_steps`` (use a multiple of it, loggers write on its steps)."""
    gradient_clip_val: float | None = None
    """Gradient clipping, done by the MGCM step (Lightning refuses ``trainer.gradient_clip_val`` with
    manual optimization; ``examples/train.py`` moves it here)."""
    gradient_clip_algorithm: str = "norm"
    """``norm`` or ``value``."""


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
