"""The example scripts run end to end on a tiny demo corpus (subprocesses, as users run them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_DEMO = ["data.demo.num_train=40", "data.demo.num_val=8", "data.demo.num_mt_train=40",
             "data.tokenizer.vocab_size=200", "data.audio_buckets.num_input_bins=2",
             "data.text_buckets.num_input_bins=2"]

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "espeak-ng"], capture_output=True).returncode != 0,
    reason="espeak-ng is not installed (apt-get install -y espeak-ng); the demo corpus needs it",
)


def run(args, tmp_path):
    env = {**os.environ, "NEMO_EMMETT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_runs_the_data_pipeline_on_the_demo(tmp_path):
    out = run([str(REPO / "examples/train.py"), "--config-name", "salm_t5", *TINY_DEMO,
               "data.num_workers=2", "data_check.num_batches=30"], tmp_path)
    assert "Realised mix" in out and "audio buckets" in out and "text buckets" in out
    assert "Validation pass: 80 examples (80 distinct) of 80 with num_workers=2" in out


def test_estimate_bins_writes_bins_and_plots(tmp_path):
    out = run([str(REPO / "examples/estimate_bins.py"), "--out", str(tmp_path / "bins"), *TINY_DEMO], tmp_path)
    buckets = json.loads((tmp_path / "bins" / "buckets.json").read_text())
    assert set(buckets) == {"audio", "text"}
    for spec in buckets.values():
        assert len(spec["bins"]) == len(spec["batch_sizes"]) >= 2
        assert spec["bins"] == sorted(spec["bins"])
    assert (tmp_path / "bins" / "audio_bins.png").stat().st_size > 1000
    assert "max_input" in out
