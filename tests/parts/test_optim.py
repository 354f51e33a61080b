"""Optimizer/scheduler setup from config blocks: grouping, freezing, NeMo's LR schedulers by target or name."""

from __future__ import annotations

import pytest
import torch
from nemo.core.optim.lr_scheduler import CosineAnnealing, InverseSquareRootAnnealing
from omegaconf import OmegaConf
from torch import nn

from nemo_emmett.models.config import SalmT5Config
from nemo_emmett.parts.optim import build_optimizer_and_scheduler

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
    with pytest.raises(ValueError, match="lr_scheduler needs a '_target_' .* not neither"):
        build_optimizer_and_scheduler(Tiny(), {"optimizer": ADAMW, "lr_scheduler": {"warmup_steps": 3}})
    with pytest.raises(ValueError, match="No trainable parameters"):
        build_optimizer_and_scheduler(Tiny().requires_grad_(False), {"optimizer": ADAMW})


def _sgd() -> torch.optim.SGD:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)


def test_default_schedule_is_nemos_inverse_sqrt_exactly():
    cfg = {"optimizer": ADAMW, "lr_scheduler": SalmT5Config().optim["lr_scheduler"]}
    out = build_optimizer_and_scheduler(Tiny(), cfg, max_steps=50)  # max_steps: null in the block wins: no end
    assert out["lr_scheduler"]["interval"] == "step"
    assert isinstance(out["lr_scheduler"]["scheduler"], InverseSquareRootAnnealing)
    lrs = _lrs(out["lr_scheduler"]["scheduler"], out["optimizer"], 400)
    opt = _sgd()
    nemo = _lrs(InverseSquareRootAnnealing(opt, warmup_steps=100, max_steps=None), opt, 400)
    assert lrs == pytest.approx([1e-3 * x for x in nemo], rel=1e-12)
    # u / 101 up to the peak at update 101, then sqrt(101 / u); never 0 past the trainer's 50 steps
    assert lrs[0] == pytest.approx(1e-3 / 101) and lrs[100] == pytest.approx(1e-3)
    assert lrs[399] == pytest.approx(1e-3 * (101 / 400) ** 0.5)


def test_any_nemo_scheduler_by_name_takes_the_trainers_max_steps():
    block = {"name": "CosineAnnealing", "warmup_steps": 2, "min_lr": 0.1}
    sched = build_optimizer_and_scheduler([nn.Parameter(torch.zeros(1))],
                                          {"optimizer": {"_target_": "torch.optim.SGD", "lr": 1.0},
                                           "lr_scheduler": block}, max_steps=8)
    assert isinstance(sched["lr_scheduler"]["scheduler"], CosineAnnealing)
    lrs = _lrs(sched["lr_scheduler"]["scheduler"], sched["optimizer"], 10)
    opt = _sgd()
    assert lrs == pytest.approx(_lrs(CosineAnnealing(opt, warmup_steps=2, max_steps=8, min_lr=0.1), opt, 10), rel=1e-12)
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0]) and lrs[8:] == pytest.approx([0.1, 0.1])


def test_scheduler_block_errors_name_the_key():
    def build(block, max_steps=None):
        return build_optimizer_and_scheduler(Tiny(), {"optimizer": ADAMW, "lr_scheduler": block}, max_steps=max_steps)

    with pytest.raises(ValueError, match="not both"):
        build({"_target_": "nemo.core.optim.lr_scheduler.CosineAnnealing", "name": "CosineAnnealing"})
    with pytest.raises(ValueError, match="optim.lr_scheduler.name: unknown scheduler 'Cosine'.*CosineAnnealing"):
        build({"name": "Cosine"})
    with pytest.raises(ValueError, match="CosineAnnealing needs max_steps, and the trainer's is -1"):
        build({"name": "CosineAnnealing", "warmup_steps": 2}, max_steps=-1)
    with pytest.raises(ValueError, match="InverseSquareRootAnnealing refused its arguments.*warmup"):
        build({"name": "InverseSquareRootAnnealing", "warmup": 2}, max_steps=10)
