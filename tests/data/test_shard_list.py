"""Shard listings: NeMo's dict of Shar shard URLs streamed in place, like a local folder, never copied."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from nemo_emmett.data.dataset import TrainBatches
from nemo_emmett.data.examples import direction, source_text, target_text
from nemo_emmett.data.plan import build_plan
from nemo_emmett.data.shar import ShardReadError, list_shards
from nemo_emmett.data.stream import ShardedStream
from nemo_emmett.startup import resolve_sources
from tests.conftest import WordLengthIds, write_audio_source

SHARDS = 4
TAGS = {"task": "st", "source_lang": "en", "target_lang": "de", "dataset": "cv"}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def served(tmp_path, http_folder):
    """A 12-example audio Shar folder (4 shards) and the same folder served over http."""
    folder = write_audio_source(tmp_path / "st_en-de", "cv", 3 * SHARDS, shard_size=3)
    url, requested = http_folder(folder)
    return folder, url, requested


def url_entry(url, **extra):
    return {"type": "lhotse_shar", "name": "cv", "tags": TAGS, **extra,
            "shar_path": {"cuts": f"{url}/cuts.00000_OP_0..{SHARDS - 1}_CL_.jsonl.gz",
                          "recording": [f"{url}/recording.{k:06d}.tar" for k in range(SHARDS)]}}


def local_source(folder):
    return {"name": "cv", "path": str(folder), **TAGS}


def batches(cfg, n):
    plan = build_plan(cfg, WordLengthIds())
    data = TrainBatches(specs=plan.train, weights=plan.weights, buckets=plan.buckets, measure=plan.measure, seed=5,
                        text=WordLengthIds())
    return [b.batch for b in itertools.islice(iter(data), n)]


def test_a_training_stream_over_shard_urls_is_the_local_folders_stream_and_nothing_is_copied(served, tmp_path):
    folder, url, requested = served
    remote = resolve_sources({"input_cfg": [url_entry(url)]})
    (spec,) = remote.train_sources
    assert spec["path"].endswith(".shards.json") and spec["num_examples"] == 3 * SHARDS
    assert all(p.endswith(".jsonl.gz") for p in requested)  # start-up read the cuts indices only
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert [p.name for p in cached if p.name != ".lock"] == ["st_en-de.shards.json"]  # no recording tar copied
    got = batches(remote, 8)
    assert any(p.endswith(".tar") for p in requested)  # training read the recordings from the server
    want = batches(resolve_sources({"train_sources": [local_source(folder)]}), 8)
    assert [b.source_texts for b in got] == [b.source_texts for b in want]  # same examples, same order
    assert [b.target_texts for b in got] == [b.target_texts for b in want]
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g.audio, w.audio) and torch.equal(g.audio_lens, w.audio_lens)
        assert {(t, s, g_) for t, s, g_ in zip(g.tasks, g.source_langs, g.target_langs)} == {("st", "en", "de")}


def test_two_slots_read_disjoint_shards_over_http(served):
    _, url, requested = served
    (spec,) = resolve_sources({"input_cfg": [url_entry(url)]}).train_sources
    shards = list_shards(spec["path"])
    assert [s.index for s in shards] == list(range(SHARDS)) and shards[0].paths["recording"].startswith(url)
    seen, tars, ids = [], [], set()
    for slot in range(2):
        requested.clear()
        examples = list(ShardedStream("cv", shards, seed=1, slot=slot, num_slots=2, infinite=False))
        seen.append({e.custom["source_id"] for e in examples})
        ids |= {e.id for e in examples}
        tars.append({p for p in requested if p.endswith(".tar")})
    assert seen[0].isdisjoint(seen[1]) and len(seen[0] | seen[1]) == len(ids) == 3 * SHARDS  # ids unique too
    by_shard = [{int(i.rsplit("-", 1)[1]) // 3 for i in ids} for ids in seen]
    assert by_shard[0].isdisjoint(by_shard[1]) and len(by_shard[0]) == len(by_shard[1]) == 2
    assert tars == [{f"/recording.{k:06d}.tar" for k in b} for b in by_shard]  # each slot fetched its own shards only


def test_resuming_mid_stream_gives_the_same_continuation(served):
    _, url, _ = served
    (spec,) = resolve_sources({"input_cfg": [url_entry(url)]}).train_sources
    stream = ShardedStream("cv", list_shards(spec["path"]), seed=2, shuffle_buffer=2)
    list(itertools.islice(stream, 7))  # mid-shard, mid-epoch
    state = stream.state_dict()
    rest = [e.custom["source_id"] for e in itertools.islice(stream, 20)]  # into the next epochs
    resumed = ShardedStream("cv", list_shards(spec["path"]), seed=2, shuffle_buffer=2)
    resumed.load_state_dict(state)
    assert [e.custom["source_id"] for e in itertools.islice(resumed, 20)] == rest


def test_listed_examples_are_tagged_as_read(served):
    folder, url, _ = served
    tags = {**TAGS, "speaker_set": "a"}
    entry = {**url_entry(url), "tags": tags, "target_text_field": "target_text"}
    (spec,) = resolve_sources({"input_cfg": [entry]}).train_sources
    first = next(iter(ShardedStream("cv", list_shards(spec["path"]), seed=0, shuffle=False)))
    local = next(iter(ShardedStream("cv", list_shards(folder), seed=0, shuffle=False)))
    assert first.id == "cv-en-de-000000-0000001" and first.custom["source_id"] == local.id
    assert (source_text(first), target_text(first), direction(first)) == (source_text(local), target_text(local),
                                                                          "st:en-de")
    assert first.custom["speaker_set"] == "a" and "shard_origin" not in first.custom


def test_an_unreachable_recording_url_is_an_error_naming_it_and_the_source(served):
    _, url, _ = served
    entry = url_entry(url)
    entry["shar_path"]["recording"][2] = f"{url}/gone.000002.tar"
    (spec,) = resolve_sources({"input_cfg": [entry]}).train_sources  # start-up reads no recording
    stream = ShardedStream("cv", list_shards(spec["path"]), seed=0, shuffle=False)
    with pytest.raises(ShardReadError, match=rf"source 'cv', cannot read shard 2 \(.*'{url}/gone.000002.tar'\)"):
        list(itertools.islice(stream, 3 * SHARDS))


def test_given_num_examples_skips_counting_and_a_bad_cuts_url_fails_when_read(served):
    _, url, requested = served
    entry = url_entry(url, num_examples=1000)
    entry["shar_path"]["cuts"] = [f"{url}/cuts.{k:06d}.jsonl.gz" for k in range(SHARDS - 1)] + [f"{url}/no.jsonl.gz"]
    cfg = resolve_sources({"input_cfg": [entry]})
    assert cfg.train_sources[0]["num_examples"] == 1000 and requested == []  # nothing read at start-up
    listing = json.loads(Path(cfg.train_sources[0]["path"]).read_text())
    assert listing["counts"] is None and listing["num_shards"] == SHARDS
    stream = ShardedStream("cv", list_shards(cfg.train_sources[0]["path"]), seed=0, shuffle=False)
    with pytest.raises(ShardReadError, match=rf"source 'cv', cannot read shard 3 \('{url}/no.jsonl.gz'"):
        list(itertools.islice(stream, 3 * SHARDS))
