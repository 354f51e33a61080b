import copy
import itertools

import pytest

from nemo_emmett.data.bucketing import BucketGrid
from nemo_emmett.data.examples import example_id
from nemo_emmett.data.lengths import LengthMeasure
from nemo_emmett.data.multiplexer import Multiplexer
from nemo_emmett.data.sampler import Bucketing2DSampler, ModalityBuckets
from nemo_emmett.data.shar import list_shards, read_shar_dir
from nemo_emmett.data.stream import ShardedStream
from tests.conftest import write_audio_source

WORDS = LengthMeasure(lambda t: len(t.split()), token_equivalent_duration=0.1)
TEXT_BUCKETS = ModalityBuckets(BucketGrid([(5, 5), (5, 20), (20, 10), (20, 20)]), [8, 4, 4, 2])


def finite_sampler(paths, buckets, outliers="drop"):
    items = itertools.chain.from_iterable(read_shar_dir(p) for p in paths)
    buckets = {m: ModalityBuckets(BucketGrid(b.grid.bins, outliers=outliers), b.batch_sizes) for m, b in buckets.items()}
    return Bucketing2DSampler(buckets=buckets, measure=WORDS, finite_source=items)


def test_finite_pass_loses_and_duplicates_nothing(text_sources):
    sampler = finite_sampler(text_sources.values(), {"text": TEXT_BUCKETS})
    ids = [example_id(e) for b in sampler for e in b.examples]
    assert len(ids) == len(set(ids)) == 420
    assert sampler.stats.dropped_no_bucket["text"] == 0


def test_examples_that_fit_no_bucket_are_counted(text_sources):
    small = {"text": ModalityBuckets(BucketGrid([(5, 5), (10, 10)]), [4, 2])}
    sampler = finite_sampler(text_sources.values(), small)
    emitted = sum(len(b.examples) for b in sampler)
    dropped = sampler.stats.dropped_no_bucket["text"]
    assert dropped > 0 and emitted + dropped == 420
    assert sampler.stats.emitted["text"] == emitted


def test_nearest_policy_keeps_examples_a_strict_grid_drops(text_sources):
    grid = {"text": ModalityBuckets(BucketGrid([(5, 5), (20, 10), (20, 20)]), [8, 4, 2])}
    strict = finite_sampler(text_sources.values(), grid)
    list(strict)
    nearest = finite_sampler(text_sources.values(), grid, outliers="nearest")
    list(nearest)
    assert strict.stats.dropped_no_bucket["text"] > 0
    assert nearest.stats.dropped_no_bucket["text"] == 0


def test_every_batch_within_its_bucket_budget(tmp_path, text_sources):
    audio = write_audio_source(tmp_path / "audio", "au", 40)
    buckets = {
        "text": TEXT_BUCKETS,
        "audio": ModalityBuckets(BucketGrid([(8, 6), (25, 12)]), [6, 3]),
    }
    sampler = finite_sampler([*text_sources.values(), audio], buckets)
    modalities = set()
    for b in sampler:
        modalities.add(b.modality)
        spec = buckets[b.modality]
        max_in, max_out = spec.grid.bins[b.bucket]
        assert len(b.examples) <= spec.batch_sizes[b.bucket]
        assert all(i <= max_in and o <= max_out for i, o in (WORDS(e) for e in b.examples))
        assert len({type(e) for e in b.examples}) == 1
    assert modalities == {"audio", "text"}


def train_sampler(text_sources, max_wait=20000):
    streams = [ShardedStream(n, list_shards(p), seed=1) for n, p in text_sources.items()]
    mux = Multiplexer(streams, [0.7, 0.3], seed=1)
    return Bucketing2DSampler(buckets={"text": TEXT_BUCKETS}, measure=WORDS, mux=mux, max_wait=max_wait)


@pytest.mark.parametrize(("stop_after", "max_wait"), [(1, 20000), (37, 20000), (90, 20000), (60, 30)])
def test_resume_continues_with_the_same_batches(text_sources, stop_after, max_wait):
    batch_ids = lambda it, n: [[example_id(e) for e in next(it).examples] for _ in range(n)]  # noqa: E731
    ref = iter(train_sampler(text_sources, max_wait))
    reference = batch_ids(ref, stop_after + 40)

    sampler = train_sampler(text_sources, max_wait)
    it = iter(sampler)
    head = batch_ids(it, stop_after)
    state = copy.deepcopy(sampler.state_dict())
    assert state["waiting"] or stop_after == 1, "the test needs examples waiting in buckets at the checkpoint"

    resumed = train_sampler(text_sources, max_wait)
    resumed.load_state_dict(state)
    tail = batch_ids(iter(resumed), 40)
    assert head + tail == reference


def test_max_wait_bounds_resume_replay(text_sources):
    sampler = train_sampler(text_sources, max_wait=30)
    it = iter(sampler)
    for _ in range(100):
        next(it)
        state = sampler.state_dict()
        assert state["draw"] - state["snapshot_draw"] <= 30 + 64 + 1
    assert sampler.stats.early_batches > 0
