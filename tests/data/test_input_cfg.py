"""``data.input_cfg``: NeMo's dataset list accepted beside our sources, with NeMo's weights and tags."""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pytest

from nemo_emmett.data.config import DataConfig, parse_data_config
from nemo_emmett.data.input_cfg import flatten_input_cfg, nemo_reweight
from nemo_emmett.data.marker import marker_path
from nemo_emmett.data.multiplexer import Multiplexer
from nemo_emmett.data.plan import build_plan
from nemo_emmett.data.shar import list_shards
from nemo_emmett.data.stream import ShardedStream
from nemo_emmett.startup import resolve_sources
from tests.conftest import REPO, WordLengthIds, write_text_source


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))


def shar(path, lang="de", **tags):
    return {"type": "lhotse_shar", "shar_path": str(path), "tags": {"task": "mt", "source_lang": "en",
                                                                     "target_lang": lang, **tags}}


def draws(plan, n=400):
    streams = [ShardedStream(s.name, list_shards(s.path), seed=7) for s in plan.train]
    mux = Multiplexer(streams, plan.weights, seed=7)
    return [ex.custom["id"] for ex in itertools.islice(mux, n)]


def test_nested_groups_give_nemo_shares_and_the_same_stream_as_our_own_config(tmp_path):
    a, b, c = (write_text_source(tmp_path / k, k, 60, seed=i, tgt=t) for i, (k, t) in
               enumerate([("a", "de"), ("b", "fr"), ("c", "es")]))
    input_cfg = [
        {"type": "group", "weight": 0.7, "tags": {"dataset": "news"}, "input_cfg": [
            {**shar(a), "weight": 0.6, "name": "a"}, {**shar(b, "fr"), "weight": 0.4, "name": "b"}]},
        {**shar(c, "es", dataset="web"), "weight": 0.3, "name": "c"},
    ]
    nemo = resolve_sources({"input_cfg": input_cfg})
    ours = resolve_sources({"train_sources": [
        {"name": "a", "path": str(a), "task": "mt", "source_lang": "en", "target_lang": "de", "dataset": "news",
         "weight": 0.42},
        {"name": "b", "path": str(b), "task": "mt", "source_lang": "en", "target_lang": "fr", "dataset": "news",
         "weight": 0.28},
        {"name": "c", "path": str(c), "task": "mt", "source_lang": "en", "target_lang": "es", "dataset": "web",
         "weight": 0.3}]})
    strip = [{k: v for k, v in s.items() if k != "weight"} for s in nemo.train_sources]
    assert strip == [{k: v for k, v in s.items() if k != "weight"} for s in ours.train_sources]
    np.testing.assert_allclose([s["weight"] for s in nemo.train_sources], [0.42, 0.28, 0.3])
    plans = [build_plan(cfg, WordLengthIds()) for cfg in (nemo, ours)]
    np.testing.assert_allclose(plans[0].weights, plans[1].weights)
    stream = draws(plans[0])
    assert stream == draws(plans[1])
    shares = [sum(i.startswith(f"{k}-") for i in stream) / len(stream) for k in "abc"]
    np.testing.assert_allclose(shares, [0.42, 0.28, 0.3], atol=0.01)  # the stationary mix holds NeMo's shares


def test_reweight_temperature_is_nemos_formula_per_level():
    from nemo.collections.common.data.lhotse.cutset import temperature_reweighting

    for t in (0.0, 0.5, 1.0, 2.0):
        np.testing.assert_allclose(nemo_reweight([197, 2159, 40], t), temperature_reweighting([197, 2159, 40], t))
    tree = [{"type": "group", "weight": 9, "input_cfg": [{**shar("x"), "weight": 1}, {**shar("y"), "weight": 3}]},
            {**shar("z"), "weight": 1}]
    top = temperature_reweighting([9, 1], 0.5)
    got = [e.weight for e in flatten_input_cfg(tree, [0.5, 0.0])]  # outer level T=0.5, inner equalised
    np.testing.assert_allclose(got, [top[0] / 2, top[0] / 2, top[1]])
    got = [e.weight for e in flatten_input_cfg(tree, 2.0)]  # a scalar is every level's, as NeMo broadcasts it
    top, inner = temperature_reweighting([9, 1], 2.0), temperature_reweighting([1, 3], 2.0)
    np.testing.assert_allclose(got, [top[0] * inner[0], top[0] * inner[1], top[1]])
    deep = [{"type": "group", "weight": 1, "input_cfg": [
        {"type": "group", "weight": 1, "input_cfg": [{**shar("x"), "weight": 1}, {**shar("y"), "weight": 3}]},
        {**shar("z"), "weight": 1}]}, {**shar("q"), "weight": 1}]
    np.testing.assert_allclose([e.weight for e in flatten_input_cfg(deep)], [1 / 16, 3 / 16, 1 / 4, 1 / 2])
    with pytest.raises(ValueError, match=r"reweight_temperature: expected a number or a list of 2 numbers"):
        flatten_input_cfg(tree, [0.5])


def test_tags_carry_task_and_languages_an_outer_group_winning_as_in_nemo():
    tree = [{"type": "group", "tags": {"task": "ast", "src_lang": "en"}, "input_cfg": [
        {"type": "nemo", "manifest_filepath": "m.json", "tags": {"tgt_lang": "de", "src_lang": "fr", "dataset": "cv"}},
        {"type": "nemo", "manifest_filepath": "n.json", "tags": {"task": "asr", "tgt_lang": "it"}}]}]
    from nemo_emmett.data.input_cfg import source_fields

    first, second = flatten_input_cfg(tree)
    assert source_fields(first) == {"task": "st", "source_lang": "en", "target_lang": "de", "dataset": "cv"}
    assert source_fields(second) == {"task": "st", "source_lang": "en", "target_lang": "it", "dataset": "default"}
    assert first.weight == second.weight == 0.5  # no weights: equal shares, as lhotse's mux without weights


def test_size_temperature_is_ours_and_temperature_its_deprecated_spelling(caplog):
    with caplog.at_level(logging.WARNING, logger="nemo_emmett.data.config"):
        assert parse_data_config({"temperature": 3.0}).size_temperature == 3.0
    assert "data.temperature is deprecated" in caplog.text
    with pytest.raises(ValueError, match="give only data.size_temperature"):
        DataConfig(temperature=2.0, size_temperature=3.0)
    with pytest.raises(ValueError, match="reweight_temperature applies to data.input_cfg only"):
        resolve_sources({"reweight_temperature": 0.5, "train_sources": []})


@pytest.mark.parametrize(("tree", "message"), [
    ([{"type": "parquet", "shar_path": "x"}],
     r"data.input_cfg\[0\].type: 'parquet' is not supported here; supported: group, lhotse_shar, nemo, "
     r"nemo_tarred, txt_pair"),
    ([{"type": "group", "weight": 1, "input_cfg": [{**shar("x"), "weight": 0}, {**shar("y"), "weight": 0.0}]},
      {**shar("z"), "weight": 1}],
     r"data.input_cfg\[0\].input_cfg: the weights of this list sum to zero \(\[0.0, 0.0\]\)"),
    ([{**shar("x"), "weight": 1}, shar("y")], r"give a weight to every entry .* without one: \['data.input_cfg\[1\]'\]"),
    ([{**shar("x"), "weight": -1}], r"data.input_cfg\[0\].weight: expected a finite number >= 0, got int -1"),
    ([{"type": "nemo_tarred", "manifest_filepath": "m.json"}], r"needs manifest_filepath, tarred_audio_filepaths"),
    ([{**shar("x"), "shuffle_buffer": 3}], r"data.input_cfg\[0\]: unknown key\(s\) \['shuffle_buffer'\]"),
])
def test_bad_input_cfg_is_an_error_naming_the_entry(tree, message):
    with pytest.raises(ValueError, match=message):
        flatten_input_cfg(tree)


def test_both_source_lists_at_once_is_an_error(tmp_path):
    a = write_text_source(tmp_path / "a", "a", 5)
    with pytest.raises(ValueError, match="data.train_sources and data.input_cfg are both given"):
        resolve_sources({"input_cfg": [shar(a)], "train_sources": [
            {"name": "a", "path": str(a), "task": "mt", "source_lang": "en", "target_lang": "de"}]})


def test_input_cfg_from_a_yaml_file_and_our_folder_used_in_place(tmp_path):
    a = write_text_source(tmp_path / "a", "a", 5)
    listing = tmp_path / "input_cfg.yaml"
    listing.write_text(json.dumps([shar(a)]))  # JSON is YAML
    cfg = resolve_sources({"input_cfg": str(listing)})
    assert cfg.train_sources[0]["path"] == str(a) and cfg.train_sources[0]["name"] == "default.mt_en-de"
    assert cfg.input_cfg is None  # resolved into train_sources: resolving again keeps them
    assert resolve_sources(cfg).train_sources == cfg.train_sources
    assert marker_path(a).is_file() and not (tmp_path / "cache" / "input_cfg").exists()


def test_input_cfg_composes_from_a_hydra_override():
    from nemo_emmett.config_store import compose_config

    cfg = compose_config("salm_t5", ["data.input_cfg=[{type: nemo, manifest_filepath: a.json, weight: 2, tags: "
                                     "{lang: en}}, {type: txt_pair, source_paths: a.en, target_paths: a.de, weight: 1, "
                                     "source_language: en, target_language: de}]", "data.reweight_temperature=0"],
                         config_dir=REPO / "nemo_emmett" / "conf")
    data = parse_data_config(cfg.data)
    assert [(e.type, e.weight) for e in flatten_input_cfg(data.input_cfg, data.reweight_temperature)] == [
        ("nemo", 0.5), ("txt_pair", 0.5)]  # T=0 equalises the weights 2 and 1
