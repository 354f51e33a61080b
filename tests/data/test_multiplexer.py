import itertools

import numpy as np
import pytest

from nemo_emmett.data.examples import dataset, example_id
from nemo_emmett.data.multiplexer import Multiplexer, choose_source
from nemo_emmett.data.shar import list_shards
from nemo_emmett.data.sources import temperature_weights
from nemo_emmett.data.stream import ShardedStream


def worst_window_deviation(seq: np.ndarray, weights: np.ndarray, window: int) -> float:
    worst = 0.0
    for k, w in enumerate(weights):
        c = np.concatenate([[0], np.cumsum(seq == k)])
        share = (c[window:] - c[:-window]) / window
        worst = max(worst, float(np.abs(share - w).max()))
    return worst


def test_credit_rule_keeps_every_window_close_to_weights():
    weights = np.array([0.55, 0.3, 0.1, 0.05])
    credits, rng = np.zeros(4), np.random.default_rng(0)
    seq = np.array([choose_source(credits, weights, rng.random(4), 0.5) for _ in range(50_000)])
    # Each source's count in any window is within 2 of w * L.
    assert worst_window_deviation(seq, weights, 200) <= 2 / 200
    # Independent draws (what CutSet.mux does) wander much further.
    iid = np.random.default_rng(0).choice(4, size=50_000, p=weights)
    assert worst_window_deviation(iid, weights, 200) > 4 * worst_window_deviation(seq, weights, 200)


def test_credit_rule_is_random_not_a_fixed_cycle():
    weights = np.array([0.5, 0.5])
    credits, rng = np.zeros(2), np.random.default_rng(0)
    seq = [choose_source(credits, weights, rng.random(2), 0.5) for _ in range(1000)]
    assert seq[:200] != [0, 1] * 100 and seq[:200] != [1, 0] * 100


def test_temperature_weights():
    assert temperature_weights([100, 100], 3.0) == [0.5, 0.5]
    np.testing.assert_allclose(temperature_weights([900, 100], 1.0), [0.9, 0.1])
    np.testing.assert_allclose(temperature_weights([900, 100], 2.0), [0.75, 0.25])
    with pytest.raises(ValueError, match="temperature"):
        temperature_weights([1, 2], 0.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_weights_name_the_source(text_sources, bad):
    streams = [ShardedStream(n, list_shards(p), seed=0) for n, p in text_sources.items()]
    with pytest.raises(ValueError, match="source 'b': weight must be a finite number > 0"):
        Multiplexer(streams, [1.0, bad], seed=0)


def make_mux(text_sources, *, seed=3, slot=0, num_slots=1):
    streams = [ShardedStream(n, list_shards(p), seed=seed, slot=slot, num_slots=num_slots)
               for n, p in text_sources.items()]
    return Multiplexer(streams, [0.7, 0.3], seed=seed, slot=slot)


def test_shares_within_tolerance_over_windows_across_epochs(text_sources):
    mux = make_mux(text_sources)
    names = [dataset(e) for e in itertools.islice(mux, 2000)]  # several epochs of both sources
    seq = np.array([0 if n == "a" else 1 for n in names])
    assert worst_window_deviation(seq, np.array([0.7, 0.3]), 100) <= 0.02


def test_deterministic_per_seed_and_slot(text_sources):
    ids = lambda m: [example_id(e) for e in itertools.islice(m, 300)]  # noqa: E731
    assert ids(make_mux(text_sources)) == ids(make_mux(text_sources))
    assert ids(make_mux(text_sources)) != ids(make_mux(text_sources, seed=4))


@pytest.mark.parametrize("num_slots", [2, 3, 8])
def test_slots_are_disjoint_and_cover_an_epoch(text_sources, num_slots):
    # Source "a" has 6 shards of 50: by-shard split for 2 and 3 slots, item striding for 8.
    per_slot = []
    for slot in range(num_slots):
        s = ShardedStream("a", list_shards(text_sources["a"]), seed=5, slot=slot, num_slots=num_slots,
                          infinite=False)
        per_slot.append([example_id(e) for e in s])
    flat = [i for ids in per_slot for i in ids]
    assert len(flat) == len(set(flat)) == 300
    assert all(per_slot)


def test_epochs_reshuffle(text_sources):
    s = ShardedStream("a", list_shards(text_sources["a"]), seed=5)
    first, second = [[example_id(e) for e in itertools.islice(s, 300)] for _ in range(2)]
    assert sorted(first) == sorted(second) and first != second


@pytest.mark.parametrize("stop_at", [1, 137, 299, 300, 777])
def test_resume_mid_stream_is_exact(text_sources, stop_at):
    reference = [example_id(e) for e in itertools.islice(make_mux(text_sources), stop_at + 200)]
    mux = make_mux(text_sources)
    head = [example_id(e) for e in itertools.islice(mux, stop_at)]
    state = mux.state_dict()
    resumed = make_mux(text_sources)
    resumed.load_state_dict(state)
    tail = [example_id(e) for e in itertools.islice(resumed, 200)]
    assert head + tail == reference


def test_load_state_rejects_unexpected_keys(text_sources):
    mux = make_mux(text_sources)
    with pytest.raises(KeyError, match="expected"):
        mux.load_state_dict({**mux.state_dict(), "bogus": 1})
