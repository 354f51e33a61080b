"""``data.input_cfg`` entries that are not our Shar: read through NeMo's readers into cached Shar folders."""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf
from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.shar import SharWriter

import nemo_emmett.data.prepare.nemo_inputs as ni
from nemo_emmett.data.examples import direction, source_text, target_text
from nemo_emmett.data.marker import marker_path
from nemo_emmett.data.shar import read_shar_dir
from nemo_emmett.startup import resolve_sources

SR = 16000


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))


def wav(path, seconds, seed):
    samples = np.random.default_rng(seed).integers(-8000, 8000, int(seconds * SR)).astype(np.int16)
    sf.write(path, samples, SR, subtype="PCM_16")
    return samples.astype(np.float32) / 32768


def write_manifest(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(input_cfg, **data):
    cfg = resolve_sources({"input_cfg": input_cfg, **data})
    return cfg.train_sources, [list(read_shar_dir(s["path"])) for s in cfg.train_sources]


ST_TAGS = {"task": "st", "source_lang": "en", "target_lang": "de", "dataset": "cv", "speaker_set": "a"}


def test_a_nemo_manifest_with_offset_is_read_as_the_offset_segment(tmp_path):
    full = wav(tmp_path / "long.wav", 2.0, seed=1)
    short = wav(tmp_path / "short.wav", 0.5, seed=2)
    manifest = write_manifest(tmp_path / "train.json", [
        {"audio_filepath": "long.wav", "duration": 0.5, "offset": 0.75, "text": "hello world", "target_text": "hallo"},
        {"audio_filepath": str(tmp_path / "short.wav"), "duration": 0.5, "text": "yes", "answer": "ja", "pnc": "no"},
    ])
    sources, (examples,) = train([{"type": "nemo", "manifest_filepath": str(manifest), "tags": ST_TAGS}])
    assert sources[0]["task"] == "st" and sources[0]["num_examples"] == 2 and sources[0]["weight"] == 1.0
    first, second = examples
    np.testing.assert_allclose(first.load_audio()[0], full[12000:20000], atol=1e-6)  # offset 0.75 s, 0.5 s long
    np.testing.assert_allclose(second.load_audio()[0], short, atol=1e-6)
    assert [source_text(e) for e in examples] == ["hello world", "yes"]
    assert [target_text(e) for e in examples] == ["hallo", "ja"]
    assert {direction(e) for e in examples} == {"st:en-de"}
    assert first.custom["dataset"] == "cv" and first.custom["speaker_set"] == "a" and second.custom["pnc"] == "no"


def test_the_conversion_is_cached_and_redone_when_the_manifest_changes(tmp_path, monkeypatch):
    wav(tmp_path / "a.wav", 0.5, seed=1)
    manifest = write_manifest(tmp_path / "m.json", [{"audio_filepath": "a.wav", "duration": 0.5, "text": "hi"}])
    entry = [{"type": "nemo", "manifest_filepath": str(manifest), "tags": {"lang": "en"}}]
    (first,), _ = train(entry)
    assert first["task"] == "asr" and first["target_lang"] == "en"  # no target language: ASR
    calls = []
    real = ni.convert
    monkeypatch.setattr(ni, "convert", lambda *a: calls.append(a) or real(*a))
    (again,), _ = train(entry)
    assert again["path"] == first["path"] and calls == []  # cached: not converted again
    write_manifest(manifest, [{"audio_filepath": "a.wav", "duration": 0.25, "text": "hi there"}])
    os.utime(manifest, ns=(1, 1))
    (changed,), (examples,) = train(entry)
    assert changed["path"] != first["path"] and len(calls) == 1 and source_text(examples[0]) == "hi there"


def write_tarred(tmp_path, shards):
    """NeMo's tarred layout: audio_<k>.tar and manifest_<k>.json (shard_id, audio_filepath = member name)."""
    expected = {}
    for k, names in enumerate(shards):
        rows = []
        with tarfile.open(tmp_path / f"audio_{k}.tar", "w") as tar:
            for j, name in enumerate(names):
                buf = io.BytesIO()
                samples = np.random.default_rng(10 * k + j).integers(-8000, 8000, SR // 2).astype(np.int16)
                sf.write(buf, samples, SR, format="WAV", subtype="PCM_16")
                info = tarfile.TarInfo(name)
                info.size = len(buf.getvalue())
                tar.addfile(info, io.BytesIO(buf.getvalue()))
                rows.append({"audio_filepath": name, "duration": 0.5, "text": f"word {name}",
                             "target_text": f"wort {name}", "shard_id": k})
                expected[f"word {name}"] = samples.astype(np.float32) / 32768
        write_manifest(tmp_path / f"manifest_{k}.json", rows)
    return expected


def test_a_tarred_nemo_manifest_is_read(tmp_path):
    expected = write_tarred(tmp_path, [["a.wav", "b.wav"], ["c.wav"]])
    sources, (examples,) = train([{"type": "nemo_tarred", "manifest_filepath": str(tmp_path / "manifest__OP_0..1_CL_.json"),
                                   "tarred_audio_filepaths": str(tmp_path / "audio__OP_0..1_CL_.tar"), "tags": ST_TAGS}])
    assert sources[0]["num_examples"] == 3
    assert sorted(source_text(e) for e in examples) == sorted(expected)
    for e in examples:
        np.testing.assert_allclose(e.load_audio()[0], expected[source_text(e)], atol=1e-6)
        assert target_text(e) == source_text(e).replace("word", "wort")


def test_a_tarred_manifest_entry_missing_from_its_tar_is_counted_not_lost(tmp_path):
    write_tarred(tmp_path, [["a.wav"]])
    rows = [json.loads(line) for line in (tmp_path / "manifest_0.json").read_text().splitlines()]
    write_manifest(tmp_path / "manifest_0.json", [*rows, {**rows[0], "audio_filepath": "gone.wav"}])
    sources, _ = train([{"type": "nemo_tarred", "manifest_filepath": str(tmp_path / "manifest_0.json"),
                         "tarred_audio_filepaths": str(tmp_path / "audio_0.tar"), "tags": ST_TAGS}])
    marker = json.loads(marker_path(sources[0]["path"]).read_text())
    assert marker["num_examples"] == 1 and marker["skipped"] == {"not_in_tar_or_unreadable": 1}


def test_a_tarred_manifest_whose_tar_files_are_missing_is_an_error_naming_them(tmp_path):
    write_tarred(tmp_path, [["a.wav"], ["b.wav"]])
    (tmp_path / "audio_1.tar").unlink()
    with pytest.raises(FileNotFoundError, match=r"data.input_cfg\[0\].tarred_audio_filepaths: 1 file\(s\) missing: "
                                                r"\['.*audio_1.tar'\]"):
        train([{"type": "nemo_tarred", "manifest_filepath": str(tmp_path / "manifest__OP_0..1_CL_.json"),
                "tarred_audio_filepaths": str(tmp_path / "audio__OP_0..1_CL_.tar"), "tags": ST_TAGS}])


@pytest.mark.parametrize(("row", "message"), [
    ({"audio_filepath": "a.wav", "text": "hi", "target_text": "x"}, r"m.json:2: no field 'duration'"),
    ({"audio_filepath": "a.wav", "duration": 0.5, "text": "hi"}, r"m.json:2: no field 'target_text or answer'"),
    ({"audio_filepath": "a.wav", "duration": -1, "text": "hi", "answer": "x"}, r"m.json:2: duration must be"),
])
def test_a_manifest_line_missing_a_field_is_an_error_naming_file_and_line(tmp_path, row, message):
    wav(tmp_path / "a.wav", 0.5, seed=1)
    manifest = write_manifest(tmp_path / "m.json", [
        {"audio_filepath": "a.wav", "duration": 0.5, "text": "ok", "target_text": "gut"}, row])
    with pytest.raises(ValueError, match=message):
        train([{"type": "nemo", "manifest_filepath": str(manifest), "tags": ST_TAGS}])


def test_txt_pair_is_read_with_its_languages_and_empty_lines_counted(tmp_path):
    (tmp_path / "train.en").write_text("one\ntwo\n\nfour\n")
    (tmp_path / "train.de").write_text("eins\nzwei\ndrei\nvier\n")
    sources, (examples,) = train([{"type": "txt_pair", "source_paths": str(tmp_path / "train.en"),
                                   "target_paths": str(tmp_path / "train.de"), "source_language": "en",
                                   "target_language": "de", "tags": {"dataset": "wmt"}}])
    assert sources[0] | {"path": None} == {"name": "wmt.mt_en-de", "path": None, "task": "mt", "source_lang": "en",
                                            "target_lang": "de", "dataset": "wmt", "weight": 1.0, "num_examples": 3,
                                            "modality": "text", "introduce_at_step": 0, "transforms": None}
    assert [(source_text(e), target_text(e)) for e in examples] == [("one", "eins"), ("two", "zwei"), ("four", "vier")]
    assert json.loads(marker_path(sources[0]["path"]).read_text())["skipped"] == {"empty_text": 1}
    (tmp_path / "train.de").write_text("eins\nzwei\n")
    with pytest.raises(ValueError, match=r"train.en' has 4 lines but .*train.de' has 2"):
        train([{"type": "txt_pair", "source_paths": str(tmp_path / "train.en"), "source_language": "en",
                "target_paths": str(tmp_path / "train.de"), "target_language": "fr"}])


def write_lhotse_shar(tmp_path):
    """A Shar folder as lhotse (and NeMo) write it: no completion marker, the translation in ``custom``."""
    out = tmp_path / "foreign"
    out.mkdir()
    expected = {}
    with SharWriter(str(out), fields={"recording": "flac"}, shard_size=2) as w:
        for i in range(3):
            samples = wav(tmp_path / f"f{i}.wav", 0.5, seed=20 + i)
            rec = Recording.from_file(tmp_path / f"f{i}.wav", recording_id=f"f{i}")
            w.write(MonoCut(id=f"f{i}", start=0, duration=rec.duration, channel=0, recording=rec,
                            supervisions=[SupervisionSegment(f"f{i}", f"f{i}", 0, rec.duration, text=f"text {i}")],
                            custom={"answer": f"text {i}".upper()}))
            expected[f"text {i}"] = samples
    return out, expected


def test_a_foreign_lhotse_shar_is_read_from_a_folder_and_from_nemos_dict_of_shard_paths(tmp_path):
    folder, expected = write_lhotse_shar(tmp_path)
    fields = {"cuts": [str(folder / f"cuts.00000{k}.jsonl.gz") for k in range(2)],
              "recording": str(folder / "recording.00000_OP_0..1_CL_.tar")}
    sources, both = train([{"type": "lhotse_shar", "shar_path": str(folder), "tags": ST_TAGS, "weight": 3},
                           {"type": "lhotse_shar", "shar_path": fields, "tags": ST_TAGS, "weight": 1}])
    assert [s["weight"] for s in sources] == [0.75, 0.25] and sources[1]["name"] == "cv.st_en-de#2"
    for examples in both:
        assert sorted(source_text(e) for e in examples) == sorted(expected)
        for e in examples:
            np.testing.assert_allclose(e.load_audio()[0], expected[source_text(e)], atol=1e-4)
            assert target_text(e) == source_text(e).upper()
    with pytest.raises(ValueError, match=r"shar_path: 's3://bucket/shar' is a URL of a folder, which cannot be listed"):
        train([{"type": "lhotse_shar", "shar_path": "s3://bucket/shar", "tags": ST_TAGS}])


def test_shard_urls_are_read_through_lhotse(tmp_path, http_folder):
    """NeMo's dict form with URLs (here http from a local server: no network) is read by lhotse's ``open_best``."""
    folder, expected = write_lhotse_shar(tmp_path)
    url, _ = http_folder(folder)
    fields = {"cuts": f"{url}/cuts.00000_OP_0..1_CL_.jsonl.gz", "recording": f"{url}/recording.00000_OP_0..1_CL_.tar"}
    _, (examples,) = train([{"type": "lhotse_shar", "shar_path": fields, "tags": ST_TAGS}])
    assert sorted(source_text(e) for e in examples) == sorted(expected)
