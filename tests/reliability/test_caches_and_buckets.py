"""Caches and buckets (issue #14, points 3 and 8): a cache is keyed by everything its result depends
on (a folder re-prepared in place trains a new tokenizer), an example some bucket holds is never
dropped, and an example too long for the batch budget is named with its source. One test per case."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
from omegaconf import OmegaConf

from nemo_emmett.data.bucketing import BucketGrid
from nemo_emmett.data.config import BucketConfig, parse_data_config
from nemo_emmett.data.examples import example_id, make_text_example
from nemo_emmett.data.lengths import LengthMeasure
from nemo_emmett.data.marker import marker_path
from nemo_emmett.data.plan import build_plan, resolve_buckets, resolve_sources
from nemo_emmett.data.prepare.bitext import BitextOptions, prepare_bitext
from nemo_emmett.data.prepare.output import PrepareOptions
from nemo_emmett.data.prepare.tokenizer import tokenizer_for_sources
from nemo_emmett.data.sampler import Bucketing2DSampler
from nemo_emmett.data.shar import ExampleSharWriter, content_key, read_shar_dir
from nemo_emmett.oomptimizer.cache import cache_key
from nemo_emmett.oomptimizer.config import OOMptimizerConfig
from nemo_emmett.oomptimizer.measure import ProbeSetting, cache_fields
from tests.conftest import WordLengthIds

OLD = (["one two three", "a small dog", "the red house"], ["eins zwei drei", "ein kleiner Hund", "das rote Haus"])
NEW = (["big street", "white bread", "cold beer"], ["große Straße", "weißes Brötchen", "kühles Bier"])


def prepare(tmp_path: Path, lines: tuple[list[str], list[str]], *, overwrite: bool = False) -> Path:
    """``mt_en-de`` prepared from ``lines`` (in place over an earlier one with ``overwrite``)."""
    for lang, text in zip(("en", "de"), lines):
        (tmp_path / "c").mkdir(exist_ok=True)
        (tmp_path / f"c/train.{lang}").write_text("".join(t + "\n" for t in text))
    prepare_bitext(BitextOptions(f"{tmp_path}/c/train.{{src_lang}}", f"{tmp_path}/c/train.{{tgt_lang}}",
                                 pairs=[("en", "de")]),
                   PrepareOptions(dataset="toy", out_dir=str(tmp_path / "out"), progress=False, overwrite=overwrite))
    return tmp_path / "out/toy/mt_en-de"


def specs(folder: Path, **kw):
    return resolve_sources([{"name": "s", "path": str(folder), "task": "mt", "source_lang": "en",
                             "target_lang": "de"}], "train_sources", **kw)


@pytest.fixture
def trainings(tmp_path, monkeypatch) -> list[str]:
    """Counts SentencePiece trainings (their model prefixes); the cache goes under tmp_path."""
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    calls, train = [], spm.SentencePieceTrainer.train

    def counting(*args, **kw):
        calls.append(kw.get("model_prefix"))
        return train(*args, **kw)

    monkeypatch.setattr(spm.SentencePieceTrainer, "train", counting)
    return calls


# 1. A folder re-prepared in place with new text (same path, same example count) trains a new tokenizer
#    that knows the new text; before, the old model was reused and the new words became <unk>.
def test_re_prepared_folder_trains_a_new_tokenizer(tmp_path, trainings):
    folder = prepare(tmp_path, OLD)
    first = tokenizer_for_sources(specs(folder), vocab_size=40, sample_examples=100)
    folder = prepare(tmp_path, NEW, overwrite=True)
    assert specs(folder)[0].num_examples == 3  # what the old key (path, count) saw did not change
    second = tokenizer_for_sources(specs(folder), vocab_size=40, sample_examples=100)
    assert second != first and len(trainings) == 2
    sp = spm.SentencePieceProcessor(model_file=str(second))
    for line in NEW[0] + NEW[1]:
        assert sp.unk_id() not in sp.encode(line), line


# 2. The same content reuses the cached model: no second training.
def test_same_content_reuses_the_tokenizer(tmp_path, trainings):
    folder = prepare(tmp_path, OLD)
    first = tokenizer_for_sources(specs(folder), vocab_size=40, sample_examples=100)
    assert tokenizer_for_sources(specs(folder), vocab_size=40, sample_examples=100) == first
    assert len(trainings) == 1


# 3. The tokenizer settings are in the key: another vocab_size or sample size is another model.
def test_tokenizer_settings_change_the_model(tmp_path, trainings):
    folder = prepare(tmp_path, OLD)
    paths = {tokenizer_for_sources(specs(folder), vocab_size=v, sample_examples=n) for v, n in ((40, 100), (41, 100),
                                                                                                  (40, 1))}
    assert len(paths) == 3 and len(trainings) == 3


# 4. Without a marker (data.allow_incomplete), the key follows the shard files themselves.
def test_unmarked_folder_key_follows_its_shard_files(tmp_path, caplog):
    folder = prepare(tmp_path, OLD)
    marked = content_key(folder)
    assert marked["fingerprint"] and marked["num_examples"] == 3
    marker_path(folder).unlink()
    with caplog.at_level(logging.WARNING):
        before = content_key(folder, allow_incomplete=True)
    shard = folder / "text.000000.jsonl.gz"
    shard.write_bytes(gzip.compress(gzip.decompress(shard.read_bytes()).replace(b"dog", b"cat")))
    assert content_key(folder, allow_incomplete=True) != before


class FakeModel(torch.nn.Module):
    """What :func:`cache_fields` reads of a model: parameters, hparams, the tokenizer's vocab size."""

    def __init__(self, vocab_size: int = 60, dtype: torch.dtype = torch.float32, frozen: bool = False):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab_size, 4, dtype=dtype)
        self.emb.requires_grad_(not frozen)
        self.hparams = {"cfg": {"d_model": 4}}
        self.text = type("Text", (), {"vocab_size": vocab_size})()


# 5. The OOMptimizer key changes with each input the measured memory depends on.
def test_oomptimizer_key_covers_what_memory_depends_on():
    bins = {"text": [(10.0, 12.0)]}
    setting = ProbeSetting(device=torch.device("cpu"), precision="32")
    cfg = OOMptimizerConfig()

    def key(model=None, bins=bins, setting=setting, budget=2**30):
        return cache_key(cache_fields(model or FakeModel(), bins, setting, cfg, budget=budget, margin=0))

    base = key()
    assert key() == base
    changed = {
        "vocab size (same config, another tokenizer)": key(FakeModel(vocab_size=61)),
        "parameter dtype": key(FakeModel(dtype=torch.bfloat16)),
        "frozen parameters": key(FakeModel(frozen=True)),
        "bins": key(bins={"text": [(10.0, 13.0)]}),
        "precision": key(setting=ProbeSetting(device=torch.device("cpu"), precision="bf16-mixed")),
        "budget": key(budget=2**31),
    }
    assert [k for k, v in changed.items() if v == base] == []


def write_source(path: Path, pairs: list[tuple[int, int]]) -> Path:
    """A text source whose example ``x-i`` has ``pairs[i]`` (input, output) words."""
    with ExampleSharWriter(path, kind="text", shard_size=100) as w:
        for i, (n_in, n_out) in enumerate(pairs):
            w.write(make_text_example(example_id=f"x-{i}", source_text=" ".join(["w"] * n_in),
                                      target_text=" ".join(["v"] * n_out), source_lang="en", target_lang="de",
                                      dataset="toy"))
    return path


# 6. Default outliers: an example that fits a larger bucket than its input bin's (17, 33 -> (46, 50))
#    is kept; only what no bucket holds is dropped, counted and logged with the largest edges.
def test_example_fitting_a_larger_bucket_is_kept_by_default(tmp_path, caplog):
    assert BucketConfig().outliers == "nearest" == parse_data_config({}).text_buckets.outliers
    mb, _ = resolve_buckets("text", BucketConfig(bins=[[20, 12], [20, 30], [46, 50]]), np.zeros((0, 2)))
    assert mb.grid.select(17, 33) == 2
    folder = write_source(tmp_path / "s", [(17, 33), (5, 5), (70, 70)])
    sampler = Bucketing2DSampler(buckets={"text": mb}, finite_source=iter(read_shar_dir(folder)),
                                 measure=LengthMeasure(lambda t: len(t.split()), token_equivalent_duration=0.1))
    with caplog.at_level(logging.WARNING):
        ids = sorted(example_id(e) for b in sampler for e in b.examples)
    assert ids == ["x-0", "x-1"]
    assert sampler.stats.dropped_no_bucket["text"] == 1
    assert "fit no bucket (the largest edges: input 46.0, output 50.0)" in caplog.text
    assert "input 70.0, output 70.0" in caplog.text


# 7. One very long line (2,500 tokens) no longer fails setup on max_padded_size: it is left out of the
#    estimated bins with a warning naming its source and id, and dropped (counted) in training.
def test_overlong_line_is_named_and_left_out_of_estimated_bins(tmp_path, caplog):
    folder = write_source(tmp_path / "s", [(3 + i % 7, 4 + i % 5) for i in range(40)] + [(2500, 3)])
    cfg = parse_data_config({"train_sources": [{"name": "long", "path": str(folder), "task": "mt",
                                                "source_lang": "en", "target_lang": "de"}]})
    with caplog.at_level(logging.WARNING):
        plan = build_plan(cfg, WordLengthIds())
    assert max(i + o for i, o in plan.buckets["text"].grid.bins) <= cfg.text_buckets.max_padded_size
    assert plan.estimates["text"].num_outliers == 1
    assert f"source 'long' ('{folder}') example 'x-40' (input 2500" in caplog.text
    assert plan.buckets["text"].grid.select(2500, 4) is None  # the sampler drops and counts it


# 8. Bins that still exceed the budget (given ones) raise an error naming where they come from, the
#    longest example in them (source, path, id) and the fix.
def test_bins_over_the_budget_name_the_example_and_the_fix(tmp_path):
    folder = write_source(tmp_path / "s", [(4, 4)] * 5 + [(2500, 3)])
    cfg = parse_data_config({"train_sources": [{"name": "long", "path": str(folder), "task": "mt",
                                                "source_lang": "en", "target_lang": "de"}],
                             "text_buckets": {"bins": [[10, 10], [3000, 10]]}})
    with pytest.raises(ValueError, match=rf"data\.text_buckets \(data\.text_buckets\.bins\): max_padded_size=2000\.0 "
                                         rf".*\(3000\.0, 10\.0\).*source 'long' \('{folder}'\) example 'x-5' \(input 2500"
                                         r".*max_input / max_output.*raise max_padded_size"):
        build_plan(cfg, WordLengthIds())


# 9. Integer bins are accepted through the real config path (a Hydra override on the composed config,
#    and YAML), held as floats; a malformed pair names its index.
def test_integer_bins_are_accepted_from_yaml_and_overrides():
    from nemo_emmett.config_store import compose_config

    conf = Path(__file__).resolve().parents[2] / "nemo_emmett" / "conf"
    composed = compose_config("salm_t5", ["data.text_buckets.bins=[[10,12],[20,30]]"], config_dir=conf)
    assert parse_data_config(composed.data).text_buckets.bins == [[10.0, 12.0], [20.0, 30.0]]
    from_yaml = parse_data_config(OmegaConf.create("audio_buckets:\n  bins: [[5, 8], [9.5, 20]]\n"))
    assert from_yaml.audio_buckets.bins == [[5.0, 8.0], [9.5, 20.0]]
    assert BucketGrid(from_yaml.audio_buckets.bins).bins == [(5.0, 8.0), (9.5, 20.0)]
    with pytest.raises(Exception, match=r"bins\[1\]: expected \[max_input, max_output\] \(two numbers\), got \[7\]"):
        parse_data_config({"text_buckets": {"bins": [[5, 8], [7]]}})
