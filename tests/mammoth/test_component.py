"""Component records: parsed in one place, built once per model from its task table, placed on ranks."""

from __future__ import annotations

import pytest

from nemo_emmett.mammoth.component import Component, component_name, longest_prefix_first, owner
from nemo_emmett.mammoth.modular import ModularTranslation
from nemo_emmett.mammoth.modular_salm import ModularSalmT5
from tests.mammoth.test_modular import TASKS, modular_cfg, task
from tests.mammoth.test_modular_salm import adapter_cfg


def test_parse_reads_kind_position_and_sharing_id():
    assert Component.parse("encoder.3.romance") == Component("encoder.3.romance", "encoder", 3, "romance")
    assert Component.parse("embed.full", prefix="backbone.components.embed.full.") == Component(
        "embed.full", "embed", None, "full", "backbone.components.embed.full.")
    assert Component.parse("decoder_adapter.de").kind == "decoder_adapter"
    for name in ("encoder.3.romance", "embed.full", "backbone.full", "decoder_adapter.de"):
        c = Component.parse(name)
        assert component_name(c.kind, c.position, c.sharing_id) == name


@pytest.mark.parametrize("name", ["decoder.x.en", "embed", "embed.0.en", "lm_head.full", "encoder.0.e.n", None])
def test_parse_errors_name_the_accepted_forms(name):
    with pytest.raises(ValueError, match=rf"{name!r} is not of the form encoder.<position>.<id>, "
                                         r"decoder.<position>.<id> or <kind>.<id>"):
        Component.parse(name)


def test_prefix_must_end_with_a_dot_and_decides_ownership():
    with pytest.raises(ValueError, match="must end with '.'"):
        Component.parse("backbone.full", prefix="backbone")
    outer = Component.parse("backbone.full", prefix="a.")
    inner = Component.parse("encoder_adapter.en", prefix="a.b.")
    ordered = longest_prefix_first([outer, inner])
    assert owner("a.b.w", ordered) is inner and owner("a.w", ordered) is outer
    assert owner("ab.w", ordered) is None  # a prefix match ends at a dot
    assert not Component.parse("embed.full").owns("anything")  # not in a model yet: owns nothing


def _each_parameter_in_exactly_one(model):
    records = list(model.components.values())
    for name, _ in model.named_parameters():
        assert sum(c.owns(name) for c in records) == 1, name
    for c in records:  # and each record's prefix is where its parameters are
        assert any(n.startswith(c.prefix) for n, _ in model.named_parameters()), c


def test_modular_translation_records_from_its_task_table(spm_path, one_torch_thread):
    tasks = [*TASKS, task("st_en-de", "st", "en", "de", ["encoder.0.en", "encoder.1.full"],
                          ["decoder.0.full", "decoder.1.de"], perception="perception.full")]
    model = ModularTranslation(modular_cfg(spm_path, tasks))
    c = model.components
    assert list(c)[:4] == ["embed.full", "encoder.0.en", "encoder.1.full", "decoder.0.full"]  # first use
    assert c["encoder.1.full"] == Component("encoder.1.full", "encoder", 1, "full",
                                            "backbone.components.encoder.1.full.")
    assert c["decoder.1.fr"] == Component("decoder.1.fr", "decoder", 1, "fr", "backbone.components.decoder.1.fr.")
    assert c["embed.full"] == Component("embed.full", "embed", None, "full", "backbone.components.embed.full.")
    assert c["perception.full"] == Component("perception.full", "perception", None, "full", "perception.")
    assert sorted(c) == sorted({n for t in model.cfg.modular.tasks for n in t.components()})
    assert all(r.holders == () for r in c.values())  # not placed
    _each_parameter_in_exactly_one(model)
    assert model.mgcm_components()["encoder.0.en"] == r"backbone\.components\.encoder\.0\.en\..*"


def test_modular_salm_records_from_its_task_table(spm_path, one_torch_thread):
    model = ModularSalmT5(adapter_cfg(spm_path))
    c = model.components
    assert list(c) == ["backbone.full", "encoder_adapter.en", "decoder_adapter.de", "encoder_adapter.de",
                       "decoder_adapter.en", "decoder_adapter.fr"]
    assert c["backbone.full"] == Component("backbone.full", "backbone", None, "full", "backbone.")
    assert c["decoder_adapter.fr"] == Component("decoder_adapter.fr", "decoder_adapter", None, "fr",
                                                "adapters.decoder_adapter.fr.")
    _each_parameter_in_exactly_one(model)
