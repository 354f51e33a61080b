"""The time-to-BLEU benchmark runs end to end (``--smoke``) on a tiny synthetic bitext in Multi30k's layout,
so it runs without ../shared: both arms train side by side, save at their marks, and are scored."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LANGS = ("en", "de", "fr", "cs")
TINY = ["model.backbone.config.d_model=32", "model.backbone.config.d_ff=64", "model.backbone.config.d_kv=8",
        "model.backbone.config.num_heads=2", "model.backbone.config.num_layers=1",
        "model.backbone.config.num_decoder_layers=1", "model.decoding.max_new_tokens=8"]


def synthetic_multi30k(root: Path, train: int = 300, test: int = 20) -> Path:
    """Line-aligned ``train`` and ``test_2016_flickr`` files: each language a fixed word-for-word cipher of English."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(60)]
    cipher = {lang: {w: f"{lang}{w[1:]}x" for w in words} for lang in LANGS}
    for split, n in (("train", train), ("test_2016_flickr", test)):
        sentences = [[rng.choice(words) for _ in range(rng.randint(2, 6))] for _ in range(n)]
        for lang in LANGS:
            with gzip.open(root / f"{split}.{lang}.gz", "wt") as f:
                f.writelines(" ".join(cipher[lang][w] for w in s) + "\n" for s in sentences)
    return root


def test_smoke_run_has_both_arms_with_their_marks_scored(tmp_path):
    data = synthetic_multi30k(tmp_path)
    out = tmp_path / "result.json"
    env = {**os.environ, "NEMO_EMMETT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "time_to_bleu.py"), "--smoke", "--data", str(data),
                           "--work", str(tmp_path / "work"), "--out", str(out), "--plain-batch-size", "16", *TINY],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == result
    assert set(result["arms"]) == {"plain", "ours"}
    directions = {"en-de", "de-en", "en-fr", "fr-en", "en-cs", "cs-en"}
    for arm, marks in result["arms"].items():
        assert [m["mark"] for m in marks] == [1, 2], arm
        assert marks[0]["steps"] > 0 and marks[1]["steps"] > marks[0]["steps"], arm  # it kept training
        assert 15 <= marks[0]["wall_s"] < marks[1]["wall_s"], arm  # saved at (just after) each mark
        assert {f"bleu/{d}" for d in directions} | {f"chrf/{d}" for d in directions} <= set(marks[0])
        assert all(0 <= m["bleu/avg"] <= 100 and 0 <= m["chrf/avg"] <= 100 for m in marks)
    assert set(result["at_equal_time"]) == {"plain", "ours"}
    assert set(result["wall_s_to_reach"]["ours"]) == {"bleu/avg>=10", "bleu/avg>=20", "bleu/en-de>=10", "bleu/en-de>=20"}
    assert set(result["cores"]["plain"]).isdisjoint(result["cores"]["ours"]) or len(os.sched_getaffinity(0)) == 1
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in result["signature"]["bleu"]
