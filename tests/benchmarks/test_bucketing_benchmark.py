"""The bucketing benchmark runs end to end in --quick mode and reports sane figures (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MULTI30K = REPO.parent / "shared" / "data" / "multi30k"
METHODS = {
    "text": {"fixed", "lhotse_1d", "nemo_2d", "ours_2d", "ours_2d_30x3"},
    "speech": {"fixed", "lhotse_1d", "nemo_2d", "nemo_2d_target_tokens", "ours_2d", "ours_2d_30x3"},
}

pytestmark = pytest.mark.skipif(
    not all((MULTI30K / f"train.{lang}.gz").is_file() for lang in ("en", "de", "fr", "cs")),
    reason=f"Multi30k is not at {MULTI30K} (train.{{en,de,fr,cs}}.gz); the benchmark needs it",
)


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bucketing.py"), "--quick", "--reps", "1", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last), json.loads(out.read_text())


def test_last_line_is_the_json_and_matches_the_out_file(quick_results):
    printed, written = quick_results
    assert printed == written
    assert printed["benchmark"] == "bucketing" and printed["config"]["quick"] is True


@pytest.mark.parametrize("setting", ["text", "speech"])
def test_every_method_reports_sane_figures(quick_results, setting):
    res = quick_results[0][setting]["methods"]
    assert METHODS[setting] <= set(res)
    n = quick_results[0]["config"][f"num_{setting}"]
    for name, r in res.items():
        for key in ("input_padding", "output_padding", "total_padding"):
            assert 0.0 <= r[key] <= 1.0, (name, key, r[key])
        assert r["mean_batch_size"] > 0 and r["num_batches"] > 0
        assert r["examples_emitted"] + r["dropped"] - r["duplicates"] == n, name
        assert r["duplicates"] == 0, name
        assert r["sampler_ms_per_1000"] >= 0


@pytest.mark.parametrize("setting", ["text", "speech"])
def test_ours_pads_less_than_a_fixed_batch_and_keeps_the_budget(quick_results, setting):
    res = quick_results[0][setting]["methods"]
    ours, fixed = res["ours_2d"], res["fixed"]
    assert ours["input_padding"] <= fixed["input_padding"]
    assert ours["output_padding"] <= fixed["output_padding"]
    assert ours["max_padded_over_budget"] <= 1.0 + 1e-9  # a hard cap
    assert ours["dropped"] == 0  # bins estimated on these very examples fit all of them


def test_multiplexer_figures(quick_results):
    mux = quick_results[0]["multiplexer"]
    for label in ("ours", "lhotse_mux"):
        for window in (200, 1000):
            assert 0.0 <= mux[label][f"worst_dev_w{window}"] <= 1.0
        assert abs(sum(mux[label]["shares"].values()) - 1.0) < 1e-3
