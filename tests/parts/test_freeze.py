"""Freezing by regex: fullmatch on dotted names, counts, warnings for dead patterns."""

from __future__ import annotations

import logging

import pytest
from torch import nn

from nemo_emmett.parts.freeze import freeze_by_regex, trainable_summary, unfreeze_by_regex


def _model() -> nn.Module:
    return nn.ModuleDict({
        "backbone": nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)),  # 12 + 6 params
        "head": nn.Linear(3, 2),  # 8 params
    })


def _trainable(m: nn.Module) -> set[str]:
    return {n for n, p in m.named_parameters() if p.requires_grad}


def test_freeze_counts_and_flags():
    m = _model()
    counts = freeze_by_regex(m, [r"backbone\..*", r".*\.bias"])
    assert counts == {r"backbone\..*": 4, r".*\.bias": 3}
    assert _trainable(m) == {"head.weight"}


def test_fullmatch_not_search():
    m = _model()
    assert freeze_by_regex(m, ["backbone"]) == {"backbone": 0}  # a prefix alone matches nothing
    assert _trainable(m) == {n for n, _ in m.named_parameters()}


def test_dead_pattern_warns_with_its_name(caplog):
    m = _model()
    with caplog.at_level(logging.WARNING, logger="nemo_emmett.parts.freeze"):
        freeze_by_regex(m, [r"head\..*", r"encoder\..*"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and r"encoder\..*" in warnings[0]


def test_unfreeze_after_freeze():
    m = _model()
    freeze_by_regex(m, [".*"])
    assert _trainable(m) == set()
    assert unfreeze_by_regex(m, [r"backbone\.1\..*"]) == {r"backbone\.1\..*": 2}
    assert _trainable(m) == {"backbone.1.weight", "backbone.1.bias"}


def test_invalid_pattern_is_named():
    with pytest.raises(ValueError, match=r"'back\('"):
        freeze_by_regex(_model(), ["back("])


def test_trainable_summary():
    m = _model()
    freeze_by_regex(m, [r"backbone\..*"])
    assert trainable_summary(m) == "trainable 8 / 26 params (30.8%)"
