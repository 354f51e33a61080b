"""MGCM conflict statistics: per-module rows, window sums per module type, summaries."""

import pytest
import torch

from nemo_emmett.mgcm.stats import StatsWindow, stat_rows, summarize


def test_summary_statistics():
    # counted, conflicts, cos_sum, removed_sq, aux_sq
    assert summarize([4, 1, 0.8, 1.0, 16.0]) == {"conflict_share": 0.25, "mean_cos": 0.2, "norm_removed": 0.25}
    assert summarize([0, 0, 0, 0, 0]) == {"conflict_share": None, "mean_cos": None, "norm_removed": None}


def test_window_sums_per_module_type_and_starts_again_after_flush():
    # modules: enc (conflict: cos -0.5, |c g_p|^2 = 1), dec (cos 1), enc (no primary gradient: not counted)
    pairs = torch.tensor([[-1.0, 1.0, 4.0], [2.0, 1.0, 4.0], [0.0, 0.0, 1.0]])  # (G, 3) [dot, |g_p|^2, |g_a|^2]
    assert stat_rows(pairs).tolist() == [[1.0, 1.0, -0.5, 1.0, 4.0], [1.0, 0.0, 1.0, 0.0, 4.0],
                                         [0.0, 0.0, 0.0, 0.0, 1.0]]
    window = StatsWindow(["enc", "dec", "enc"])
    assert not window
    window.record({"asr": pairs})
    window.record({"asr": pairs})  # two steps: every sum doubles, the shares stay
    out = window.flush("st")
    assert out == pytest.approx({
        "mgcm/st-asr/conflict_share": 0.5, "mgcm/st-asr/mean_cos": 0.25, "mgcm/st-asr/norm_removed": (2 / 18) ** 0.5,
        "mgcm/st-asr/conflict_share/enc": 1.0, "mgcm/st-asr/mean_cos/enc": -0.5,
        "mgcm/st-asr/norm_removed/enc": (2 / 10) ** 0.5,
        "mgcm/st-asr/conflict_share/dec": 0.0, "mgcm/st-asr/mean_cos/dec": 1.0, "mgcm/st-asr/norm_removed/dec": 0.0,
    })
    assert not window and window.flush("st") == {}
