"""The SimulST + MGCM recipe end to end at tiny sizes (``recipes/simulst_mgcm.py``): three arms trained in
the simultaneous setting, each decoded at several wait-k lags and offline, conflict statistics read back
from TensorBoard, tables and a plot; a second run skips the finished arms."""

import json
import logging

import pytest

from tests.cli.test_scripts import TINY_DEMO, TINY_MODEL
from tests.recipes.helpers import load_recipe, needs_espeak

pytestmark = needs_espeak


def recipe():
    return load_recipe("simulst_mgcm")


def test_three_arms_scored_at_every_lag_with_conflict_statistics(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEMO_EXPM_VERSION", raising=False)
    out = tmp_path / "out"
    args = ["--out", str(out), "--steps", "4", "--ks", "1,3", "--eval-utterances", "2", *TINY_DEMO, *TINY_MODEL,
            "data.num_workers=0", "threads.mode=fixed", "trainer.log_every_n_steps=2"]
    simulst = recipe()
    assert simulst.main(args) == 0

    results = json.loads((out / "simulst_mgcm.json").read_text())
    arms = results["arms"]
    assert list(arms) == ["plain", "mgcm", "model_level"] and all(arms[a]["steps"] == 4 for a in arms)
    assert results["meta"]["eval"] == {"st_en-de": 2, "st_en-fr": 2, "st_en-es": 2}
    for r in arms.values():
        assert sorted(r["curves"]) == ["en-de", "en-es", "en-fr"]
        for rows in r["curves"].values():
            assert [row["k"] for row in rows] == [1, 3, "offline"] and all(row["n"] == 2 for row in rows)
        assert [row["k"] for row in r["mean"]] == [1, 3, "offline"]
        de, fr, es = (r["curves"][d][0] for d in ("en-de", "en-fr", "en-es"))
        if all("AL" in row for row in (de, fr, es)):
            assert r["mean"][0]["AL"] == pytest.approx((de["AL"] + fr["AL"] + es["AL"]) / 3, abs=0.01)
        assert {"bleu/mt_avg", "wer/asr_avg"} <= set(r["offline_greedy"])  # MT and ASR scored too

    # plain training logs no MGCM statistics; module-level MGCM logs them per module type; model level
    # treats the whole model as one group (one type, shown as "all")
    assert arms["plain"]["conflicts"] == {}
    module_types = {tag.split("/")[3] for tag in arms["mgcm"]["conflicts"] if tag.count("/") == 3}
    assert {"perception", "encoder", "decoder"} <= module_types
    assert {tag.split("/")[3] for tag in arms["model_level"]["conflicts"] if tag.count("/") == 3} == {"model"}
    assert {v["windows"] for v in arms["mgcm"]["conflicts"].values()} == {2}  # steps 2 and 4
    table = (out / "simulst_mgcm.md").read_text()
    assert "| model_level | offline |" in table and "| mgcm | st-asr | encoder |" in table
    assert "| model_level | st-asr | model |" not in table  # the one type repeats "all"
    assert (out / "simulst_mgcm.png").stat().st_size > 10_000

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="simulst_mgcm"):
        assert simulst.main(args) == 0  # again: nothing trained or decoded twice
    assert all(f"arm {a}: done before" in caplog.text for a in arms)
    assert json.loads((out / "simulst_mgcm.json").read_text())["arms"] == arms

    # runs (seeds) averaged: a second run with every figure shifted averages to the midpoint
    other = tmp_path / "other"
    shifted = json.loads((out / "simulst_mgcm.json").read_text())
    for r in shifted["arms"].values():
        for row in r["mean"]:
            row["BLEU"] = round(row["BLEU"] + 2.0, 2)
    other.mkdir()
    (other / "simulst_mgcm.json").write_text(json.dumps(shifted))
    assert simulst.main(["--out", str(tmp_path / "both"), "--combine", str(out), str(other)]) == 0
    both = json.loads((tmp_path / "both" / "simulst_mgcm.json").read_text())["arms"]
    for arm, r in both.items():
        for row, mine in zip(r["mean"], arms[arm]["mean"]):
            assert row["k"] == mine["k"] and row["BLEU"] == pytest.approx(mine["BLEU"] + 1.0)
            assert row.get("AL") == (pytest.approx(mine["AL"]) if "AL" in mine else None)
    k1 = arms["mgcm"]["mean"][0]["BLEU"]
    assert f"| mgcm | {k1} / {round(k1 + 2.0, 2)} |" in (tmp_path / "both" / "simulst_mgcm.md").read_text()


def test_bad_arguments_are_named(tmp_path, capsys):
    simulst = recipe()
    with pytest.raises(SystemExit):
        simulst.main(["--out", str(tmp_path), "--arms", "plain,pcgrad2"])
    assert "--arms: unknown ['pcgrad2']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        simulst.main(["--out", str(tmp_path), "--ks", "0,3"])
    assert "--ks: expected comma-separated positive integers, got '0,3'" in capsys.readouterr().err
