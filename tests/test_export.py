"""Single-file export: restoring gives the same model, needs nothing but the file, and fails clearly."""

import io
import json
import shutil
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

from nemo_emmett.data.dataset import collate
from nemo_emmett.data.examples import make_text_example
from nemo_emmett.data.sampler import Batch
from nemo_emmett.export import export_model, load_model, read_meta, restore_model
from nemo_emmett.inference import audio_example
from nemo_emmett.models.salm_t5 import SalmT5
from tests.conftest import TINY_BACKBONE, TINY_PERCEPTION

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Restored tokenizers go to a cache folder of this test, not ~/.cache."""
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny_model(spm_path, **extra) -> SalmT5:
    """A random model that says something: T5's init makes a tiny one emit padding only."""
    cfg = {"tokenizer": {"spm_path": str(spm_path)}, "backbone": {"config": dict(TINY_BACKBONE)},
           "perception": dict(TINY_PERCEPTION), "decoding": {"max_new_tokens": 6}, **extra}
    torch.manual_seed(0)
    model = SalmT5(cfg)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.normal_(0.0, 1.0)
    return model.eval()


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    out = tmp_path_factory.mktemp("wav")
    rng = np.random.default_rng(0)
    paths = []
    for i, (rate, seconds) in enumerate([(16000, 1.0), (22050, 0.6)]):
        paths.append(out / f"a{i}.wav")
        sf.write(paths[-1], (0.1 * rng.standard_normal(int(rate * seconds))).astype("float32"), rate)
    return paths


def text_batch(model):
    exs = [make_text_example(example_id=f"t{i}", source_text=s, target_text=t, source_lang="en", target_lang="de",
                             dataset="d")
           for i, (s, t) in enumerate([("three hundred and nine", "dreihundertneun"), ("two", "zwei")])]
    return collate(Batch("text", 0, 0, 0, exs, [(0, 0)] * 2), sampling_rate=16000, text=model.text)


def audio_batch(model, wavs):
    exs = [audio_example(p, source_lang="en", target_lang="de", task="st", target_text="zwei") for p in wavs]
    return collate(Batch("audio", 0, 0, 0, exs, [(0, 0)] * 2), sampling_rate=16000, text=model.text)


def assert_same_model(a, b, wavs):
    for batch in (text_batch(a), audio_batch(a, wavs)):
        with torch.no_grad():
            assert torch.equal(a.logits(batch)[0], b.logits(batch)[0])
        assert a.translate_batch(batch) == b.translate_batch(batch)


@pytest.mark.parametrize("lora", [None, {"targets": [r"backbone\..*\.(q|v)"], "r": 2, "alpha": 4.0}])
def test_restore_gives_the_same_model(spm_path, tmp_path, wavs, lora):
    model = tiny_model(spm_path, lora=lora)
    if lora:  # B starts at zero; make the adapters matter
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_()
    path = export_model(model, tmp_path / "m.emmett", token_equivalent_duration=0.08)
    restored = restore_model(path)
    assert not restored.training and type(restored) is SalmT5
    assert_same_model(model, restored, wavs)
    assert any(h for h in model.translate_batch(text_batch(model)))  # the comparison is not between empty strings

    meta = read_meta(path)
    assert meta["model_class"] == "nemo_emmett.models.salm_t5.SalmT5"
    assert meta["sampling_rate"] == 16000 and meta["token_equivalent_duration"] == 0.08
    cfg = restored.hparams.cfg
    assert cfg["backbone"]["pretrained_path"] is None and cfg["backbone"]["config"]["model_type"] == "t5"
    assert cfg["backbone"]["config"]["d_model"] == 32
    assert cfg["perception"]["pretrained_asr"] is None
    assert cfg["perception"]["encoder"]["_target_"].endswith("ConformerEncoder")
    assert cfg["lora"] == (None if lora is None else {**lora, "dropout": 0.0})
    assert cfg["decoding"]["max_new_tokens"] == 6
    with tarfile.open(path) as tar:
        assert {"meta.json", "model_config.yaml", "model_weights.pt", "tokenizer/tokenizer.model"} <= set(tar.getnames())
        adapter = {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"}
        assert (adapter <= set(tar.getnames())) == bool(lora)
        weights = torch.load(tar.extractfile("model_weights.pt"), weights_only=True)
    assert not any(".lora_" in k for k in weights)  # adapters live in PEFT's files only


# ---- LoRA: PEFT's format inside the export, exports and checkpoints written before peft, merging ----
LORA = {"targets": [r"backbone\..*\.(q|v)"], "r": 2, "alpha": 4.0}


def lora_model(spm_path) -> SalmT5:
    model = tiny_model(spm_path, lora=LORA)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    return model


def pre_peft_state(model) -> dict:
    """The model's state dict as the hand-written LoRALinear named it: ``<l>.base.weight``,
    ``<l>.lora_a`` (r, in), ``<l>.lora_b`` (out, r)."""
    out = {}
    for k, v in model.state_dict().items():
        k = k.replace(".base_layer.", ".base.").replace(".lora_A.default.weight", ".lora_a")
        out[k.replace(".lora_B.default.weight", ".lora_b")] = v.clone()
    assert out["backbone.encoder.block.0.layer.0.SelfAttention.q.lora_a"].shape == (2, 32)
    assert out["backbone.encoder.block.0.layer.0.SelfAttention.q.lora_b"].shape == (32, 2)
    return out


def rewrite_archive(src, dst, replace: dict):
    """A copy of the export ``src`` with members replaced by new bytes (None: left out)."""
    with tarfile.open(src) as a, tarfile.open(dst, "w") as b:
        for m in a.getmembers():
            if m.name not in replace:
                b.addfile(m, a.extractfile(m) if m.isfile() else None)
            elif replace[m.name] is not None:
                m.size = len(replace[m.name])
                b.addfile(m, io.BytesIO(replace[m.name]))
    return dst


def test_adapter_files_that_do_not_fit_are_named(spm_path, tmp_path):
    path = export_model(lora_model(spm_path), tmp_path / "m.emmett")
    with tarfile.open(path) as tar:
        config = json.loads(tar.extractfile("adapter/adapter_config.json").read())
    other = rewrite_archive(path, tmp_path / "r4.emmett",
                            {"adapter/adapter_config.json": json.dumps({**config, "r": 4}).encode()})
    with pytest.raises(ValueError, match=r"r4\.emmett.*adapter/adapter_config\.json describes other LoRA layers.*r 4"):
        restore_model(other)
    half = rewrite_archive(path, tmp_path / "half.emmett", {"adapter/adapter_model.safetensors": None})
    with pytest.raises(ValueError, match=r"half\.emmett.*adapter/ needs both"):
        restore_model(half)


def test_adapters_in_the_export_load_with_peft_alone(spm_path, tmp_path, wavs):
    """``adapter/`` holds what peft writes; PeftConfig.from_pretrained, inject_adapter_in_model and
    set_peft_model_state_dict turn the same model without LoRA into the exported one."""
    from peft import PeftConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    model = lora_model(spm_path)
    path = export_model(model, tmp_path / "m.emmett")
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "x", members=[m for m in tar.getmembers() if m.name.startswith("adapter/")],
                       filter="data")
    plain = SalmT5({**model.hparams.cfg, "lora": None}).eval()
    plain.load_state_dict({k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k})
    config = PeftConfig.from_pretrained(str(tmp_path / "x" / "adapter"))
    assert (config.r, config.lora_alpha) == (2, 4.0)
    inject_adapter_in_model(config, plain)
    result = set_peft_model_state_dict(plain, load_file(tmp_path / "x" / "adapter" / "adapter_model.safetensors"))
    assert not result.unexpected_keys
    assert_same_model(model, plain, wavs)


def test_pre_peft_exports_and_checkpoints_still_load(spm_path, tmp_path, wavs):
    model = lora_model(spm_path)
    old = pre_peft_state(model)
    # an export written before peft: adapters in model_weights.pt under the old names, no adapter/
    path = export_model(model, tmp_path / "new.emmett")
    buf = io.BytesIO()
    torch.save(old, buf)
    old_path = rewrite_archive(path, tmp_path / "old.emmett", {"adapter/adapter_config.json": None,
                                                                "adapter/adapter_model.safetensors": None,
                                                                "model_weights.pt": buf.getvalue()})
    assert_same_model(model, restore_model(old_path), wavs)
    # a Lightning checkpoint written before peft: load_model, and Lightning's own loading (on_load_checkpoint)
    ckpt = tmp_path / "old.ckpt"
    import lightning

    torch.save({"state_dict": old, "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": lightning.__version__}, ckpt)
    assert_same_model(model, load_model(ckpt), wavs)
    assert_same_model(model, SalmT5.load_from_checkpoint(ckpt, weights_only=False).eval(), wavs)


def test_merge_lora_keeps_outputs_and_the_merged_model_exports(spm_path, tmp_path, wavs):
    from peft.tuners.lora import LoraLayer

    model = lora_model(spm_path)
    path = export_model(model, tmp_path / "m.emmett")
    merged = load_model(path, merge_lora=True)
    assert merged.cfg.lora is None and not any(isinstance(m, LoraLayer) for m in merged.modules())
    for batch in (text_batch(model), audio_batch(model, wavs)):
        with torch.no_grad():
            torch.testing.assert_close(merged.logits(batch)[0], model.logits(batch)[0], rtol=1e-4, atol=1e-4)
    again = restore_model(export_model(merged, tmp_path / "merged.emmett"))
    assert again.cfg.lora is None
    assert_same_model(merged, again, wavs)


def test_restored_model_needs_nothing_but_the_file(spm_path, tmp_path, wavs, cache):
    src = tmp_path / "run"
    src.mkdir()
    shutil.copy(spm_path, src / "tok.model")
    model = tiny_model(src / "tok.model")
    expected = model.translate_batch(text_batch(model))
    path = export_model(model, tmp_path / "out" / "m.emmett")
    shutil.rmtree(src)

    restored = restore_model(path)
    assert restored.translate_batch(text_batch(restored)) == expected
    assert restored.text.spm_path.startswith(str(cache))
    # a second restore (another process, say) reuses the extracted tokenizer
    assert restore_model(path).text.spm_path == restored.text.spm_path


def test_backbone_from_a_pretrained_folder_is_packed(spm_path, tmp_path, wavs):
    folder = tmp_path / "hf_t5"
    base = tiny_model(spm_path)
    base.backbone.generation_config.no_repeat_ngram_size = 2
    base.backbone.save_pretrained(folder)
    model = SalmT5({**base.hparams.cfg, "backbone": {"pretrained_path": str(folder)}}).eval()
    path = export_model(model, tmp_path / "m.emmett")
    shutil.rmtree(folder)

    restored = restore_model(path)
    assert restored.hparams.cfg["backbone"]["pretrained_path"] is None
    assert restored.backbone.generation_config.no_repeat_ngram_size == 2
    assert_same_model(model, restored, wavs)


def test_pretrained_backbone_with_a_larger_vocab(spm_path, tmp_path):
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    probe = tiny_model(spm_path)
    hf_cfg = AutoConfig.for_model(**TINY_BACKBONE, vocab_size=probe.text.vocab_size + 8, pad_token_id=0,
                                  eos_token_id=probe.text.eos_id, decoder_start_token_id=0)
    AutoModelForSeq2SeqLM.from_config(hf_cfg).save_pretrained(tmp_path / "hf")
    model = SalmT5({**probe.hparams.cfg, "backbone": {"pretrained_path": str(tmp_path / "hf")}}).eval()
    restored = restore_model(export_model(model, tmp_path / "m.emmett"))
    batch = text_batch(model)
    with torch.no_grad():
        assert torch.equal(model.logits(batch)[0], restored.logits(batch)[0])


def test_load_model_reads_exports_and_lightning_checkpoints(spm_path, tmp_path, wavs):
    src = tmp_path / "run"
    src.mkdir()
    shutil.copy(spm_path, src / "tok.model")
    model = tiny_model(src / "tok.model")
    ckpt = tmp_path / "last.ckpt"
    # what Lightning writes, minus optimizer and loop state
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    assert_same_model(model, load_model(ckpt), wavs)
    assert_same_model(model, load_model(export_model(model, tmp_path / "m.emmett")), wavs)

    shutil.rmtree(src)
    with pytest.raises(FileNotFoundError, match=r"tok\.model.*export"):
        load_model(ckpt)
    bogus = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(ValueError, match=r"weights\.pt.*hyper_parameters"):
        load_model(bogus)


def test_restore_errors_name_the_file_and_what_was_expected(spm_path, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.emmett"):
        restore_model(tmp_path / "nowhere.emmett")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.emmett"):
        load_model(tmp_path / "nowhere.emmett")
    junk = tmp_path / "junk.emmett"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ValueError, match=r"junk\.emmett.*not a nemo_emmett model export.*tar archive"):
        restore_model(junk)
    with pytest.raises(ValueError, match=r"junk\.emmett.*neither"):
        load_model(junk)

    other_tar = tmp_path / "other.tar"
    with tarfile.open(other_tar, "w") as tar:
        tar.add(spm_path, arcname="tokenizer.model")
    with pytest.raises(ValueError, match=r"other\.tar.*lacks meta\.json, model_config\.yaml, model_weights\.pt"):
        restore_model(other_tar)

    good = export_model(tiny_model(spm_path), tmp_path / "good.emmett")
    renamed = tmp_path / "renamed.emmett"
    with tarfile.open(good) as src, tarfile.open(renamed, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name == "meta.json":
                data = json.dumps({**json.loads(data), "model_class": "nemo_emmett.models.gone.Model"}).encode()
                m.size = len(data)
            dst.addfile(m, None if data is None else io.BytesIO(data))
    with pytest.raises(ImportError, match=r"renamed\.emmett.*nemo_emmett\.models\.gone\.Model.*written by nemo_emmett"):
        restore_model(renamed)


def test_model_classes_that_moved_in_the_layout_by_idea_still_load(caplog):
    """Checkpoints and exports of 0.1.0 name ModularTranslation / ModularSalmT5 by their old paths."""
    import logging

    from nemo_emmett.export import _import_model_class
    from nemo_emmett.mammoth.modular import ModularTranslation
    from nemo_emmett.mammoth.modular_salm import ModularSalmT5

    with caplog.at_level(logging.INFO, logger="nemo_emmett"):
        assert _import_model_class("nemo_emmett.models.modular.ModularTranslation", "old.ckpt", None) is ModularTranslation
    assert "moved to nemo_emmett.mammoth.modular.ModularTranslation" in caplog.text
    assert _import_model_class("nemo_emmett.models.modular_salm.ModularSalmT5", "old.ckpt", "0.1.0") is ModularSalmT5
    with pytest.raises(ImportError, match=r"'old.ckpt': model class 'nemo_emmett.models.gone.Model' \(written by "
                                          r"nemo_emmett 0.1.0\) cannot be imported"):
        _import_model_class("nemo_emmett.models.gone.Model", "old.ckpt", "0.1.0")
