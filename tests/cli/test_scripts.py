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
    return proc.stdout + proc.stderr


TINY_MODEL = ["model.backbone.config.d_model=32", "model.backbone.config.d_ff=64", "model.backbone.config.d_kv=8",
              "model.backbone.config.num_layers=1", "model.backbone.config.num_decoder_layers=1",
              "model.perception.d_model=32", "model.perception.n_layers=1", "model.perception.subsampling_conv_channels=16",
              "model.decoding.max_new_tokens=8", "data.val_batch_size=64"]


def test_inspect_data_reports_the_pipeline(tmp_path):
    out = run([str(REPO / "examples/inspect_data.py"), "--num-batches", "30", *TINY_DEMO, "data.num_workers=2"],
              tmp_path)
    assert "Realised mix" in out and "audio buckets" in out and "text buckets" in out
    assert "Validation pass: 80 examples (80 distinct) of 80 with num_workers=2" in out


def test_train_validates_checkpoints_and_resumes(tmp_path):
    args = [str(REPO / "examples/train.py"), *TINY_DEMO, *TINY_MODEL, "trainer.val_check_interval=2",
            f"exp_manager.exp_dir={tmp_path / 'exp'}"]
    first = run([*args, "trainer.max_steps=4"], tmp_path)
    ckpts = sorted(p.name for p in (tmp_path / "exp" / "salm_t5" / "checkpoints").glob("*.ckpt"))
    assert any(name.endswith("-last.ckpt") for name in ckpts), ckpts
    assert "bleu/avg" in first and "`Trainer.fit` stopped: `max_steps=4` reached" in first
    second = run([*args, "trainer.max_steps=6"], tmp_path)  # same experiment: resumes from its last checkpoint
    assert "Restored all states from the checkpoint" in second
    assert "`Trainer.fit` stopped: `max_steps=6` reached" in second


def test_estimate_bins_writes_bins_and_plots(tmp_path):
    out = run([str(REPO / "examples/estimate_bins.py"), "--out", str(tmp_path / "bins"), *TINY_DEMO], tmp_path)
    buckets = json.loads((tmp_path / "bins" / "buckets.json").read_text())
    assert set(buckets) == {"audio", "text"}
    for spec in buckets.values():
        assert len(spec["bins"]) == len(spec["batch_sizes"]) >= 2
        assert spec["bins"] == sorted(spec["bins"])
    assert (tmp_path / "bins" / "audio_bins.png").stat().st_size > 1000
    assert "max_input" in out


def test_oomptimize_then_train_with_the_callback_stays_under_the_budget(tmp_path):
    tiny_buckets = ["data.audio_buckets.num_output_bins=1", "data.text_buckets.num_output_bins=1",
                    "oomptimizer.memory_budget=12MiB", "oomptimizer.tolerance=0.1"]
    out = run([str(REPO / "examples/oomptimize.py"), "--out", str(tmp_path / "b.json"), *TINY_DEMO, *TINY_MODEL,
               *tiny_buckets], tmp_path)
    buckets = json.loads((tmp_path / "b.json").read_text())
    assert set(buckets) == {"audio", "text"} and "budget%" in out
    for spec in buckets.values():
        assert all(p <= 12 * 2**20 for p in spec["peak_bytes"])
    # the callback finds the same settings in the cache, hands the sizes to the sampler, measures real steps
    train = run([str(REPO / "examples/train.py"), *TINY_DEMO, *TINY_MODEL, *tiny_buckets, "oomptimizer.enabled=true",
                 "oomptimizer.measure_steps=-1", "trainer.max_steps=6", "trainer.val_check_interval=6",
                 f"exp_manager.exp_dir={tmp_path / 'exp'}"], tmp_path)
    assert "OOMptimizer: using cached batch sizes" in train
    assert "`Trainer.fit` stopped: `max_steps=6` reached" in train
    measured = [line for line in train.splitlines() if "of budget)" in line]
    assert measured, train[-3000:]
    assert "over the OOMptimizer budget" not in train
    for line in measured:
        assert float(line.split("(")[1].split("%")[0]) <= 100.0
