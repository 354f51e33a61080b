import json

import numpy as np
import pytest

from nemo_emmett.data.bucketing import BucketGrid, batch_sizes_for_budget, estimate_bins_2d, load_bucket_file


def test_estimate_bins_exact_on_hand_made_lengths():
    lengths = np.array([[i, i] for i in range(1, 9)])
    est = estimate_bins_2d(lengths, 2, 2)
    assert est.bins == [(4, 2), (4, 4), (8, 6), (8, 8)]
    assert est.num_outliers == 0


def test_estimate_bins_splits_output_within_each_input_bin():
    # Short inputs have short outputs, long inputs long ones: output edges differ per input bin.
    lengths = np.array([[1, 1], [2, 3], [3, 2], [4, 4], [10, 20], [11, 30], [12, 25], [13, 40]])
    assert estimate_bins_2d(lengths, 2, 2).bins == [(4, 2), (4, 4), (13, 25), (13, 40)]


def test_estimate_bins_merges_repeated_edges_and_counts_outliers():
    lengths = np.array([[5, 1]] * 6 + [[7, 2], [100, 3]])
    est = estimate_bins_2d(lengths, 4, 1, max_input=50)
    assert est.bins == [(5, 1), (7, 2)]
    assert (est.num_examples, est.num_outliers) == (8, 1)


def test_grid_selects_strict_bucket_or_drops():
    grid = BucketGrid([(4, 2), (4, 4), (8, 6), (8, 8)])
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
