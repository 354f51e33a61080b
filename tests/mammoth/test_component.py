"""Component records: parsed in one place, built once per model from its task table, placed on ranks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nemo_emmett.mammoth.component import Component, component_name, longest_prefix_first, owner
from nemo_emmett.mammoth.modular import ModularTranslation
from nemo_emmett.mammoth.modular_salm import ModularSalmT5
from nemo_emmett.mammoth.sync import (
    component_holders,
    holder_map,
    holder_sets,
    place,
    place_components,
)
from tests.mammoth.test_component_sync import TASKS as TASK_COMPONENTS
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


def test_placement_fills_holders():
    records = [Component.parse(n) for n in sorted({n for cs in TASK_COMPONENTS.values() for n in cs})]
    holders = component_holders([["mt_en-de"], ["mt_en-fr"], ["mt_de-en"]], TASK_COMPONENTS)
    placed = place(records, holders)
    assert placed["embed.full"].holders == (0, 1, 2) and placed["decoder.0.fr"].holders == (1,)
    assert dataclasses.replace(placed["encoder.0.en"], holders=()) == Component.parse("encoder.0.en")
    # the sync functions read records and rank lists alike
    assert holder_map(placed) == {n: tuple(r) for n, r in holders.items()}
    assert holder_sets(placed) == holder_sets(holders) == [(0, 1), (0, 1, 2)]
    with pytest.raises(ValueError, match="'encoder.0.xx' has no holders"):
        place([Component.parse("encoder.0.xx")], holders)
    with pytest.raises(ValueError, match="'embed.full' has no holders: place it first"):
        holder_map({"embed.full": Component.parse("embed.full")})


def test_place_components_from_what_each_rank_built():
    def rank(*names):
        return [Component.parse(n, prefix=f"backbone.components.{n}.") for n in names]

    world = place_components([rank("embed.full", "encoder.0.en"), rank("embed.full", "decoder.0.fr")])
    assert list(world) == ["decoder.0.fr", "embed.full", "encoder.0.en"]  # sorted: the used vector's order
    assert {n: c.holders for n, c in world.items()} == {"decoder.0.fr": (1,), "embed.full": (0, 1),
                                                      "encoder.0.en": (0,)}
    assert world["embed.full"].prefix == "backbone.components.embed.full."
    odd = [Component.parse("embed.full", prefix="perception.")]
    with pytest.raises(ValueError, match="'embed.full' differs between rank 0"):
        place_components([rank("embed.full"), odd])


def test_a_model_takes_its_holders_from_the_placement(spm_path, one_torch_thread):
    torch.manual_seed(0)
    model = ModularTranslation(modular_cfg(spm_path))
    other = [dataclasses.replace(c) for c in model.components.values() if c.name != "decoder.1.fr"]
    world = place_components([list(model.components.values()), other])
    model.place_components(world)
    assert model.components["decoder.1.fr"].holders == (0,)
    assert model.components["embed.full"].holders == (0, 1)
    assert list(model.components)[0] == "embed.full"  # the model's own order is kept
    moved = {**world, "embed.full": dataclasses.replace(world["embed.full"], prefix="elsewhere.")}
    with pytest.raises(ValueError, match="no component 'embed.full' with prefix"):
        model.place_components(moved)
