"""The forgetting recipe end to end at tiny sizes (a smoke test of ``recipes/forgetting.py``): stage 1 text
only, saved as a Hugging Face folder, loaded by stage 2 as its pretrained backbone; three arms; a table."""

import json
import logging
import os

from tests.cli.test_scripts import TINY_DEMO, TINY_MODEL
from tests.recipes.helpers import load_recipe, needs_espeak

pytestmark = needs_espeak


def recipe():
    return load_recipe("forgetting")


def test_the_recipe_runs_both_stages_and_every_arm_then_skips_what_is_done(tmp_path, monkeypatch, caplog):
    from transformers import AutoModelForSeq2SeqLM

    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEMO_EXPM_VERSION", raising=False)
    out = tmp_path / "out"
    args = ["--out", str(out), "--stage1-steps", "3", "--stage2-steps", "2", *TINY_DEMO, *TINY_MODEL,
            "data.num_workers=0", "threads.mode=fixed"]
    forgetting = recipe()
    assert forgetting.main(args) == 0
    # each stage is a run of its own: the version folder exp_manager pins for one run's processes does not
    # outlive it (a later run in this process, or a training subprocess, would write into that version)
    assert "NEMO_EXPM_VERSION" not in os.environ

    AutoModelForSeq2SeqLM.from_pretrained(str(out / "stage1_hf"), local_files_only=True)  # a plain HF folder
    results = json.loads((out / "forgetting.json").read_text())
    assert set(results) == {"stage1", "foundation", "multiplexer", "speech_only", "frozen_lora"}
    assert results["stage1"]["steps"] == 3 and all(results[a]["steps"] == 2 for a in forgetting.ARMS)
    stage1, before = results["stage1"]["scores"], results["foundation"]["scores"]
    mt = [k for k in stage1 if k.startswith(("bleu/mt:", "chrf/mt:"))]
    assert len(mt) == 12  # MT both ways between en and de, fr, es: BLEU and chrF
    # the loaded foundation translates text exactly as the stage-1 model did (same weights, same ids)
    assert {k: before[k] for k in mt} == {k: stage1[k] for k in mt}
    for arm in forgetting.ARMS:  # every arm is scored on every task
        assert {"bleu/mt_avg", "bleu/st_avg", "wer/asr_avg"} <= set(results[arm]["scores"])
    table = (out / "forgetting.md").read_text()
    assert "| frozen_lora | 2 |" in table and "nrefs:1|case:mixed|eff:no|tok:13a" in table

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="forgetting"):
        assert forgetting.main(args) == 0  # again: nothing is trained or scored twice
    assert "stage 1: done before" in caplog.text
    assert all(f"arm {a}: done before" in caplog.text for a in forgetting.ARMS)
    assert json.loads((out / "forgetting.json").read_text()) == results
