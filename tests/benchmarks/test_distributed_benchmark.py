"""The distributed benchmark runs in --quick mode (2 gloo processes) and its byte counts are exact:
component sync moves the shared components' gradients (plus the small used vector), DDP all of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_counts_only_shared_components():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "distributed.py"), "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {(r["setup"], r["method"]): r for r in json.loads(proc.stdout.strip().splitlines()[-1])["rows"]}
    for setup, n_components in (("language_specific", 7), ("shared", 5)):
        sync = rows[(setup, "component_sync")]
        assert sync["bytes_per_step"] == sync["shared_component_bytes"] + 4 * n_components  # + the used vector
    spec, ddp = rows[("language_specific", "component_sync")], rows[("language_specific", "ddp")]
    assert spec["bytes_per_step"] < ddp["bytes_per_step"] and spec["params_held_per_rank"] < ddp["params_held_per_rank"]
    assert rows[("shared", "ddp")]["bytes_per_step"] == rows[("shared", "component_sync")]["shared_component_bytes"]
