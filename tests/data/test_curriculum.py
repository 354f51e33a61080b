"""Curriculum: a source joins the mix at a draw count (``introduce_at_step`` converted by the pipeline)."""

import copy
import itertools

import numpy as np
import pytest

from nemo_emmett.data.bucketing import BucketGrid
from nemo_emmett.data.datamodule import EmmettDataModule
from nemo_emmett.data.examples import dataset, example_id
from nemo_emmett.data.lengths import LengthMeasure
from nemo_emmett.data.multiplexer import Multiplexer
from nemo_emmett.data.plan import draws_per_batch, introduce_at_draws
from nemo_emmett.data.sampler import Bucketing2DSampler, ModalityBuckets
from nemo_emmett.data.shar import list_shards
from nemo_emmett.data.sources import SourceSpec
from nemo_emmett.data.stream import ShardedStream
from tests.conftest import WordLengthIds, write_text_source

WEIGHTS = [0.5, 0.3, 0.2]
START = 400  # source "c" joins at this draw


@pytest.fixture
def three_sources(tmp_path):
    return {n: write_text_source(tmp_path / n, n, size, seed=i) for i, (n, size) in
            enumerate((("a", 300), ("b", 200), ("c", 100)))}


def make_mux(paths, introduce=(0, 0, START), seed=3):
    streams = [ShardedStream(n, list_shards(p), seed=seed) for n, p in paths.items()]
    return Multiplexer(streams, WEIGHTS, seed=seed, introduce_at_draw=list(introduce))


def shares(names, lo, hi):
    window = names[lo:hi]
    return {n: window.count(n) / len(window) for n in "abc"}


def test_late_source_is_absent_before_its_draw_and_weighted_after(three_sources):
    names = [dataset(e) for e in itertools.islice(make_mux(three_sources), START + 1000)]
    assert "c" not in names[:START] and names[START:START + 10].count("c") >= 1
    before, after = shares(names, 0, START), shares(names, START + 100, START + 1000)
    # Before: a and b renormalised to 0.625 / 0.375; after: the configured weights.
    assert before["a"] == pytest.approx(0.625, abs=0.01) and before["b"] == pytest.approx(0.375, abs=0.01)
    for n, w in zip("abc", WEIGHTS):
        assert after[n] == pytest.approx(w, abs=0.01)


def test_without_a_curriculum_the_stream_is_unchanged(three_sources):
    ids = lambda m: [example_id(e) for e in itertools.islice(m, 500)]  # noqa: E731
    streams = [ShardedStream(n, list_shards(p), seed=3) for n, p in three_sources.items()]
    assert ids(make_mux(three_sources, introduce=(0, 0, 0))) == ids(Multiplexer(streams, WEIGHTS, seed=3))
    assert ids(make_mux(three_sources)) != ids(make_mux(three_sources, introduce=(0, 0, 0)))


@pytest.mark.parametrize("stop_at", [1, START - 1, START, START + 1, START + 333])
def test_resume_across_the_activation_is_exact(three_sources, stop_at):
    reference = [example_id(e) for e in itertools.islice(make_mux(three_sources), stop_at + 300)]
    mux = make_mux(three_sources)
    head = [example_id(e) for e in itertools.islice(mux, stop_at)]
    resumed = make_mux(three_sources)
    resumed.load_state_dict(copy.deepcopy(mux.state_dict()))
    tail = [example_id(e) for e in itertools.islice(resumed, 300)]
    assert head + tail == reference


def test_sampler_replay_across_the_activation_is_exact(three_sources):
    # The sampler rewinds the multiplexer to a snapshot before the activation and replays through it.
    measure = LengthMeasure(lambda t: len(t.split()), token_equivalent_duration=0.1)
    buckets = {"text": ModalityBuckets(BucketGrid([(10, 10), (10, 25), (25, 25)]), [16, 8, 4])}

    def sampler():
        return Bucketing2DSampler(buckets=buckets, measure=measure, mux=make_mux(three_sources))

    batch_ids = lambda it, n: [[example_id(e) for e in next(it).examples] for _ in range(n)]  # noqa: E731
    reference = batch_ids(iter(sampler()), 120)
    s = sampler()
    it = iter(s)
    head = []
    while s.state_dict()["draw"] <= START + 3:  # stop just after the activation
        head += batch_ids(it, 1)
    state = copy.deepcopy(s.state_dict())
    assert state["snapshot_draw"] < START < state["draw"], "the replay must cross the activation"
    resumed = sampler()
    resumed.load_state_dict(state)
    tail = batch_ids(iter(resumed), 120 - len(head))
    assert head + tail == reference


def test_errors_name_the_problem(three_sources):
    with pytest.raises(ValueError, match="at least one must start at 0"):
        make_mux(three_sources, introduce=(5, 5, 5))
    with pytest.raises(ValueError, match="one draw count >= 0 per source"):
        make_mux(three_sources, introduce=(0, 5))
    with pytest.raises(ValueError, match="source 'x': introduce_at_step must be an integer >= 0, got -1"):
        SourceSpec(name="x", path="p", task="mt", source_lang="en", target_lang="de", introduce_at_step=-1)


def test_draws_per_batch_is_the_occupancy_weighted_harmonic_mean():
    grid = BucketGrid([(10, 10), (20, 20)])
    buckets = {"text": ModalityBuckets(grid, [8, 2]), "audio": ModalityBuckets(BucketGrid([(5, 5)]), [4])}
    lengths = {"text": np.array([[5, 5], [5, 5], [5, 5], [15, 15]]), "audio": np.zeros((0, 2))}
    # text: 3/4 of draws in batches of 8, 1/4 in batches of 2; audio (uniform, one bucket): 4.
    rate = 0.5 * (0.75 / 8 + 0.25 / 2) + 0.5 * (1 / 4)
    assert draws_per_batch(buckets, lengths, {"text": 0.5, "audio": 0.5}) == pytest.approx(1 / rate)
    specs = [SourceSpec(name=n, path="p", task="mt", source_lang="en", target_lang="de", introduce_at_step=s)
             for n, s in (("a", 0), ("b", 100), ("c", 7))]
    assert introduce_at_draws(specs, 6.0, workers_per_rank=2) == [0, 300, 21]
    assert introduce_at_draws(specs, 6.0, workers_per_rank=0) == [0, 600, 42]


def data_cfg(text_sources, late_step):
    sources = [
        {"name": "a", "path": str(text_sources["a"]), "task": "mt", "source_lang": "en", "target_lang": "de"},
        {"name": "b", "path": str(text_sources["b"]), "task": "mt", "source_lang": "en", "target_lang": "fr",
         "introduce_at_step": late_step},
    ]
    return {"train_sources": sources, "validation_sources": sources, "demo": {"enabled": False},
            "tokenizer": {"vocab_size": 40}, "num_workers": 0,
            "text_buckets": {"batch_sizes": [4], "bins": [[100.0, 100.0]], "max_padded_size": None}}


def test_datamodule_introduces_the_source_at_its_step(tmp_path, text_sources, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    dm = EmmettDataModule(data_cfg(text_sources, late_step=25), text=WordLengthIds())
    datasets = [{i.split("-")[0] for i in b.batch.ids} for b in itertools.islice(dm.train_dataloader(), 60)]
    assert dm.plan.introduce_at_draw == [0, 100]  # 25 steps of 4 examples, one worker slot
    assert all(d == {"a"} for d in datasets[:25])
    assert any("b" in d for d in datasets[25:30])
    with pytest.raises(ValueError, match="at least one must start at step 0"):
        cfg = data_cfg(text_sources, late_step=25)
        cfg["train_sources"][0]["introduce_at_step"] = 3
        EmmettDataModule(cfg, text=WordLengthIds()).setup()
