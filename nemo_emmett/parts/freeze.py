"""Freeze and unfreeze parameters by regexes from YAML, and the fine-tuning presets.

Patterns are matched with ``re.fullmatch`` against the full dotted parameter name
(``backbone.encoder.block.0.layer.0.SelfAttention.q.weight``), so ``backbone\\..*`` means
"everything under backbone" and a bare ``backbone`` matches nothing: an accidental substring
hit (``norm`` inside ``layer_norm`` and ``normalizer``) cannot freeze more than intended.
A pattern that matches nothing is almost always a typo or a renamed module, so it is
reported with a WARNING instead of being silently ignored.

A preset (``model.finetune``) sets ``requires_grad`` of every parameter at once, before the regexes:
``full``, ``backbone_frozen`` or ``lora`` (:data:`FINETUNE_PRESETS`).
"""

from __future__ import annotations

import logging
import re

from torch import nn

from nemo_emmett.parts.lora import adapter_parameter_names

log = logging.getLogger(__name__)


def _set_requires_grad(module: nn.Module, patterns: list[str], flag: bool) -> dict[str, int]:
    """Count of parameter tensors matched per pattern (a tensor counts for every pattern it matches)."""
    action = "unfreeze" if flag else "freeze"
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as e:
        raise ValueError(f"Invalid {action} pattern '{e.pattern}': {e}") from e
    counts = dict.fromkeys(patterns, 0)
    for name, param in module.named_parameters():
        hits = [p for p, r in zip(patterns, compiled) if r.fullmatch(name)]
        for p in hits:
            counts[p] += 1
        if hits:
            param.requires_grad_(flag)
    for p, n in counts.items():
        if n == 0:
            log.warning("%s pattern '%s' matched no parameter (fullmatch on dotted names)", action, p)
    log.info("%s: %s; %s", action, counts, trainable_summary(module))
    return counts


def freeze_by_regex(module: nn.Module, patterns: list[str]) -> dict[str, int]:
    """Set ``requires_grad=False`` on parameters whose name fullmatches any pattern."""
    return _set_requires_grad(module, list(patterns), False)


def unfreeze_by_regex(module: nn.Module, patterns: list[str]) -> dict[str, int]:
    """Set ``requires_grad=True`` on matches, e.g. to train a few layers of a frozen backbone."""
    return _set_requires_grad(module, list(patterns), True)


def trainable_summary(module: nn.Module) -> str:
    """One line for logs: trainable / total parameter elements (shared tensors counted once)."""
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    share = 100.0 * trainable / total if total else 0.0
    return f"trainable {trainable:,} / {total:,} params ({share:.1f}%)"


FINETUNE_PRESETS = {
    "full": "every parameter trains (the base weights of LoRA layers too)",
    "backbone_frozen": "the backbone (its LoRA adapters too) frozen; perception, cross-attention, adapters train",
    "lora": "the backbone frozen except its LoRA adapters; the rest trains (needs model.lora)",
}
"""``model.finetune`` values and what each trains."""


def check_finetune(preset: str | None, *, has_lora: bool) -> None:
    """ValueError naming ``model.finetune`` for an unknown preset, or 'lora' without ``model.lora``."""
    if preset is not None and preset not in FINETUNE_PRESETS:
        choices = "; ".join(f"'{k}': {v}" for k, v in FINETUNE_PRESETS.items())
        raise ValueError(f"model.finetune={preset!r} is not a preset; expected null (model.freeze only) or one of {choices}")
    if preset == "lora" and not has_lora:
        raise ValueError("model.finetune='lora' trains the backbone's LoRA adapters, but model.lora is null: "
                         "set model.lora (e.g. model.lora={r: 8}) or choose finetune 'backbone_frozen'")


def apply_finetune(module: nn.Module, preset: str | None, backbone_prefix: str = "backbone.") -> None:
    """Set ``requires_grad`` of every parameter as ``preset`` says (see :data:`FINETUNE_PRESETS`;
    None changes nothing). Outside 'full', the base weights of LoRA layers stay frozen wherever they are."""
    check_finetune(preset, has_lora=True)
    if preset is None:
        return
    adapters, bases = adapter_parameter_names(module)
    if preset == "lora" and not any(n.startswith(backbone_prefix) for n in adapters):
        log.warning("model.finetune='lora': no LoRA adapter under '%s' (model.lora.targets), so the backbone "
                    "does not train at all", backbone_prefix)
    for name, param in module.named_parameters():
        if preset == "full":
            flag = True
        elif name.startswith(backbone_prefix):
            flag = preset == "lora" and name in adapters
        else:
            flag = name not in bases
        param.requires_grad_(flag)
    log.info("finetune %r: %s", preset, trainable_summary(module))
