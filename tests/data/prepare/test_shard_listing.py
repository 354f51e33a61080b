"""Start-up of a ``data.input_cfg`` entry given as NeMo's dict of Shar shard URLs: listed and counted, once."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf
from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.shar import SharWriter

from nemo_emmett.data.shar import ShardReadError, list_shards
from nemo_emmett.data.stream import ShardedStream
from nemo_emmett.startup import resolve_sources

TAGS = {"task": "st", "source_lang": "en", "target_lang": "de"}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))


def foreign_shar(tmp_path, texts):
    """lhotse's own Shar (no marker, the translation in ``custom['answer']``), two cuts a shard."""
    out = tmp_path / "foreign"
    out.mkdir()
    with SharWriter(str(out), fields={"recording": "flac"}, shard_size=2) as w:
        for i, text in enumerate(texts):
            sf.write(tmp_path / f"{i}.wav", np.zeros(4000, dtype=np.int16), 16000, subtype="PCM_16")
            rec = Recording.from_file(tmp_path / f"{i}.wav", recording_id=f"u{i}")
            w.write(MonoCut(id=f"u{i}", start=0, duration=rec.duration, channel=0, recording=rec,
                            supervisions=[SupervisionSegment(f"u{i}", f"u{i}", 0, rec.duration, text=text)],
                            custom={"answer": text.upper()}))
    return out


def entry(url, shards, **extra):
    return {"type": "lhotse_shar", "name": "cv", "tags": TAGS, **extra,
            "shar_path": {"cuts": [f"{url}/cuts.{k:06d}.jsonl.gz" for k in range(shards)],
                          "recording": [f"{url}/recording.{k:06d}.tar" for k in range(shards)]}}


def test_counts_are_what_the_stream_gives_and_the_listing_is_reused(tmp_path, http_folder):
    url, requested = http_folder(foreign_shar(tmp_path, ["a", "", "c", "d", "e"]))  # one cut without text
    (spec,) = resolve_sources({"input_cfg": [entry(url, 3)]}).train_sources
    assert spec["num_examples"] == 4
    stream = ShardedStream("cv", list_shards(spec["path"]), seed=0, shuffle=False, infinite=False)
    assert [e.custom["source_id"] for e in stream] == ["u0", "u2", "u3", "u4"]
    requested.clear()
    (again,) = resolve_sources({"input_cfg": [entry(url, 3)]}).train_sources
    assert again["path"] == spec["path"] and requested == []  # the cached listing: nothing read again


def test_an_unreachable_cuts_url_at_start_up_is_an_error_naming_it_and_the_source(tmp_path, http_folder):
    url, _ = http_folder(foreign_shar(tmp_path, ["a", "b", "c"]))
    bad = entry(url, 2)
    bad["shar_path"]["cuts"][1] = f"{url}/missing.000001.jsonl.gz"
    with pytest.raises(ShardReadError, match=rf"source 'cv', cannot read shard 1 \('{url}/missing.000001.jsonl.gz'\)"
                                             r": HTTPError: 404 Client Error"):
        resolve_sources({"input_cfg": [bad]})
    assert not list((tmp_path / "cache").rglob("*.shards.json"))  # no listing of an unchecked source


def test_fields_with_different_shard_counts_are_named(tmp_path, http_folder):
    url, _ = http_folder(foreign_shar(tmp_path, ["a", "b", "c"]))
    bad = entry(url, 2)
    bad["shar_path"]["recording"] = bad["shar_path"]["recording"][:1]
    with pytest.raises(ValueError, match=r"data.input_cfg\[0\].shar_path: its fields list different numbers of "
                                         r"shards \(\{'cuts': 2, 'recording': 1\}\)"):
        resolve_sources({"input_cfg": [bad]})


def test_local_shard_files_in_the_dict_are_streamed_in_place_and_missing_ones_named(tmp_path):
    folder = foreign_shar(tmp_path, ["a", "b", "c"])
    (spec,) = resolve_sources({"input_cfg": [entry(str(folder), 2)]}).train_sources
    assert spec["path"].endswith(".shards.json") and list_shards(spec["path"])[1].paths["recording"] == str(
        folder / "recording.000001.tar")
    assert not list((tmp_path / "cache").rglob("*.tar"))
    first = next(itertools.islice(ShardedStream("cv", list_shards(spec["path"]), seed=0, shuffle=False), 1))
    assert first.load_audio().shape == (1, 4000)
    with pytest.raises(FileNotFoundError, match=r"shar_path: 2 shard file\(s\) missing: \[.*cuts.000002.jsonl.gz', .*recording.000002.tar'\]"):
        resolve_sources({"input_cfg": [entry(str(folder), 3)]})


def test_num_examples_applies_to_listed_shards_only(tmp_path):
    folder = foreign_shar(tmp_path, ["a"])
    with pytest.raises(ValueError, match=r"data.input_cfg\[0\].num_examples: applies to a shar_path given as a dict"):
        resolve_sources({"input_cfg": [{"type": "lhotse_shar", "shar_path": str(folder), "tags": TAGS,
                                        "num_examples": 3}]})
    with pytest.raises(ValueError, match=r"data.input_cfg\[0\].num_examples: expected an integer > 0, got 0"):
        resolve_sources({"input_cfg": [entry(str(folder), 1, num_examples=0)]})
