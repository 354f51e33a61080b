"""The MGCM benchmark runs end to end in --quick mode on a tiny model and reports sane figures
(no timing asserts; the memory claim is asserted on the gradient buffers, which do not depend on timing)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_emmett.parts.metrics import bleu_signature

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.backbone.config.d_model=32", "model.backbone.config.d_ff=64", "model.backbone.config.d_kv=8",
        "model.backbone.config.num_layers=1", "model.backbone.config.num_decoder_layers=1",
        "model.perception.d_model=32", "model.perception.n_layers=1",
        "model.perception.subsampling_conv_channels=16", "model.decoding.max_new_tokens=8"]

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed; the demo corpus needs it")


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "mgcm.py"), "--quick", "--out", str(out), *TINY],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), json.loads(out.read_text())


def test_last_line_is_the_json_and_matches_the_out_file(quick_results):
    printed, written = quick_results
    assert printed == written
    assert printed["benchmark"] == "mgcm" and printed["config"]["quick"] is True


def test_every_method_trains_and_is_evaluated(quick_results):
    res = quick_results[0]["methods"]
    assert set(res) == {"plain", "pcgrad", "mgcm"}
    for name, r in res.items():
        assert r["step_s_median"] > 0 and r["num_mixed_steps"] >= 1, name
        assert r["val_loss"] > 0 and 0.0 <= r["bleu"] <= 100.0 and r["num_examples"] > 0, name
        assert r["bleu_signature"] == bleu_signature(), name  # the score carries sacrebleu's signature


def test_mgcm_adds_a_small_fraction_of_pcgrads_gradient_memory(quick_results):
    res = quick_results[0]
    grad_bytes = res["config"]["gradient_bytes"]
    pair = res["memory"]["pair"]  # two examples: gradients dominate the peaks
    pcgrad = pair["pcgrad"]["extra_over_two_pass_bytes"]
    # PCGrad keeps at least one more full (flattened) gradient. The CPU profiler's event accounting moves
    # a peak by tens of KB from run to run (measured 266-323 KB here against 296 KB of gradients), so
    # this asserts three quarters of it: still far above what MGCM adds.
    assert pcgrad >= 0.75 * grad_bytes
    assert pair["mgcm"]["extra_over_two_pass_bytes"] <= 0.25 * pcgrad  # the same noise allowance
    # a full batch: backward buffers dominate the peak and partly hide PCGrad's copies (noisier)
    batch = res["memory"]["batch"]
    assert batch["mgcm"]["extra_over_two_pass_bytes"] < batch["pcgrad"]["extra_over_two_pass_bytes"]
