import math

import pytest

from nemo_emmett.oomptimizer.search import NothingFits, find_max_batch


def threshold(limit):
    return lambda b: b <= limit


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100, 999, 4095])
@pytest.mark.parametrize("start", [1, 64])
def test_exact_search_finds_the_threshold_in_a_logarithmic_number_of_probes(limit, start):
    r = find_max_batch(threshold(limit), start=start, tolerance=0.0, max_batch=1 << 16)
    assert r.batch_size == limit
    assert not r.capped
    # growth (or shrink) to bracket the limit, then bisection of a bracket at most as wide as the limit
    bound = 2 * math.ceil(math.log2(max(limit, start) + 1)) + 2
    assert len(r.probes) <= bound, r.probes
    assert all(ok == (b <= limit) for b, ok in r.probes)


@pytest.mark.parametrize("limit", [50, 333, 2000])
def test_tolerance_returns_a_size_that_fits_within_the_tolerance_with_fewer_probes(limit):
    exact = find_max_batch(threshold(limit), tolerance=0.0)
    loose = find_max_batch(threshold(limit), tolerance=0.1)
    assert loose.batch_size <= limit  # always a measured fit
    assert loose.batch_size >= limit / 1.1 - 1
    assert len(loose.probes) < len(exact.probes)


def test_the_answer_was_probed_and_fitted():
    r = find_max_batch(threshold(77), start=5, tolerance=0.05)
    assert (r.batch_size, True) in r.probes


def test_start_above_the_limit_shrinks():
    r = find_max_batch(threshold(10), start=1000, tolerance=0.0)
    assert r.batch_size == 10
    assert r.probes[0] == (1000, False)


def test_max_batch_caps_the_search():
    r = find_max_batch(threshold(10**9), max_batch=300)
    assert (r.batch_size, r.capped) == (300, True)


def test_nothing_fits_raises():
    with pytest.raises(NothingFits):
        find_max_batch(threshold(0), start=16)
