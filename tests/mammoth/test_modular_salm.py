"""ModularSalmT5: a frozen encoder-decoder backbone with per-task bottleneck adapters as components."""

from __future__ import annotations

import copy

import pytest
import torch

from nemo_emmett.export import export_model, restore_model
from nemo_emmett.mammoth.modular_salm import ModularSalmT5
from nemo_emmett.models.salm_t5 import SalmT5
from nemo_emmett.parts.optim import build_optimizer_and_scheduler
from tests.conftest import TINY_BACKBONE, TINY_PERCEPTION
from tests.mammoth.test_modular import text_batch


def atask(name, s, g, enc, dec):
    return {"name": name, "task": "mt", "source_lang": s, "target_lang": g, "encoder": [], "decoder": [],
            "encoder_adapter": enc, "decoder_adapter": dec}


TASKS = [atask("mt_en-de", "en", "de", "encoder_adapter.en", "decoder_adapter.de"),
         atask("mt_de-en", "de", "en", "encoder_adapter.de", "decoder_adapter.en"),
         atask("mt_en-fr", "en", "fr", "encoder_adapter.en", "decoder_adapter.fr")]


def plain_cfg(spm_path):
    return {"tokenizer": {"spm_path": spm_path}, "backbone": {"config": dict(TINY_BACKBONE, dropout_rate=0.0)},
            "perception": dict(TINY_PERCEPTION),
            "optim": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-2}, "lr_scheduler": None}}


def adapter_cfg(spm_path, tasks=TASKS):
    return {**plain_cfg(spm_path), "modular": {"encoder_layers": [], "decoder_layers": [], "adapter_bottleneck": 8,
                                                "tasks": copy.deepcopy(tasks)}}


@pytest.fixture
def models(spm_path, one_torch_thread):
    torch.manual_seed(0)
    modular = ModularSalmT5(adapter_cfg(spm_path)).eval()
    plain = SalmT5(plain_cfg(spm_path)).eval()
    missing, unexpected = plain.load_state_dict(
        {k: v for k, v in modular.state_dict().items() if not k.startswith("adapters.")}, strict=False)
    assert not unexpected and all(k.startswith("perception.") for k in missing)  # text tasks: no perception
    return modular, plain


def test_components_and_frozen_backbone(models):
    modular, _ = models
    assert sorted(modular.component_modules()) == sorted(
        ["backbone.full", "encoder_adapter.en", "encoder_adapter.de", "decoder_adapter.de", "decoder_adapter.en",
         "decoder_adapter.fr"])
    assert all(not p.requires_grad for n, p in modular.named_parameters() if n.startswith("backbone."))
    assert set(modular.component_of().values()) == set(modular.component_modules())
    assert modular.task_components(modular.tasks["mt:en-de"]) == ["backbone.full", "encoder_adapter.en",
                                                                  "decoder_adapter.de"]


def test_fresh_adapters_leave_the_backbone_function_unchanged(models):
    modular, plain = models
    batch = text_batch(modular, [("en", "de"), ("de", "en"), ("en", "fr")])
    torch.testing.assert_close(modular.logits(batch)[0], plain.logits(batch)[0])
    assert modular.generate_ids(batch) == plain.generate_ids(batch)


def test_a_step_trains_only_the_adapters_of_the_batch_tasks(models):
    modular, plain = models
    modular.train()
    opt = build_optimizer_and_scheduler(modular, modular.cfg.optim)["optimizer"]
    before = {n: p.detach().clone() for n, p in modular.named_parameters()}
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        loss, _ = modular.task_losses(text_batch(modular, [("en", "de"), ("en", "de")]))
        loss.backward()
        opt.step()
    owners = modular.component_of()
    changed = {owners[n] for n, p in modular.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"encoder_adapter.en", "decoder_adapter.de"}
    modular.eval()
    other = text_batch(modular, [("de", "en")])  # its adapters are untouched: still the backbone alone
    torch.testing.assert_close(modular.logits(other)[0], plain.logits(other)[0])
    trained = text_batch(modular, [("en", "de")])
    assert not torch.allclose(modular.logits(trained)[0], plain.logits(trained)[0])


def test_export_loads_the_backbone_and_one_task_adapters(models, tmp_path):
    modular, _ = models
    with torch.no_grad():
        for p in modular.adapters.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = export_model(modular, tmp_path / "m.emmett")
    part = restore_model(path, directions=["mt:de-en"])
    assert sorted(part.component_modules()) == ["backbone.full", "decoder_adapter.en", "encoder_adapter.de"]
    batch = text_batch(modular, [("de", "en")])
    torch.testing.assert_close(part.logits(batch)[0], modular.logits(batch)[0])


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["modular"].update(encoder_layers=[1]), r"encoder_layers must be \[\] with a pretrained backbone"),
    (lambda c: c["modular"]["tasks"][0].update(encoder_adapter=None), "encoder_adapter must be a encoder_adapter"),
    (lambda c: c["modular"]["tasks"][0].update(decoder_adapter="encoder_adapter.de"), "decoder_adapter must be"),
])
def test_bad_adapter_tables_name_the_culprit(spm_path, edit, message):
    cfg = adapter_cfg(spm_path)
    edit(cfg)
    with pytest.raises(ValueError, match=message):
        ModularSalmT5(cfg)


def test_layer_stack_models_refuse_adapters(spm_path):
    from tests.mammoth.test_modular import TASKS as STACK_TASKS
    from tests.mammoth.test_modular import modular_cfg

    tasks = copy.deepcopy(STACK_TASKS)
    tasks[0]["encoder_adapter"] = "encoder_adapter.en"
    from nemo_emmett.mammoth.modular import ModularTranslation

    with pytest.raises(ValueError, match="needs a pretrained backbone"):
        ModularTranslation(modular_cfg(spm_path, tasks))
