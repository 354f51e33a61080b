"""save_pretrained / from_pretrained and save_to / restore_from: the same model back, only the asked
components read, real safetensors and PEFT files, nothing but the saved files needed, clear errors."""

import json
import shutil
import socket
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from nemo_emmett.export import export_model, load_model
from nemo_emmett.mammoth.modular import ModularTranslation
from nemo_emmett.models.backbone_folder import save_backbone_pretrained
from nemo_emmett.models.base import TranslationModel
from nemo_emmett.models.salm_t5 import SalmT5
from tests.mammoth.test_modular import modular_cfg
from tests.mammoth.test_modular import text_batch as modular_batch
from tests.test_export import assert_same_model, lora_model, text_batch, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Restored tokenizers go to a cache folder of this test, and no test reaches the network."""
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    out = tmp_path_factory.mktemp("wav")
    rng = np.random.default_rng(0)
    for i, rate in enumerate([16000, 22050]):
        sf.write(out / f"a{i}.wav", (0.1 * rng.standard_normal(rate // 2)).astype("float32"), rate)
    return [out / "a0.wav", out / "a1.wav"]


@pytest.fixture
def own_tokenizer(spm_path, tmp_path):
    """A tokenizer file the test deletes after saving, to show the saved model does not need it."""
    (tmp_path / "run").mkdir()
    return shutil.copy(spm_path, tmp_path / "run" / "tok.model")


def safetensors_keys(path) -> tuple[set[str], dict]:
    with safe_open(str(path), framework="pt") as f:  # a real safetensors file: safetensors itself reads it
        return set(f.keys()), f.metadata()


def test_salm_t5_folder_round_trip(own_tokenizer, tmp_path, wavs):
    model = tiny_model(own_tokenizer)
    model.backbone.generation_config.no_repeat_ngram_size = 2  # not in the backbone's config: its own file
    folder = model.save_pretrained(tmp_path / "salm", token_equivalent_duration=0.08)
    shutil.rmtree(tmp_path / "run")

    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["config.json", "generation_config.json", "model.safetensors", "tokenizer/tokenizer.model"]
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "nemo_emmett.pretrained" and config["format_version"] == 1
    assert config["model_class"] == "nemo_emmett.models.salm_t5.SalmT5" and config["architectures"] == ["SalmT5"]
    assert config["token_equivalent_duration"] == 0.08 and config["sampling_rate"] == 16000
    assert config["cfg"]["backbone"]["pretrained_path"] is None and config["cfg"]["backbone"]["config"]["d_model"] == 32
    assert config["cfg"]["tokenizer"]["spm_path"] == "tokenizer/tokenizer.model"
    keys, meta = safetensors_keys(folder / "model.safetensors")
    aliases = json.loads(meta["aliases"])  # T5's tied embeddings: written once, named again in the metadata
    assert aliases["backbone.encoder.embed_tokens.weight"] == "backbone.shared.weight"
    assert keys | set(aliases) == set(model.state_dict()) and not keys & set(aliases)

    restored = TranslationModel.from_pretrained(folder)  # the class comes from config.json
    assert type(restored) is SalmT5 and not restored.training
    assert restored.text.spm_path == str(folder / "tokenizer" / "tokenizer.model")
    assert restored.backbone.generation_config.no_repeat_ngram_size == 2
    assert_same_model(model, restored, wavs)
    assert any(model.translate_batch(text_batch(model)))  # not a comparison of empty strings
    assert_same_model(model, SalmT5.from_pretrained(str(folder)), wavs)


def test_saving_over_a_saved_model_replaces_it_and_never_a_foreign_folder(spm_path, tmp_path):
    model = tiny_model(spm_path)
    folder = model.save_pretrained(tmp_path / "m")
    (folder / "stale.txt").write_text("from before")
    model.save_pretrained(folder)
    assert not (folder / "stale.txt").exists() and (folder / "model.safetensors").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "t5"}')  # a Hugging Face model's folder
    for other in ("mine", "hf"):
        with pytest.raises(FileExistsError, match=rf"{other}' exists and is not an empty folder or a saved nemo_emmett"):
            model.save_pretrained(tmp_path / other)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep" and (tmp_path / "hf" / "config.json").is_file()


def test_modular_model_loads_only_the_asked_directions_components(spm_path, tmp_path):
    torch.manual_seed(0)
    model = ModularTranslation(modular_cfg(spm_path)).eval()
    folder = model.save_pretrained(tmp_path / "mod")
    every = sorted(model.component_modules())
    assert sorted(p.name for p in (folder / "components").iterdir()) == [f"{c}.safetensors" for c in every]
    entries = [k for c in every for k in safetensors_keys(folder / "components" / f"{c}.safetensors")[0]]
    assert len(entries) == len(set(entries)) == len(model.state_dict())  # each entry once, in its component

    wanted = sorted(model.tasks["mt:de-en"].components())
    for c in set(every) - set(wanted):  # the other components' files are not read: without them it loads
        (folder / "components" / f"{c}.safetensors").unlink()
    part = TranslationModel.from_pretrained(folder, directions=["mt:de-en"])
    assert type(part) is ModularTranslation and sorted(part.component_modules()) == wanted
    assert sum(p.numel() for p in part.parameters()) == model.parameters_per_task()["mt_de-en"]
    batch = modular_batch(model, [("de", "en"), ("de", "en")])
    with torch.no_grad():
        assert torch.equal(part.logits(batch)[0], model.logits(batch)[0])
    assert part.generate_ids(batch) == model.generate_ids(batch)

    with pytest.raises(FileNotFoundError, match=r"mod' has no components/encoder\.0\.en\.safetensors "
                                                r"\(the weights of component 'encoder\.0\.en'\)"):
        TranslationModel.from_pretrained(folder)  # the whole model needs the deleted files
    with pytest.raises(ValueError, match=r"mod.*no task for \['mt:cs-en'\]"):
        TranslationModel.from_pretrained(folder, directions=["mt:cs-en"])
    with pytest.raises(TypeError, match=r"mod.*ModularTranslation.*is not a SalmT5"):
        SalmT5.from_pretrained(folder)

    archive = model.save_to(tmp_path / "mod.nemo")
    part = TranslationModel.restore_from(archive, directions=["mt_en-fr"])  # a task name works too
    assert sorted(part.component_modules()) == sorted(model.tasks["mt:en-fr"].components())


def other_family(name, spm_path):
    """BESTOW-GPT (GPT-2's tied LM head) and the modular SALM-T5 (adapter components of a frozen backbone)."""
    from tests.mammoth.test_modular_salm import adapter_cfg
    from tests.models.test_bestow_gpt import TINY_GPT2, talkative

    torch.manual_seed(0)
    if name == "bestow_gpt":
        from nemo_emmett.models.bestow_gpt import BestowGpt

        return talkative(BestowGpt({"tokenizer": {"spm_path": spm_path}, "backbone": {"config": dict(TINY_GPT2)},
                                    "cross_attention": {"num_layers": 1, "num_heads": 4, "ff_dim": 32}}))
    from nemo_emmett.mammoth.modular_salm import ModularSalmT5

    model = ModularSalmT5(adapter_cfg(spm_path)).eval()
    with torch.no_grad():
        for p in model.adapters.parameters():  # fresh adapters change nothing
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("family", ["bestow_gpt", "modular_salm_t5"])
def test_the_other_families_round_trip_through_the_archive(spm_path, tmp_path, family):
    model = other_family(family, spm_path)
    restored = TranslationModel.restore_from(model.save_to(tmp_path / "m.nemo"))
    assert type(restored) is type(model)
    batch = modular_batch(model, [("de", "en"), ("en", "de")])
    with torch.no_grad():
        assert torch.equal(restored.logits(batch)[0], model.logits(batch)[0])
    assert restored.translate_batch(batch) == model.translate_batch(batch)


def test_lora_adapters_are_saved_in_peft_format(spm_path, tmp_path, wavs):
    from peft import PeftConfig

    model = lora_model(spm_path)
    folder = model.save_pretrained(tmp_path / "lora")
    assert (folder / "adapter" / "adapter_config.json").is_file()
    config = PeftConfig.from_pretrained(str(folder / "adapter"))  # peft reads its own files
    assert (config.r, config.lora_alpha) == (2, 4.0)
    adapter_keys, _ = safetensors_keys(folder / "adapter" / "adapter_model.safetensors")
    assert adapter_keys and all(".lora_" in k for k in adapter_keys)
    weights, meta = safetensors_keys(folder / "model.safetensors")
    assert not any(".lora_" in k for k in weights | set(json.loads(meta.get("aliases", "{}"))))

    restored = TranslationModel.from_pretrained(folder)
    assert restored.cfg.lora is not None
    assert_same_model(model, restored, wavs)
    merged = load_model(folder, merge_lora=True)
    assert merged.cfg.lora is None
    batch = text_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(merged.logits(batch)[0], model.logits(batch)[0], rtol=1e-4, atol=1e-4)
    (folder / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"lora.*adapter/ needs both"):
        TranslationModel.from_pretrained(folder)


def test_archive_round_trip_needs_only_the_file(own_tokenizer, tmp_path, wavs, cache):
    model = tiny_model(own_tokenizer)
    path = model.save_to(tmp_path / "out" / "m.nemo")
    shutil.rmtree(tmp_path / "run")
    assert not list((tmp_path / "out").glob(".*"))  # no staging folder left beside it
    with tarfile.open(path, "r:") as tar:  # "r:": uncompressed
        names = tar.getnames()
    assert names[0] == "config.json" and names[-1] == "model.safetensors" and "tokenizer/tokenizer.model" in names

    restored = TranslationModel.restore_from(path)
    assert restored.text.spm_path.startswith(str(cache))
    assert_same_model(model, restored, wavs)
    assert_same_model(model, TranslationModel.from_pretrained(path), wavs)
    assert_same_model(model, load_model(path), wavs)
    with tarfile.open(path) as tar:  # unpacked, it is the folder from_pretrained reads
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert_same_model(model, TranslationModel.from_pretrained(tmp_path / "unpacked"), wavs)


def test_a_hugging_face_tokenizer_travels_too(spm_path, tmp_path, wavs):
    from transformers import AutoTokenizer

    hf = save_backbone_pretrained(tiny_model(spm_path), tmp_path / "hf")
    model = SalmT5({**tiny_model(spm_path).hparams.cfg, "tokenizer": {}, "backbone": {"pretrained_path": str(hf)}})
    assert model.eval().text.hf_path == str(hf)
    folder, archive = model.save_pretrained(tmp_path / "m"), model.save_to(tmp_path / "m.nemo")
    shutil.rmtree(hf)
    assert json.loads((folder / "config.json").read_text())["tokenizer"] == {"kind": "hf", "path": "tokenizer"}
    tok = AutoTokenizer.from_pretrained(str(folder), subfolder="tokenizer", local_files_only=True)
    assert len(tok) == model.text.vocab_size
    for restored in (TranslationModel.from_pretrained(folder), TranslationModel.restore_from(archive)):
        assert restored.text.spm_path is None and restored.text.hf_path.endswith("tokenizer")
        assert_same_model(model, restored, wavs)


def test_bad_paths_are_named_with_what_was_expected(spm_path, tmp_path):
    for name in (str(tmp_path / "nowhere"), "nvidia/emmett-salm-t5"):  # a hub-like name is never downloaded
        with pytest.raises(FileNotFoundError, match=rf"'{name}' is not a local folder or file.*config\.json.*"
                                                    r"nothing is downloaded"):
            TranslationModel.from_pretrained(name)
    with pytest.raises(FileNotFoundError, match=r"'nvidia/x\.nemo' is not a local file.*nothing is downloaded"):
        TranslationModel.restore_from("nvidia/x.nemo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty' has no config\.json: expected a folder written by "
                                                r"TranslationModel\.save_pretrained"):
        TranslationModel.from_pretrained(tmp_path / "empty")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "t5"}))  # someone else's config.json
    with pytest.raises(ValueError, match=r"hf.*config\.json is not a nemo_emmett model's.*format 'nemo_emmett"):
        TranslationModel.from_pretrained(tmp_path / "hf")

    folder = tiny_model(spm_path).save_pretrained(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"not json")
    with pytest.raises(ValueError, match=r"m.*model\.safetensors is not a safetensors file"):
        TranslationModel.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"'.*m' has no model\.safetensors \(the weights\)"):
        TranslationModel.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"m' is a folder: load it with from_pretrained"):
        TranslationModel.restore_from(folder)


def test_emmett_exports_and_lightning_checkpoints_still_load(spm_path, tmp_path, wavs):
    model = tiny_model(spm_path)
    old = export_model(model, tmp_path / "m.emmett")
    with pytest.raises(ValueError, match=r"m\.emmett' is a \.emmett export.*nemo_emmett\.export\.load_model.*"
                                         r"emmett-export --checkpoint m\.emmett --out model\.nemo"):
        TranslationModel.restore_from(old)
    assert_same_model(model, load_model(old), wavs)
    ckpt = tmp_path / "last.ckpt"  # what Lightning writes, minus optimizer and loop state
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "nemo_emmett_model_class": "nemo_emmett.models.salm_t5.SalmT5"}, ckpt)
    assert_same_model(model, load_model(ckpt), wavs)
    with pytest.raises(ValueError, match=r"last\.ckpt' is not a saved nemo_emmett model"):
        TranslationModel.from_pretrained(ckpt)


def test_emmett_export_writes_each_format_and_translate_reads_them(spm_path, tmp_path, capsys):
    from nemo_emmett.cli import export as export_cli
    from nemo_emmett.cli import translate as translate_cli

    model = tiny_model(spm_path)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    expected = model.translate_batch(text_batch(model))[0]
    for out, kind in [("folder", "pretrained"), ("m.nemo", "archive"), ("m.emmett", "emmett")]:
        assert export_cli.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / out)]) == 0
        if kind == "pretrained":
            assert (tmp_path / out / "config.json").is_file()
        else:
            with tarfile.open(tmp_path / out) as tar:
                assert ("config.json" in tar.getnames()) == (kind == "archive")
        capsys.readouterr()
        assert translate_cli.main(["--model", str(tmp_path / out), "--text", "three hundred and nine",
                                   "--source-lang", "en", "--target-lang", "de", "--no-progress"]) == 0
        assert capsys.readouterr().out == expected + "\n"
    assert export_cli.main(["--checkpoint", str(tmp_path / "folder"), "--out", str(tmp_path / "again.nemo")]) == 0
    assert export_cli.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "m.pt")]) == 2
    assert "suffix '.pt' names no format" in capsys.readouterr().err
