"""Minimal LoRA for ``nn.Linear``: train a low-rank update instead of a large backbone.

``y = base(x) + (alpha / r) * dropout(x) @ A^T @ B^T`` with ``A (r, in)`` random and ``B (out, r)``
zero, so at init the wrapped model computes exactly what the base model did. Apply LoRA after
loading pretrained weights: the base weight moves to ``<name>.base.weight`` in the state dict.
Only the wrapped base layers are frozen here; freeze the rest of the model with
:func:`nemo_emmett.parts.freeze.freeze_by_regex`.
"""

from __future__ import annotations

import logging
import math
import re

import torch
from torch import nn

log = logging.getLogger(__name__)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``r`` update."""

    def __init__(self, base: nn.Linear, *, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {r}")
        self.base = base.requires_grad_(False)
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features, **kw))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r, **kw))
        # Same init as nn.Linear (and peft): A random so that B gets gradient from step one.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., r) -> (..., out)
        update = self.dropout(x) @ self.lora_a.T @ self.lora_b.T
        return self.base(x) + self.scaling * update

    def merged(self) -> nn.Linear:
        """A plain Linear with ``W + scaling * B @ A``: same outputs (in eval), no extra matmuls."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scaling * (self.lora_b @ self.lora_a))  # (out, in)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out.requires_grad_(False)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def apply_lora(module: nn.Module, target_patterns: list[str], r: int, alpha: float,
               dropout: float = 0.0) -> list[str]:
    """Wrap every ``nn.Linear`` whose dotted module name fullmatches a pattern; return their names.

    Patterns that match nothing get a WARNING; if none matches at all, ValueError (a LoRA run
    that trains nothing would be worse than a crash). Already wrapped layers are left alone.
    """
    compiled = [re.compile(p) for p in target_patterns]
    hits = dict.fromkeys(target_patterns, 0)
    names = []
    lora_names = {n for n, m in module.named_modules() if isinstance(m, LoRALinear)}
    for name, sub in module.named_modules():
        if not name or not isinstance(sub, nn.Linear) or name.rpartition(".")[0] in lora_names:
            continue
        matched = [p for p, c in zip(target_patterns, compiled) if c.fullmatch(name)]
        for p in matched:
            hits[p] += 1
        if matched:
            names.append(name)
    if not names:
        shown = ", ".join(f"'{p}'" for p in target_patterns)
        raise ValueError(f"LoRA target patterns {shown} matched no nn.Linear module "
                         "(fullmatch on dotted module names, e.g. '.*\\.(q|v)')")
    for p, n in hits.items():
        if n == 0:
            log.warning("LoRA target pattern '%s' matched no nn.Linear module", p)
    for name in names:
        _replace(module, name, LoRALinear(module.get_submodule(name), r=r, alpha=alpha, dropout=dropout))
    log.info("LoRA (r=%d, alpha=%g) on %d Linear layers", r, alpha, len(names))
    return names


def merge_lora(module: nn.Module) -> list[str]:
    """Replace every LoRALinear by its merged plain Linear (export, inference); return the names."""
    names = [n for n, m in module.named_modules() if n and isinstance(m, LoRALinear)]
    for name in names:
        _replace(module, name, module.get_submodule(name).merged())
    return names
