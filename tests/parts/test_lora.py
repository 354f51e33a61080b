"""LoRA: exact identity at init, only the low-rank factors train, merge keeps outputs."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from nemo_emmett.parts.freeze import freeze_by_regex
from nemo_emmett.parts.lora import LoRALinear, apply_lora, merge_lora


class Attn(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d, bias=False)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.q(x) * self.k(x) + self.v(x))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Attn(), Attn())


def test_init_output_identical_and_names():
    m = _model()
    x = torch.randn(3, 5, 8)
    before = m(x)
    names = apply_lora(m, [r".*\.(q|v)"], r=2, alpha=4.0, dropout=0.1)
    assert names == ["0.q", "0.v", "1.q", "1.v"]
    assert isinstance(m[0].q, LoRALinear) and isinstance(m[0].k, nn.Linear)
    assert not m[0].q.base.weight.requires_grad and not m[0].q.base.bias.requires_grad
    assert m[0].q.lora_a.shape == (2, 8) and m[0].q.lora_b.shape == (8, 2) and m[0].q.scaling == 2.0
    m.eval()
    assert torch.equal(m(x), before)


def test_one_step_changes_only_lora_factors_then_merge_is_equivalent():
    m = _model()
    apply_lora(m, [r".*\.q", r".*\.v"], r=2, alpha=2.0, dropout=0.0)
    freeze_by_regex(m, [r"(?!.*lora_).*"])  # everything that is not a LoRA factor
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {f"{i}.{p}.lora_{ab}" for i in "01" for p in "qv" for ab in "ab"}
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    x = torch.randn(4, 8)
    for step in range(2):
        m(x).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
        changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
        # B = 0 at init gives A no gradient on the first step; from the second step A moves too.
        assert changed == ({n for n in trainable if n.endswith("lora_b")} if step == 0 else trainable)
    m.eval()
    y = m(x)
    assert merge_lora(m) == ["0.q", "0.v", "1.q", "1.v"]
    assert type(m[0].q) is nn.Linear and not any(isinstance(s, LoRALinear) for s in m.modules())
    torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-6)
    assert set(m.state_dict()) == set(_model().state_dict())  # export keys equal the original model's


def test_dead_pattern_warns_and_no_match_raises(caplog):
    m = _model()
    with caplog.at_level(logging.WARNING, logger="nemo_emmett.parts.lora"):
        assert apply_lora(m, [r"0\.k", r".*\.out_proj"], r=1, alpha=1.0) == ["0.k"]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        r"LoRA target pattern '.*\.out_proj' matched no nn.Linear module"]
    with pytest.raises(ValueError, match=r"'.*\\.o'"):
        apply_lora(_model(), [r".*\.o"], r=1, alpha=1.0)
    with pytest.raises(ValueError, match="norm"):  # LayerNorm is not a Linear
        apply_lora(_model(), [r".*\.norm"], r=1, alpha=1.0)


def test_already_wrapped_layers_are_not_wrapped_again():
    m = _model()
    apply_lora(m, [r".*\.q"], r=1, alpha=1.0)
    assert apply_lora(m, [r".*"], r=1, alpha=1.0) == ["0.k", "0.v", "1.k", "1.v"]
    assert isinstance(m[0].q.base, nn.Linear) and type(m[0].q.base) is nn.Linear
