"""The allocation benchmark runs in --quick mode, writes its table, plot and JSON, and the search beats greedy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_writes_table_plot_and_json(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "allocation.py"), "--quick", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == json.loads((tmp_path / "allocation.json").read_text())
    assert (tmp_path / "allocation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| greedy |" in (tmp_path / "allocation.md").read_text()
    for name, r in out["setups"].items():
        assert r["search"]["weighted_gb"] <= r["greedy"]["weighted_gb"] + 1e-9 or \
            r["search"]["idle_at_step_0"] < r["greedy"]["idle_at_step_0"], name
    rows = out["scaling"]
    assert [r["languages"] for r in rows] == [4, 8, 16]
    assert all(r["sync_max_gb"] < r["ddp_gb"] for r in rows)
    assert rows[-1]["sync_mean_over_ddp"] < rows[0]["sync_mean_over_ddp"]  # DDP grows with languages, sync does not
