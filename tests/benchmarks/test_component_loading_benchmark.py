"""benchmarks/component_loading.py on a tiny exported modular model: one task loads only its
components (fewer parameters, fewer bytes read than the whole model) and is scored on its Shar."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_emmett.data.prepare.tokenizer import train_sentencepiece
from nemo_emmett.export import export_model
from nemo_emmett.mammoth.modular import ModularTranslation
from nemo_emmett.parts.metrics import score_signatures
from tests.conftest import LINES, write_text_source
from tests.mammoth.test_modular import modular_cfg

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def spm(tmp_path) -> str:
    return str(train_sentencepiece(LINES * 3, vocab_size=60, key={"test": "loading"}, out_dir=tmp_path / "spm",
                                   user_defined_symbols=["<de>", "<en>", "<fr>"]))


def test_one_task_loads_a_fraction_of_the_model_and_is_scored(spm, tmp_path, one_torch_thread):
    torch.manual_seed(0)
    cfg = modular_cfg(spm)
    cfg["decoding"] = {"max_new_tokens": 4}
    model = export_model(ModularTranslation(cfg), tmp_path / "m.emmett")
    for src, tgt in (("en", "de"), ("de", "en"), ("en", "fr")):
        write_text_source(tmp_path / "shar" / "val" / f"mt_{src}-{tgt}", f"{src}{tgt}", 6, src=src, tgt=tgt,
                          max_words=3)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "component_loading.py"), "--model", str(model),
                           "--shar-root", str(tmp_path / "shar"), "--dataset", "val"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    whole, tasks = out["whole"], {t["direction"]: t for t in out["tasks"]}
    assert sorted(tasks) == ["mt:de-en", "mt:en-de", "mt:en-fr"]
    de_en = tasks["mt:de-en"]
    assert de_en["components"] == sorted(["embed.full", "encoder.0.de", "encoder.1.full", "decoder.0.full",
                                          "decoder.1.en"])
    assert de_en["parameters"] < whole["parameters"] and de_en["read_mib"] < whole["read_mib"]
    assert set(de_en["scores"]) == {"bleu", "chrf"}
    assert de_en["signatures"] == score_signatures(["en"])  # the scores carry sacrebleu's signatures
    # the recipe's table prints them under the scores
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "specific.json").write_text(proc.stdout)
    sys.path.insert(0, str(REPO / "recipes"))
    from mammoth_table import tables

    assert f"BLEU signature `{score_signatures(['en'])['bleu']}`" in tables(tmp_path / "tables", ["specific"])
