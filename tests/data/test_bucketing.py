import itertools
import json

import numpy as np
import pytest

from nemo_emmett.data.bucketing import (
    BucketGrid,
    batch_sizes_for_budget,
    equal_count_edges,
    estimate_bins_2d,
    load_bucket_file,
    min_padding_edges,
)


@pytest.mark.parametrize("method", ["min_padding", "equal_count"])
def test_estimate_bins_exact_on_hand_made_lengths(method):
    lengths = np.array([[i, i] for i in range(1, 9)])
    est = estimate_bins_2d(lengths, 2, 2, method=method)
    assert est.bins == [(4, 2), (4, 4), (8, 6), (8, 8)]
    assert est.num_outliers == 0


def test_min_padding_and_equal_count_edges_differ_where_they_should():
    values = np.array([1, 1, 1, 2, 10])
    assert min_padding_edges(values, 2) == [2, 10]  # padding 3
    assert equal_count_edges(values, 2) == [1, 10]  # padding 8


def test_min_padding_edges_match_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(100):
        values = rng.integers(1, 25, size=rng.integers(1, 30))
        k = int(rng.integers(1, 5))

        def pad(edges, values=values):
            return sum(min(e for e in edges if e >= v) - v for v in values)

        u = np.unique(values)
        best = min(pad([*c, u[-1]]) for r in range(min(k, len(u))) for c in itertools.combinations(u[:-1], r))
        edges = min_padding_edges(values, k)
        assert pad(edges) == best and edges[-1] == values.max() and len(edges) <= k


def test_estimate_bins_splits_output_within_each_input_bin():
    # Short inputs have short outputs, long inputs long ones: output edges differ per input bin.
    lengths = np.array([[1, 1], [2, 3], [3, 2], [4, 4], [10, 20], [11, 30], [12, 25], [13, 40]])
    for method in ("equal_count", "min_padding"):  # min_padding: {1,2,3,4} -> [2, 4] pads 2; {20..40} -> [25, 40]
        assert estimate_bins_2d(lengths, 2, 2, method=method).bins == [(4, 2), (4, 4), (13, 25), (13, 40)]


@pytest.mark.parametrize("method", ["min_padding", "equal_count"])
def test_every_example_fits_the_bins_estimated_from_it(method):
    lengths = np.random.default_rng(1).gamma(2.0, 8.0, size=(3000, 2)).round()
    grid = BucketGrid(estimate_bins_2d(lengths, 6, 3, method=method).bins)
    assert all(grid.select(i, o) is not None for i, o in lengths)
    # equal inputs at a bin edge with long outputs (an equal-count split used to lose them)
    tricky = np.array([[1, 1], [2, 1], [2, 9], [3, 1]])
    grid = BucketGrid(estimate_bins_2d(tricky, 2, 1, method=method).bins)
    assert all(grid.select(i, o) is not None for i, o in tricky)


def test_estimate_bins_merges_repeated_edges_and_counts_outliers():
    lengths = np.array([[5, 1]] * 6 + [[7, 2], [100, 3]])
    est = estimate_bins_2d(lengths, 4, 1, max_input=50)
    assert est.bins == [(5, 1), (7, 2)]
    assert (est.num_examples, est.num_outliers) == (8, 1)
    with pytest.raises(ValueError, match="method"):
        estimate_bins_2d(lengths, 2, 2, method="quantile")


def test_grid_selects_strict_bucket_or_drops():
    grid = BucketGrid([(4, 2), (4, 4), (8, 6), (8, 8)], outliers="drop")
    assert [grid.select(*x) for x in [(1, 1), (3, 3), (4, 4), (5, 6), (8, 8)]] == [0, 1, 1, 2, 3]
    assert grid.select(4, 5) is None  # output too long for its input bin
    assert grid.select(9, 1) is None  # input longer than every bin


def test_grid_nearest_policy_places_in_smallest_larger_bucket():
    grid = BucketGrid([(4, 2), (4, 4), (8, 6), (8, 8)], outliers="nearest")
    assert grid.select(4, 5) == 2
    assert grid.select(9, 1) is None


def test_grid_rejects_unsorted_bins_and_unknown_policy():
    with pytest.raises(ValueError, match="sorted"):
        BucketGrid([(8, 8), (4, 4)])
    with pytest.raises(ValueError, match="outliers"):
        BucketGrid([(4, 4)], outliers="truncate")


def test_batch_sizes_for_budget():
    assert batch_sizes_for_budget([(4, 4), (10, 10), (50, 50)], 100) == [12, 5, 1]
    with pytest.raises(ValueError, match=r"\(60.0, 60.0\)"):
        batch_sizes_for_budget([(4, 4), (60.0, 60.0)], 100)


def test_bucket_file_round_trip_and_errors(tmp_path):
    good = tmp_path / "b.json"
    good.write_text(json.dumps({"audio": {"bins": [[10, 5], [20, 8]], "batch_sizes": [8, 4]}}))
    assert load_bucket_file(good)["audio"]["batch_sizes"] == [8, 4]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"audio": {"bins": [[10, 5], [20, 8]], "batch_sizes": [8]}}))
    with pytest.raises(ValueError, match="bad.json.*2 bins but 1 batch_sizes"):
        load_bucket_file(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_bucket_file(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ValueError, match="junk.json.*not valid JSON"):
        load_bucket_file(tmp_path / "junk.json")
