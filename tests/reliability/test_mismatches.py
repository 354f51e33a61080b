"""Silent mismatches and unnamed errors: a modular task without data, a folder whose name or marker
says another direction than its source, a meta-config language without data, a target language the
model never saw, an empty audio file, and a pretrained ASR path that is not a .nemo archive."""

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from nemo_emmett.cli import translate as translate_cli
from nemo_emmett.data.plan import resolve_sources
from nemo_emmett.data.prepare.tokenizer import train_sentencepiece
from nemo_emmett.export import export_model
from nemo_emmett.mammoth.meta.expand import expand
from nemo_emmett.mammoth.meta.schema import parse_meta_config
from nemo_emmett.mammoth.tasks import ModularTaskConfig, check_task_data
from nemo_emmett.modules.perception import PerceptionConfig, build_perception
from nemo_emmett.startup import resolve_run
from tests.conftest import LINES, write_text_source
from tests.mammoth.test_modular import modular_cfg
from tests.test_export import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def source(name, path, src="en", tgt="de", task="mt"):
    return {"name": name, "path": str(path), "task": task, "source_lang": src, "target_lang": tgt}


# ---- 1. a modular task that no training source reaches ------------------------------------------------
def run_cfg(spm_path, sources, tasks=None):
    model = modular_cfg(spm_path) if tasks is None else modular_cfg(spm_path, tasks=tasks)
    return OmegaConf.create({"model_class": "nemo_emmett.mammoth.modular.ModularTranslation", "model": model,
                             "data": {"train_sources": sources, "validation_sources": []}})


def test_modular_task_without_training_data_is_an_error_naming_it(spm_path, tmp_path):
    en_de = write_text_source(tmp_path / "mt_en-de", "a", 5)
    de_en = write_text_source(tmp_path / "mt_de-en", "b", 5, src="de", tgt="en")
    sources = [source("a", en_de), source("b", de_en, "de", "en")]  # the table's mt_en-fr has none
    with pytest.raises(ValueError, match=r"model\.modular\.tasks\[2\] \('mt_en-fr', direction mt:en-fr\): no "
                                         r"training source.*\['mt:de-en', 'mt:en-de'\].*zero_shot: true"):
        resolve_run(run_cfg(spm_path, sources))
    fr = write_text_source(tmp_path / "mt_en-fr", "c", 5, tgt="fr")
    run = resolve_run(run_cfg(spm_path, [*sources, source("c", fr, "en", "fr")]))  # every task has data
    assert len(run.data.train_sources) == 3


def test_zero_shot_task_is_warned_and_a_trained_one_may_not_say_so(caplog):
    tasks = [ModularTaskConfig(name="mt_en-de", source_lang="en", target_lang="de"),
             ModularTaskConfig(name="mt_en-fr", source_lang="en", target_lang="fr", zero_shot=True)]
    with caplog.at_level(logging.WARNING, logger="nemo_emmett.mammoth.tasks"):
        assert check_task_data(tasks, ["mt:en-de"]) == ["mt_en-fr"]
    assert "'mt_en-fr'" in caplog.text and "zero_shot" in caplog.text
    with pytest.raises(ValueError, match=r"tasks\[1\] \('mt_en-fr'.*zero_shot: true, but data\.train_sources"):
        check_task_data(tasks, ["mt:en-de", "mt:en-fr"])


def test_meta_config_marks_zero_weight_tasks_zero_shot(tmp_path):
    for s, t in (("en", "de"), ("en", "fr")):
        for lang in (s, t):
            (tmp_path / f"{s}-{t}").mkdir(exist_ok=True)
            (tmp_path / f"{s}-{t}/train.{lang}").write_text("x\ny\n")
    x = expand(parse_meta_config(meta(tmp_path, ["en", "de", "fr"], weights={"mt_en-de": 1, "mt_en-fr": 0})))
    assert {t.name: t.zero_shot for t in x.tasks} == {"mt_en-de": False, "mt_en-fr": True}
    assert check_task_data(x.tasks, ["mt:en-de"]) == ["mt_en-fr"]  # what the generated config trains


# ---- 2. a folder whose name or marker says another direction ------------------------------------------
def test_folder_name_and_source_disagree_on_the_target_language(tmp_path):
    folder = write_text_source(tmp_path / "mt_en-fr", "x", 3, tgt="de")  # name: en-fr; no summary in the marker
    with pytest.raises(ValueError, match=r"data\.train_sources\[0\]: Shar folder '.*mt_en-fr' holds mt:en-fr \(by "
                                         r"its name\), but the source says mt:en-de \(target_lang: 'de' but the folder "
                                         r"'fr'\); fix data\.train_sources\[0\]\.target_lang"):
        resolve_sources([source("x", folder, tgt="de")], "train_sources")
    assert resolve_sources([source("x", folder, tgt="fr")], "train_sources")[0].target_lang == "fr"
    other = write_text_source(tmp_path / "my_corpus", "y", 3)  # a name that says nothing: not checked
    assert resolve_sources([source("y", other, tgt="fr")], "train_sources")[0].num_examples == 3


def test_marker_and_source_disagree(tmp_path):
    from nemo_emmett.data.prepare.bitext import BitextOptions, prepare_bitext
    from nemo_emmett.data.prepare.output import PrepareOptions

    for lang in ("en", "fr"):
        (tmp_path / f"train.{lang}").write_text("one\ntwo\n")
    [summary] = prepare_bitext(BitextOptions(f"{tmp_path}/train.{{src_lang}}", f"{tmp_path}/train.{{tgt_lang}}",
                                             pairs=[("en", "fr")]),
                               PrepareOptions(dataset="d", out_dir=str(tmp_path / "out"), progress=False))
    folder = Path(summary.path)
    assert folder.name == "mt_en-fr"
    renamed = folder.rename(folder.with_name("data"))  # the name says nothing now; the marker still does
    folder.with_name(folder.name + ".complete.json").rename(renamed.with_name("data.complete.json"))
    with pytest.raises(ValueError, match=r"validation_sources\[0\]: Shar folder '.*data' holds mt:en-fr \(by its "
                                         r"completion marker\).*source_lang: 'de' but the folder 'en'.*target_lang: "
                                         r"'en' but the folder 'fr'.*fix data\.validation_sources\[0\]\.source_lang, "
                                         r"data\.validation_sources\[0\]\.target_lang"):
        resolve_sources([source("v", renamed, "de", "en")], "validation_sources")


# ---- 3. a meta-config language without data -----------------------------------------------------------
def meta(root: Path, languages, **kw) -> dict:
    return {"name": "toy", "languages": languages, "shar_root": str(root / "out"),
            "corpora": [{"name": "bi", "kind": "bitext", "src": f"{root}/{{lang_pair}}/train.{{src_lang}}",
                         "tgt": f"{root}/{{lang_pair}}/train.{{tgt_lang}}"}], **kw}


def test_meta_config_language_without_data_is_warned_naming_it_and_the_folders(tmp_path, caplog):
    for lang in ("en", "de"):
        (tmp_path / "en-de").mkdir(exist_ok=True)
        (tmp_path / f"en-de/train.{lang}").write_text("x\n")
    with caplog.at_level(logging.WARNING, logger="nemo_emmett.mammoth.meta.expand"):
        x = expand(parse_meta_config(meta(tmp_path, ["en", "de", "it"])))
    assert [t.name for t in x.tasks] == ["mt_en-de"] and x.languages_without_data == ["it"]
    assert "languages: ['it'] have no data in any corpus and are left out" in caplog.text
    assert f"corpora[0] ('bi', pairs: all): src '{tmp_path}/{{lang_pair}}/train.{{src_lang}}'" in caplog.text
    caplog.clear()
    assert expand(parse_meta_config(meta(tmp_path, ["en", "de"]))).languages_without_data == []
    assert "no data" not in caplog.text


# ---- 4, 5. translate: a target language the model never saw, an empty audio file ----------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("mismatch_model")
    spm = train_sentencepiece(LINES * 3, vocab_size=60, key={"test": "mismatch"}, out_dir=root / "spm",
                              user_defined_symbols=["<de>", "<en>"])
    return export_model(tiny_model(spm), root / "tiny.emmett")


def test_translate_to_an_unknown_target_language_is_an_error_listing_the_known(exported, capsys, monkeypatch):
    decoded = []
    monkeypatch.setattr("nemo_emmett.inference.translate_examples", lambda *a, **k: decoded.append(1) or [""])
    rc = translate_cli.main(["--model", str(exported), "--text", "one hundred", "--source-lang", "en",
                             "--target-lang", "xx", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and not decoded, err
    assert "target language 'xx' (mt:en-xx): the model never saw it; it knows ['de', 'en']" in err
    assert translate_cli.main(["--model", str(exported), "--text", "one", "--source-lang", "en",
                               "--target-lang", "de", "--no-progress"]) == 0 and decoded


def test_translate_with_a_modular_model_names_the_unknown_direction_and_its_tasks(spm_path, tmp_path, capsys):
    from nemo_emmett.mammoth.modular import ModularTranslation

    path = export_model(ModularTranslation(modular_cfg(spm_path)), tmp_path / "modular.emmett")
    rc = translate_cli.main(["--model", str(path), "--text", "one", "--source-lang", "en", "--target-lang", "es",
                             "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "the model has no task for ['mt:en-es']; its tasks: ['mt:de-en', 'mt:en-de', 'mt:en-fr']" in err


def test_translate_an_empty_audio_file_names_it(exported, tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype="float32"), 16000)
    rc = translate_cli.main(["--model", str(exported), "--audio", str(empty), "--source-lang", "en",
                             "--target-lang", "de", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"audio file {str(empty)!r} has no samples" in err and "IndexError" not in err


# ---- 6. perception.pretrained_asr that is not a .nemo archive -----------------------------------------
def test_pretrained_asr_that_is_not_a_nemo_archive_names_the_path(tmp_path):
    garbage = tmp_path / "asr.nemo"
    garbage.write_bytes(b"this is not a tar archive\n" * 40)
    with pytest.raises(ValueError, match=rf"perception\.pretrained_asr: '{garbage}' is not a \.nemo archive; "
                                         r"expected a NeMo \.nemo archive"):
        build_perception(PerceptionConfig(pretrained_asr=str(garbage)), output_dim=8, vocab_size=10)
