"""Per-component export: each component once; one task's components reproduce the full model on it."""

from __future__ import annotations

import tarfile

import pytest
import torch

from nemo_emmett.export import export_model, load_model, read_meta, restore_model
from nemo_emmett.mammoth.component import Component
from nemo_emmett.mammoth.component_files import restrict_tasks, split_state
from nemo_emmett.mammoth.modular import ModularTranslation
from tests.mammoth.test_modular import modular_cfg, text_batch


@pytest.fixture
def exported(spm_path, tmp_path, one_torch_thread):
    torch.manual_seed(0)
    model = ModularTranslation(modular_cfg(spm_path)).eval()
    return model, export_model(model, tmp_path / "m.emmett")


def test_each_component_is_written_once(exported):
    model, path = exported
    with tarfile.open(path) as tar:
        names = tar.getnames()
        members = {n: torch.load(tar.extractfile(n), weights_only=True) for n in names if n.startswith("components/")}
    assert sorted(members) == sorted(f"components/{c}.pt" for c in model.component_modules())
    keys = [k for part in members.values() for k in part]
    assert len(keys) == len(set(keys)) == len(model.state_dict())  # every entry once, none left out
    assert read_meta(path)["components"]["encoder.1.full"] == "components/encoder.1.full.pt"


def test_one_task_loads_only_its_components_and_reproduces_the_full_model(exported):
    model, path = exported
    part = restore_model(path, directions=["mt:de-en"])
    assert sorted(part.component_modules()) == sorted(model.tasks["mt:de-en"].components())
    assert sum(p.numel() for p in part.parameters()) == model.parameters_per_task()["mt_de-en"]
    assert sum(p.numel() for p in part.parameters()) < sum(p.numel() for p in model.parameters())
    batch = text_batch(model, [("de", "en"), ("de", "en")])
    torch.testing.assert_close(part.logits(batch)[0], model.logits(batch)[0])
    assert part.generate_ids(batch) == model.generate_ids(batch)
    by_name = restore_model(path, directions=["mt_en-fr"])  # a task name works too
    assert sorted(by_name.component_modules()) == sorted(model.tasks["mt:en-fr"].components())


def test_a_checkpoint_can_be_cut_down_too(exported, tmp_path):
    model, _ = exported
    ckpt = tmp_path / "m.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"cfg": model.hparams["cfg"]},
                "nemo_emmett_model_class": "nemo_emmett.mammoth.modular.ModularTranslation"}, ckpt)
    part = load_model(ckpt, directions=["mt:en-de"])
    batch = text_batch(model, [("en", "de")])
    torch.testing.assert_close(part.logits(batch)[0], model.logits(batch)[0])


def test_unknown_direction_is_an_error_naming_it(exported):
    _, path = exported
    with pytest.raises(ValueError, match=r"no task for \['mt:cs-en'\]; its tasks: \['mt:de-en'"):
        restore_model(path, directions=["mt:cs-en"])


def test_translate_cli_loads_only_the_asked_direction(exported, tmp_path, capsys, monkeypatch):
    import nemo_emmett.cli.translate as cli
    from nemo_emmett import export

    model, path = exported
    loaded = []
    real = export.restore_model
    monkeypatch.setattr(export, "restore_model", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    assert cli.main(["--model", str(path), "--text", "hundert neun", "--source-lang", "de", "--target-lang", "en",
                     "--no-progress"]) == 0
    assert sorted(loaded[0].component_modules()) == sorted(model.tasks["mt:de-en"].components())
    expected = model.translate_batch(text_batch(model, [("de", "en")], texts=("hundert neun", "x")))
    assert capsys.readouterr().out == expected[0] + "\n"


def test_split_state_and_restrict_tasks_are_exact():
    outer, inner = Component.parse("backbone.full", prefix="a."), Component.parse("encoder_adapter.en", prefix="a.b.")
    parts, rest = split_state({"a.x": 1, "a.b.y": 2, "c": 3, "ab.z": 4}, [outer, inner])
    assert parts == {"backbone.full": {"a.x": 1}, "encoder_adapter.en": {"a.b.y": 2}} and rest == {"c": 3, "ab.z": 4}
    assert list(parts) == ["backbone.full", "encoder_adapter.en"]  # the order given, not longest-first
    cfg = {"modular": {"tasks": [{"name": "t1", "task": "mt", "source_lang": "en", "target_lang": "de"},
                                 {"name": "t2", "task": "mt", "source_lang": "de", "target_lang": "en"}],
                       "devices": [["t1"], ["t2"]]}}
    out = restrict_tasks(cfg, ["mt:de-en"])
    assert [t["name"] for t in out["modular"]["tasks"]] == ["t2"] and out["modular"]["devices"] == [[], ["t2"]]
