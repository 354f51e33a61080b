"""``model.finetune`` presets: which parameter groups (backbone, its LoRA adapters, perception,
cross-attention) train, checked by one optimizer step changing only those; errors name the key."""

import logging

import pytest

from nemo_emmett.models.bestow_gpt import BestowGpt
from nemo_emmett.models.salm_t5 import SalmT5
from tests.models.test_bestow_gpt import cfg  # noqa: F401 (fixture)
from tests.models.test_salm_t5 import audio_batch, one_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LORA = {"r": 2, "alpha": 4.0}  # targets null: peft's defaults for the backbone (T5: q, v; GPT-2: c_attn)


def group(name: str) -> str:
    if name.startswith("backbone."):
        return "lora" if ".lora_" in name else "backbone"
    return name.split(".")[0]  # perception, cross_attention


def trained_groups(model, steps: int = 2) -> set[str]:
    """The groups of the parameters that two optimizer steps on an audio batch changed (LoRA's A
    moves from the second step, B being zero at init)."""
    model.train()
    batch = audio_batch(model)
    changed = set()
    for _ in range(steps):
        changed |= one_step(model, batch)[2]
    assert all(p.requires_grad for n, p in model.named_parameters() if n in changed)
    return {group(n) for n in changed}


def trainable_groups(model) -> set[str]:
    return {group(n) for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(("finetune", "lora", "expected"), [
    (None, None, {"backbone", "perception"}),  # SALM-T5's default: everything trains
    ("full", LORA, {"backbone", "lora", "perception"}),
    ("backbone_frozen", None, {"perception"}),
    ("backbone_frozen", LORA, {"perception"}),
    ("lora", LORA, {"lora", "perception"}),
])
def test_salm_t5_presets_train_only_their_groups(tiny_cfg, finetune, lora, expected):
    model = SalmT5({**tiny_cfg, "finetune": finetune, "lora": lora})
    assert trainable_groups(model) == expected
    assert trained_groups(model) == expected


def test_full_trains_lora_base_weights_and_other_presets_never_do(tiny_cfg):
    """Also outside the backbone: a LoRA layer of the perception keeps its base weight frozen."""
    lora = {**LORA, "targets": [r"backbone\..*\.(q|v)", r"perception\.encoder\.layers\.0\.self_attn\.linear_q"]}
    for finetune, base_trains in (("full", True), ("lora", False), ("backbone_frozen", False), (None, False)):
        model = SalmT5({**tiny_cfg, "finetune": finetune, "lora": lora})
        bases = {n: p.requires_grad for n, p in model.named_parameters() if ".base_layer." in n}
        assert any(n.startswith("perception.") for n in bases) and set(bases.values()) == {base_trains}, finetune
        assert model.perception.encoder.layers[0].self_attn.linear_q.lora_A["default"].weight.requires_grad


def test_freeze_list_applies_after_the_preset(tiny_cfg):
    model = SalmT5({**tiny_cfg, "finetune": "lora", "lora": LORA, "freeze": [r"perception\.encoder\..*"]})
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("perception.encoder.") for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("perception.adapter."))
    assert trained_groups(model, steps=1) == {"lora", "perception"}


def test_bestow_gpt_lora_preset_adapts_conv1d_and_keeps_cross_attention_training(cfg):  # noqa: F811
    model = BestowGpt({**cfg, "finetune": "lora", "lora": LORA})
    assert {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")} == {
        "backbone.transformer.h.0.attn.c_attn.lora_A.default.weight",
        "backbone.transformer.h.0.attn.c_attn.lora_B.default.weight"}
    assert trained_groups(model) == {"lora", "perception", "cross_attention"}


def test_bestow_gpt_backbone_frozen_trains_cross_attention_and_perception(cfg):  # noqa: F811
    model = BestowGpt({**cfg, "finetune": "backbone_frozen", "freeze": []})
    assert trained_groups(model) == {"perception", "cross_attention"}


def test_full_on_bestow_gpt_warns_that_its_default_freeze_still_applies(cfg, caplog):  # noqa: F811
    with caplog.at_level(logging.WARNING, logger="nemo_emmett.models.base"):
        model = BestowGpt({**cfg, "finetune": "full"})
    assert "model.freeze=[]" in caplog.text
    assert "backbone" not in trainable_groups(model)
    assert "backbone" in trainable_groups(BestowGpt({**cfg, "finetune": "full", "freeze": []}))


def test_unknown_preset_lists_the_choices_and_lora_needs_model_lora(tiny_cfg):
    with pytest.raises(ValueError, match=r"model\.finetune='frozen'.*'full'.*'backbone_frozen'.*'lora'"):
        SalmT5({**tiny_cfg, "finetune": "frozen"})
    with pytest.raises(ValueError, match=r"model\.finetune='lora'.*model\.lora is null"):
        SalmT5({**tiny_cfg, "finetune": "lora"})
