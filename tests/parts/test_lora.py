"""LoRA by peft: exact identity at init, only the adapted base layers freeze, Linear and GPT-2's
Conv1D, merge keeps outputs, pre-peft state dicts load, adapters in PEFT's format load with peft."""

from __future__ import annotations

import logging

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from nemo_emmett.parts.freeze import freeze_by_regex
from nemo_emmett.parts.lora import apply_lora, default_targets, merge_lora, save_adapter, upgrade_lora_keys


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


def _randomise_b(m: nn.Module) -> None:
    """B starts at zero (the adapters then change nothing): make them matter."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_()


def test_init_output_identical_and_names():
    m = _model()
    x = torch.randn(3, 5, 8)
    before = m(x)
    names = apply_lora(m, [r".*\.(q|v)"], r=2, alpha=4.0, dropout=0.1)
    assert names == ["0.q", "0.v", "1.q", "1.v"]
    assert isinstance(m[0].q, LoraLayer) and type(m[0].k) is nn.Linear
    assert not m[0].q.base_layer.weight.requires_grad and not m[0].q.base_layer.bias.requires_grad
    assert m[0].q.lora_A["default"].weight.shape == (2, 8) and m[0].q.lora_B["default"].weight.shape == (8, 2)
    assert m[0].q.scaling["default"] == 2.0
    m.eval()
    assert torch.equal(m(x), before)


def test_only_the_adapted_base_layers_freeze():
    """peft's own entry points freeze every non-adapter parameter; ours leave them as they were."""
    m = _model()
    m[1].k.weight.requires_grad_(False)  # frozen before: stays frozen
    apply_lora(m, [r"0\.q"], r=2, alpha=2.0)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    everything = {n for n, _ in m.named_parameters()}
    assert trainable == everything - {"0.q.base_layer.weight", "0.q.base_layer.bias", "1.k.weight"}


def test_one_step_changes_only_lora_factors_then_merge_is_equivalent():
    m = _model()
    apply_lora(m, [r".*\.q", r".*\.v"], r=2, alpha=2.0, dropout=0.0)
    freeze_by_regex(m, [r"(?!.*lora_).*"])  # everything that is not a LoRA factor
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {f"{i}.{p}.lora_{ab}.default.weight" for i in "01" for p in "qv" for ab in "AB"}
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    x = torch.randn(4, 8)
    for step in range(2):
        m(x).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
        changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
        # B = 0 at init gives A no gradient on the first step; from the second step A moves too.
        assert changed == ({n for n in trainable if ".lora_B." in n} if step == 0 else trainable)
    m.eval()
    y = m(x)
    assert merge_lora(m) == ["0.q", "0.v", "1.q", "1.v"]
    assert type(m[0].q) is nn.Linear and not any(isinstance(s, LoraLayer) for s in m.modules())
    assert not hasattr(m, "peft_config")
    torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-6)
    assert set(m.state_dict()) == set(_model().state_dict())  # export keys equal the original model's


def test_dead_pattern_warns_and_no_match_raises(caplog):
    m = _model()
    with caplog.at_level(logging.WARNING, logger="nemo_emmett.parts.lora"):
        assert apply_lora(m, [r"0\.k", r".*\.out_proj"], r=1, alpha=1.0) == ["0.k"]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        r"LoRA target pattern '.*\.out_proj' matched no nn.Linear or Conv1D module"]
    with pytest.raises(ValueError, match=r"'.*\\.o'"):
        apply_lora(_model(), [r".*\.o"], r=1, alpha=1.0)
    with pytest.raises(ValueError, match="norm"):  # LayerNorm is not a Linear
        apply_lora(_model(), [r".*\.norm"], r=1, alpha=1.0)


def test_applying_twice_is_an_error():
    m = _model()
    apply_lora(m, [r".*\.q"], r=1, alpha=1.0)
    with pytest.raises(ValueError, match=r"already applied.*0\.q"):
        apply_lora(m, [r".*"], r=1, alpha=1.0)


# ---- Hugging Face backbones: T5 (nn.Linear) and GPT-2 (Conv1D) ---------------------------------
def _wrapped(model_type: str) -> nn.Module:
    """A tiny random HF model as ``root.backbone`` (as in a TranslationModel), beside another module."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    if model_type == "t5":
        cfg = AutoConfig.for_model("t5", d_model=16, d_ff=32, d_kv=4, num_heads=4, num_layers=1, vocab_size=40,
                                   decoder_start_token_id=0)
        backbone = AutoModelForSeq2SeqLM.from_config(cfg)
    else:
        cfg = AutoConfig.for_model("gpt2", n_embd=16, n_layer=1, n_head=4, n_positions=32, vocab_size=40,
                                   bos_token_id=0, eos_token_id=1)
        backbone = AutoModelForCausalLM.from_config(cfg)
    root = nn.Module()
    root.backbone, root.head = backbone, nn.Linear(4, 4)
    return root


def _logits(root: nn.Module) -> torch.Tensor:
    ids = torch.arange(2, 14).view(2, 6)  # (B, L)
    if root.backbone.config.is_encoder_decoder:
        return root.backbone(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
    return root.backbone(input_ids=ids).logits


@pytest.mark.parametrize(("model_type", "layers"), [
    ("t5", {"backbone.encoder.block.0.layer.0.SelfAttention.q", "backbone.encoder.block.0.layer.0.SelfAttention.v",
            "backbone.decoder.block.0.layer.0.SelfAttention.q", "backbone.decoder.block.0.layer.0.SelfAttention.v",
            "backbone.decoder.block.0.layer.1.EncDecAttention.q", "backbone.decoder.block.0.layer.1.EncDecAttention.v"}),
    ("gpt2", {"backbone.transformer.h.0.attn.c_attn"}),
])
def test_default_targets_then_merged_equals_unmerged(model_type, layers):
    from transformers.pytorch_utils import Conv1D

    root = _wrapped(model_type)
    plain_keys = set(root.state_dict())
    assert set(apply_lora(root, default_targets(model_type), r=2, alpha=4.0)) == layers
    _randomise_b(root)
    root.eval()
    adapted = _logits(root)
    assert not torch.allclose(adapted, _logits_without_adapters(root))  # the adapters matter
    assert sorted(merge_lora(root)) == sorted(layers)
    base_type = Conv1D if model_type == "gpt2" else nn.Linear
    assert all(type(root.get_submodule(n)) is base_type for n in layers)
    torch.testing.assert_close(_logits(root), adapted, rtol=1e-5, atol=1e-5)
    assert set(root.state_dict()) == plain_keys


def _logits_without_adapters(root: nn.Module) -> torch.Tensor:
    layers = [m for m in root.modules() if isinstance(m, LoraLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        return _logits(root)
    finally:
        for m in layers:
            m.enable_adapters(True)


def test_unknown_model_type_has_no_default_and_marian_gets_bart_layers():
    with pytest.raises(ValueError, match=r"model_type 'speech_to_text'.*model\.lora\.targets"):
        default_targets("speech_to_text")
    assert default_targets("marian") == default_targets("m2m_100") == [r"backbone\.(?:.*\.)?(?:q_proj|v_proj)"]


# ---- state dicts written before peft, and PEFT's own format -------------------------------------
def test_pre_peft_state_dict_loads_with_the_same_meaning():
    """A hand-made state dict with LoRALinear's names and shapes: base ``<l>.base.weight``, ``<l>.lora_a``
    (r, in), ``<l>.lora_b`` (out, r); the loaded layer computes ``base(x) + alpha/r * x A^T B^T``."""
    m = _model()
    m.add_module("base", nn.Linear(8, 8))  # a module named 'base' that is not a LoRA layer keeps its key
    plain = {k: v.clone() for k, v in m.state_dict().items()}
    torch.manual_seed(1)
    old = {}
    for k, v in plain.items():
        layer, _, leaf = k.rpartition(".")
        old[f"{layer}.base.{leaf}" if layer in ("0.q", "1.v") else k] = v
    a, b = torch.randn(2, 8), torch.randn(8, 2)
    old.update({"0.q.lora_a": a, "0.q.lora_b": b, "1.v.lora_a": a + 1, "1.v.lora_b": b - 1})
    apply_lora(m, [r"0\.q", r"1\.v"], r=2, alpha=4.0)
    m.load_state_dict(upgrade_lora_keys(old), strict=True)
    x = torch.randn(3, 8)
    expected = nn.functional.linear(x, plain["0.q.weight"], plain["0.q.bias"]) + 2.0 * x @ a.T @ b.T  # (3, 8)
    torch.testing.assert_close(m[0].q(x), expected)
    assert "base.weight" in upgrade_lora_keys(old) and upgrade_lora_keys(plain) == plain


def test_adapter_files_load_with_peft_alone(tmp_path):
    """``adapter_config.json`` + ``adapter_model.safetensors``: peft's PeftConfig.from_pretrained,
    inject_adapter_in_model and set_peft_model_state_dict rebuild the adapted model from them."""
    from peft import PeftConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    root = _wrapped("gpt2")
    apply_lora(root, default_targets("gpt2"), r=2, alpha=4.0)
    _randomise_b(root)
    save_adapter(root, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}

    fresh = _wrapped("gpt2")  # same seed: the same base weights
    config = PeftConfig.from_pretrained(str(tmp_path))
    assert (config.r, config.lora_alpha, config.peft_type.value) == (2, 4.0, "LORA")
    inject_adapter_in_model(config, fresh)
    result = set_peft_model_state_dict(fresh, load_file(tmp_path / "adapter_model.safetensors"))
    assert not result.unexpected_keys
    root.eval(), fresh.eval()
    assert torch.equal(_logits(fresh), _logits(root))
