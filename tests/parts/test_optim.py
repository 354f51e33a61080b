"""Optimizer/scheduler setup from _target_ blocks: grouping, freezing, exact LR ramps."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from nemo_emmett.parts.optim import build_optimizer_and_scheduler, warmup_cosine, warmup_inverse_sqrt

ADAMW = {"_target_": "torch.optim.AdamW", "lr": 1e-3, "betas": [0.9, 0.98], "weight_decay": 0.01}


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.layer_norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2, bias=False)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def _lrs(scheduler, optimizer, n: int) -> list[float]:
    lrs = []
    for _ in range(n):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_no_decay_group_holds_biases_and_norms():
    m = Tiny()
    out = build_optimizer_and_scheduler(m, {"optimizer": ADAMW})
    decay, no_decay = out["optimizer"].param_groups
    assert _ids(decay["params"]) == _ids([m.proj.weight, m.head.weight])
    assert decay["weight_decay"] == 0.01
    assert _ids(no_decay["params"]) == _ids([m.proj.bias, m.layer_norm.weight, m.layer_norm.bias])
    assert no_decay["weight_decay"] == 0.0
    assert decay["betas"] == pytest.approx((0.9, 0.98))
    assert "lr_scheduler" not in out


def test_custom_no_decay_patterns_and_dictconfig():
    m = Tiny()
    cfg = OmegaConf.create({"optimizer": ADAMW, "lr_scheduler": None, "no_decay": [r"head\..*"]})
    groups = build_optimizer_and_scheduler(m, cfg)["optimizer"].param_groups
    assert _ids(groups[1]["params"]) == _ids([m.head.weight])
    assert len(groups[0]["params"]) == 4


def test_frozen_params_are_left_out():
    m = Tiny()
    m.proj.requires_grad_(False)
    opt = build_optimizer_and_scheduler(m, {"optimizer": ADAMW})["optimizer"]
    in_opt = _ids(p for g in opt.param_groups for p in g["params"])
    assert in_opt == _ids([m.head.weight, m.layer_norm.weight, m.layer_norm.bias])


def test_plain_parameter_list_is_accepted():
    m = Tiny()
    opt = build_optimizer_and_scheduler(m.parameters(), {"optimizer": ADAMW})["optimizer"]
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 5


def test_clear_errors():
    with pytest.raises(ValueError, match="_target_"):
        build_optimizer_and_scheduler(Tiny(), {"optimizer": {"lr": 1e-3}})
    with pytest.raises(ValueError, match="_target_"):
        build_optimizer_and_scheduler(Tiny(), {})
    with pytest.raises(ValueError, match="lr_scheduler needs a '_target_'"):
        build_optimizer_and_scheduler(Tiny(), {"optimizer": ADAMW, "lr_scheduler": {"warmup_steps": 3}})
    with pytest.raises(ValueError, match="No trainable parameters"):
        build_optimizer_and_scheduler(Tiny().requires_grad_(False), {"optimizer": ADAMW})


def test_inverse_sqrt_from_config_exact_ramp():
    cfg = {"optimizer": ADAMW,
           "lr_scheduler": {"_target_": "nemo_emmett.parts.optim.warmup_inverse_sqrt", "warmup_steps": 4}}
    out = build_optimizer_and_scheduler(Tiny(), cfg)
    assert out["lr_scheduler"]["interval"] == "step"
    lrs = _lrs(out["lr_scheduler"]["scheduler"], out["optimizer"], 16)
    assert lrs[:4] == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3], rel=1e-12)
    assert lrs[15] == pytest.approx(0.5e-3, rel=1e-12)  # update 16: sqrt(4 / 16)
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))


def test_warmup_cosine_exact_values():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    lrs = _lrs(warmup_cosine(opt, warmup_steps=2, max_steps=6, min_lr_ratio=0.1), opt, 8)
    # warmup 0.5, 1; cosine over steps 2..6: 1, 0.55 + 0.45*cos(pi/4), 0.55, ..., 0.1; flat after
    expected = [0.5, 1.0, 1.0, 0.55 + 0.45 * 0.5 ** 0.5, 0.55, 0.55 - 0.45 * 0.5 ** 0.5, 0.1, 0.1]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_scheduler_argument_checks():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps >= 1"):
        warmup_inverse_sqrt(opt, 0)
    with pytest.raises(ValueError, match="max_steps"):
        warmup_cosine(opt, warmup_steps=5, max_steps=5)
