"""The time-to-BLEU benchmark runs end to end (``--smoke``) on a tiny synthetic bitext in Multi30k's layout,
so it runs without ../shared: both arms train side by side, save at their marks, and are scored."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LANGS = ("en", "de", "fr", "cs")
TINY = ["model.backbone.config.d_model=32", "model.backbone.config.d_ff=64", "model.backbone.config.d_kv=8",
        "model.backbone.config.num_heads=2", "model.backbone.config.num_layers=1",
        "model.backbone.config.num_decoder_layers=1", "model.decoding.max_new_tokens=8"]


def bench():
    spec = importlib.util.spec_from_file_location("time_to_bleu", REPO / "benchmarks" / "time_to_bleu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_saving_at_a_mark_does_not_count_as_training_time(tmp_path):
    b = bench()
    clock = b.Clock()
    marks = b.Marks(clock, mark_s=0.05, num_marks=2, folder=tmp_path)
    assert not marks.due()
    time.sleep(0.06)
    assert marks.due() and not marks.done()
    marks.save(lambda path: time.sleep(0.5), steps=3, examples=30, tokens=300)
    assert clock.elapsed() < 0.3  # the 0.5 s save is paused out
    record = dict(marks.records[0])
    assert 0 < record.pop("wall_s") < 0.3
    assert [record] == [{"mark": 1, "steps": 3, "examples": 30, "target_tokens": 300, "path": str(tmp_path / "mark1")}]
    assert not marks.due()  # the next mark is at 0.1 s of training


def test_report_gives_scores_at_equal_time_and_the_time_to_each_bleu():
    def mark(wall, steps, avg, ende):
        return {"wall_s": wall, "steps": steps, "bleu/avg": avg, "chrf/avg": 2 * avg, "bleu/en-de": ende}

    arms = {"plain": [mark(600, 10, 4.0, 5.0), mark(1200, 20, 8.0, 12.0)],
            "ours": [mark(600, 30, 11.0, 15.0), mark(1200, 60, 16.0, 21.0), mark(1800, 90, 22.0, 25.0)]}
    r = bench().report(arms)
    assert r["at_equal_time"]["ours"]["wall_s"] == 1200 and r["at_equal_time"]["plain"]["steps"] == 20
    assert r["ratio_ours_over_plain"] == {"bleu/avg": 2.0, "chrf/avg": 2.0, "bleu/en-de": 1.75}
    assert r["wall_s_to_reach"]["ours"] == {"bleu/avg>=10": 600, "bleu/avg>=20": 1800,
                                            "bleu/en-de>=10": 600, "bleu/en-de>=20": 1200}
    assert r["wall_s_to_reach"]["plain"] == {"bleu/avg>=10": None, "bleu/avg>=20": None,
                                             "bleu/en-de>=10": 1200, "bleu/en-de>=20": None}
    assert r["time_ratio_ours_over_plain"]["bleu/en-de>=10"] == 0.5
    assert r["time_ratio_ours_over_plain"]["bleu/avg>=10"] is None  # the plain loop never got there


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
