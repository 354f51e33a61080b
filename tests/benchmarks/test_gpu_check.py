"""benchmarks/gpu_check.py --smoke: the GPU check's code path on CPU (tiny model, 5 steps) prints one JSON
object with the figures the GPU run reports; the FLOP accounting and the peak table are exact."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_prints_one_json_object_with_the_gpu_figures(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NEMO_EMMETT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--smoke", "--out",
                           str(tmp_path / "out.json")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == json.loads((tmp_path / "out.json").read_text())
    assert {"budget_bytes", "peak_bytes", "peak_over_budget", "oom_count", "cuda_num_ooms", "tokens_per_s",
            "model_flops_per_s", "mfu", "peak_bf16_flops_per_s", "torch", "cuda", "device_name", "precision",
            "parameters", "oomptimizer", "train"} <= set(out)
    assert out["smoke"] is True and out["device_name"] == "cpu" and out["precision"] == "bf16-mixed"
    assert out["budget_bytes"] == 8 * 2**20 and 0 < out["peak_over_budget"] <= 1.0  # training stayed in the budget
    assert out["oom_count"] == 0 and out["mfu"] is None  # CPU: no allocator OOMs, no bf16 peak to divide by
    search, train = out["oomptimizer"], out["train"]
    audio = search["buckets"]["audio"][0]
    assert not audio["capped"] and 1 <= audio["batch_size"] < 32  # the budget, not the cap, bounded it
    assert search["probes"] > len(search["buckets"])
    assert train["steps"] == 5 and train["measured_steps"] == 4 and out["tokens_per_s"] > 0
    n = out["parameters"]
    assert train["tokens"] == train["encoder_positions"] + train["target_tokens"]
    assert train["model_flops"] == 6 * (n["perception"] * train["frames"] + n["encoder"] * train["encoder_positions"]
                                        + n["decoder"] * train["target_tokens"])
    assert out["model_flops_per_s"] == train["model_flops"] / train["measured_seconds"]


def test_peak_table_matches_device_names():
    gc = load_gpu_check()
    assert gc.peak_flops("NVIDIA H200") == 989e12 and gc.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gc.peak_flops("NVIDIA H100 PCIe") == 756e12 and gc.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gc.peak_flops("Tesla T4") is None
