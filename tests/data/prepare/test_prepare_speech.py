import subprocess

import numpy as np
import pytest

from nemo_emmett.data.examples import example_id, source_text, target_lang, target_text, task
from nemo_emmett.data.prepare.bitext import PrepareOptions
from nemo_emmett.data.prepare.cli import main
from nemo_emmett.data.prepare.speech import SpeechOptions, prepare_speech
from nemo_emmett.data.shar import read_shar_dir

pytestmark = pytest.mark.skipif(subprocess.run(["which", "espeak-ng"], capture_output=True).returncode != 0,
                                reason="espeak-ng is not installed (apt-get install -y espeak-ng)")

EN = ["one small dog", "two red cars", "a man walks"]
DE = ["ein kleiner hund", "zwei rote autos", "ein mann geht"]
FR = ["un petit chien", "deux voitures rouges", "un homme marche"]


@pytest.fixture
def corpus(tmp_path):
    for lang, lines in (("en", EN), ("de", DE), ("fr", FR)):
        (tmp_path / f"train.{lang}").write_text("\n".join(lines) + "\n")
    return tmp_path


def options(corpus, **kw):
    return SpeechOptions(src_template=str(corpus / "train.{src_lang}"), tgt_template=str(corpus / "train.{tgt_lang}"),
                         pairs=[("en", "de"), ("en", "fr")], **kw)


def test_speech_folders_share_one_clip_per_line(corpus, tmp_path):
    summaries = prepare_speech(options(corpus), PrepareOptions(dataset="toy", out_dir=str(tmp_path / "out"),
                                                                progress=False))
    assert sorted(s.name for s in summaries) == ["toy_asr_en-en", "toy_st_en-de", "toy_st_en-fr"]
    folders = {s.name: list(read_shar_dir(s.path)) for s in summaries}
    asr, de, fr = folders["toy_asr_en-en"], folders["toy_st_en-de"], folders["toy_st_en-fr"]
    assert [source_text(c) for c in de] == EN and [target_text(c) for c in de] == DE
    assert [target_text(c) for c in fr] == FR and {target_lang(c) for c in fr} == {"fr"}
    assert [target_text(c) for c in asr] == EN and {task(c) for c in asr} == {"asr"}
    assert len({example_id(c) for cs in folders.values() for c in cs}) == 9
    for a, b in zip(asr, de):
        np.testing.assert_array_equal(a.load_audio(), b.load_audio())
        assert a.duration > 0.3 and np.abs(a.load_audio()).max() > 0.01
    assert all(s.hours > 0 for s in summaries)


def test_cli_speech_and_bad_input(corpus, tmp_path, capsys):
    assert main(["speech", "--src-template", str(corpus / "train.{src_lang}"), "--tgt-template",
                 str(corpus / "train.{tgt_lang}"), "--pairs", "en-de", "--no-asr", "--dataset", "toy",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert (tmp_path / "o" / "toy" / "st_en-de").is_dir() and not (tmp_path / "o" / "toy" / "asr_en-en").exists()
    with pytest.raises(SystemExit) as e:
        main(["speech", "--src-template", str(corpus / "train.{src_lang}"), "--tgt-template",
              str(corpus / "train.{tgt_lang}"), "--pairs", "en-de,fr-de", "--dataset", "x", "--out", str(tmp_path)])
    assert e.value.code == 2 and "one source language" in capsys.readouterr().err
    (corpus / "train.de").write_text("ein kleiner hund\n\nein mann geht\n")
    with pytest.raises(SystemExit) as e:
        main(["speech", "--src-template", str(corpus / "train.{src_lang}"), "--tgt-template",
              str(corpus / "train.{tgt_lang}"), "--pairs", "en-de", "--dataset", "y", "--out", str(tmp_path)])
    assert e.value.code == 2 and "train.en:2" in capsys.readouterr().err
