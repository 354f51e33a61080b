"""The throughput benchmark runs end to end on a tiny demo and model (no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_scripts import TINY_DEMO, TINY_MODEL

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "espeak-ng"], capture_output=True).returncode != 0,
    reason="espeak-ng is not installed (apt-get install -y espeak-ng); the demo corpus needs it",
)


def test_throughput_benchmark_compares_the_three_methods_at_one_budget(tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "NEMO_EMMETT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--data", "demo", "--examples", "80",
         "--chunk", "40", "--budget", "12MiB", "--tolerance", "0.2", "--threads", "1", "--no-progress",
         "--out", str(out), *TINY_DEMO, *TINY_MODEL, "data.audio_buckets.num_output_bins=2",
         "data.text_buckets.num_output_bins=2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    demo = printed["demo"]
    assert set(demo["methods"]) == {"fixed", "1d", "2d_oomptimizer"}
    for method, s in demo["methods"].items():
        assert s["real_tokens_per_s"] > 0 and s["seconds_per_1000_examples"] > 0
        for modality, c in s["per_modality"].items():  # each modality consumed its share of the examples
            assert c["examples"] >= 80 * demo["modality_shares"][modality] and 0 <= c["padding_share"] < 1
        for spec in demo["sizing"][method].values():
            assert len(spec["bins"]) == len(spec["batch_sizes"])
            assert all(0 < share <= 1 for share in spec["peak_share"])
    sizing = demo["sizing"]
    assert all(len(spec["bins"]) == 1 for spec in sizing["fixed"].values())  # one worst-case bucket
    assert len(sizing["1d"]["text"]["bins"]) <= 2 * len(sizing["2d_oomptimizer"]["text"]["bins"])
    for spec in sizing["1d"].values():  # one bucket per input bin: the output axis is not split
        assert len({i for i, _ in spec["bins"]}) == len(spec["bins"])
    # the fixed batch is sized for the longest example; bucketed batches of short examples are larger
    for modality in ("audio", "text"):
        assert max(sizing["2d_oomptimizer"][modality]["batch_sizes"]) > sizing["fixed"][modality]["batch_sizes"][0]
    assert demo["ratios_vs_fixed"]["fixed"]["real_tokens_per_s"] == pytest.approx(1.0)
    for modality in ("audio", "text"):
        padding = {m: demo["methods"][m]["per_modality"][modality]["padding_share"] for m in demo["methods"]}
        assert padding["2d_oomptimizer"] < padding["fixed"], padding
