"""model.backbone.dtype: the Hugging Face backbone in bf16/fp16, perception and glue in float32, a
float32 loss; a frozen bf16 backbone trains the speech path and decodes (CPU has bf16 matmuls)."""

import logging

import pytest
import torch

from nemo_emmett.models.bestow_gpt import BestowGpt
from nemo_emmett.models.salm_t5 import SalmT5
from tests.models.test_bestow_gpt import TINY_GPT2
from tests.models.test_bestow_gpt import cfg as bestow_cfg  # noqa: F401 (fixture)
from tests.models.test_salm_t5 import audio_batch, text_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(params=["salm_t5", "bestow_gpt"])
def family(request, tiny_cfg, bestow_cfg):  # noqa: F811
    """(model class, config with a frozen backbone) for each family."""
    if request.param == "salm_t5":
        return SalmT5, {**tiny_cfg, "freeze": [r"backbone\..*"]}
    return BestowGpt, bestow_cfg  # BESTOW-GPT freezes its LLM by default


def with_dtype(cfg, dtype):
    return {**cfg, "backbone": {**cfg["backbone"], "dtype": dtype}}


def dtypes(module):
    return {p.dtype for p in module.parameters()}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_backbone_loads_in_the_dtype_asked_and_the_rest_stays_float32(family, dtype):
    cls, cfg = family
    model = cls(with_dtype(cfg, str(dtype).removeprefix("torch.")))
    assert dtypes(model.backbone) == {dtype}
    rest = {p.dtype for n, p in model.named_parameters() if not n.startswith("backbone.")}
    assert rest == {torch.float32}  # perception, (BESTOW) the cross-attention
    assert dtypes(cls(cfg).backbone) == {torch.float32}  # null: float32, as before


def test_a_frozen_bf16_backbone_trains_the_speech_path_and_decodes(family):
    cls, cfg = family
    model = cls(with_dtype(cfg, "bfloat16")).train()
    handed = []  # the dtype of what the backbone is fed: its own (T5 would cope with float32, Marian would not)
    fed = [model.backbone, *([model.backbone.get_encoder()] if model.backbone.config.is_encoder_decoder else [])]
    for m in fed:  # generate() feeds SALM-T5's encoder directly
        m.register_forward_pre_hook(
            lambda m, args, kw: handed.append(kw["inputs_embeds"].dtype) if "inputs_embeds" in kw else None,
            with_kwargs=True)
    batch = audio_batch(model)
    logits, _ = model.logits(batch)
    assert logits.dtype == torch.float32  # the loss is computed in float32
    loss, _ = model.task_losses(batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("perception.") and p.grad is not None}
    assert any(n.startswith("perception.encoder.") for n in grads)
    assert all(torch.isfinite(g).all() for g in grads.values()) and any(g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in model.backbone.parameters())
    model.eval()
    for beam in (1, 2):
        model.cfg.decoding.beam_size = beam
        assert len(model.translate_batch(batch)) == len(batch)  # SALM-T5: HF generate; BESTOW-GPT: parts/decoding
        assert len(model.translate_batch(text_batch(model))) == 3
    assert handed and set(handed) == {torch.bfloat16}


def test_bf16_from_a_local_folder_and_null_is_float32(spm_path, tiny_cfg, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    # saved in bf16: transformers alone would load it as bf16 ("auto"); null means float32 here
    hf_cfg = AutoConfig.for_model(**TINY_GPT2, vocab_size=60)
    AutoModelForCausalLM.from_config(hf_cfg).to(torch.bfloat16).save_pretrained(tmp_path / "gpt2")
    cfg = {**tiny_cfg, "backbone": {"pretrained_path": str(tmp_path / "gpt2")},
           "cross_attention": {"num_layers": 1, "num_heads": 4, "ff_dim": 32}}
    assert dtypes(BestowGpt(cfg).backbone) == {torch.float32}
    assert dtypes(BestowGpt(with_dtype(cfg, "bfloat16")).backbone) == {torch.bfloat16}


def test_an_unknown_dtype_names_the_key_and_the_choices(tiny_cfg):
    with pytest.raises(ValueError, match=r"model\.backbone\.dtype: 'float64'.*bfloat16.*float16.*float32"):
        SalmT5(with_dtype(tiny_cfg, "float64"))


def test_trainable_half_precision_weights_are_warned_about_once(tiny_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="nemo_emmett.modules.hf_backbone"):
        SalmT5(with_dtype({**tiny_cfg, "freeze": [r"backbone\..*"]}, "bfloat16"))
        assert not caplog.records  # frozen: nothing to lose
        SalmT5(with_dtype(tiny_cfg, "bfloat16"))  # the whole backbone trains in bf16
    assert len(caplog.records) == 1 and "model.backbone.dtype" in caplog.records[0].getMessage()
    assert "master weights" in caplog.records[0].getMessage()


def test_a_bf16_model_exports_and_restores_in_bf16(bestow_cfg, tmp_path):  # noqa: F811
    from nemo_emmett.export import export_model, restore_model

    model = BestowGpt(with_dtype(bestow_cfg, "bfloat16")).eval()
    restored = restore_model(export_model(model, tmp_path / "m.emmett"))
    assert dtypes(restored.backbone) == {torch.bfloat16} and dtypes(restored.perception) == {torch.float32}
    batch = audio_batch(model)
    with torch.no_grad():
        assert torch.equal(model.logits(batch)[0], restored.logits(batch)[0])
