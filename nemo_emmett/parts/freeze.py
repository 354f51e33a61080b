"""Freeze and unfreeze parameters by regexes from YAML.

Patterns are matched with ``re.fullmatch`` against the full dotted parameter name
(``backbone.encoder.block.0.layer.0.SelfAttention.q.weight``), so ``backbone\\..*`` means
"everything under backbone" and a bare ``backbone`` matches nothing: an accidental substring
hit (``norm`` inside ``layer_norm`` and ``normalizer``) cannot freeze more than intended.
A pattern that matches nothing is almost always a typo or a renamed module, so it is
reported with a WARNING instead of being silently ignored.
"""

from __future__ import annotations

import logging
import re

from torch import nn

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
