"""data.batch_by=components with a modular model: the start-up groups directions by route and every
training batch holds one group (MAMMOTH's one task per step), where mixed batches mix them."""

import itertools

import pytest
from omegaconf import OmegaConf

from nemo_emmett.startup import resolve_run
from tests.conftest import write_text_source
from tests.mammoth.test_modular import modular_cfg, task

SHARED = ["encoder.0.en", "encoder.1.full"], ["decoder.0.full", "decoder.1.full"]
TASKS = [task("mt_en-de", "mt", "en", "de", *SHARED), task("mt_en-fr", "mt", "en", "fr", *SHARED),
         task("mt_de-en", "mt", "de", "en", ["encoder.0.de", "encoder.1.full"], SHARED[1])]


def run_for(spm_path, tmp_path, batch_by):
    sources = []
    for i, (s, t) in enumerate([("en", "de"), ("en", "fr"), ("de", "en")]):
        path = write_text_source(tmp_path / f"mt_{s}-{t}", f"d{i}", 80, seed=i, src=s, tgt=t, max_words=6)
        sources.append({"name": f"mt_{s}-{t}", "path": str(path), "task": "mt", "source_lang": s, "target_lang": t})
    cfg = OmegaConf.create({"model_class": "nemo_emmett.mammoth.modular.ModularTranslation",
                            "model": modular_cfg(spm_path, TASKS),
                            "data": {"train_sources": sources, "validation_sources": [], "batch_by": batch_by,
                                     "num_workers": 0, "text_buckets": {"bins": [[99, 99]], "batch_sizes": [8]}}})
    return resolve_run(cfg)


def directions_per_batch(run, n=40):
    data = run.data_module()
    return [{(t, s, g) for t, s, g in zip(b.batch.tasks, b.batch.source_langs, b.batch.target_langs)}
            for b in itertools.islice(iter(data.train_dataset()), n)]


@pytest.mark.usefixtures("one_torch_thread")
def test_components_batches_hold_one_route_mixed_ones_do_not(spm_path, tmp_path):
    run = run_for(spm_path, tmp_path / "c", "components")
    assert run.batch_groups == {"mt:en-de": "mt:en-de+mt:en-fr", "mt:en-fr": "mt:en-de+mt:en-fr",
                                "mt:de-en": "mt:de-en"}
    grouped = directions_per_batch(run)
    de_en = ("mt", "de", "en")
    assert all(d == {de_en} or de_en not in d for d in grouped)  # never de-en with the others
    assert any(len(d) == 2 for d in grouped)  # en-de and en-fr share a route: they mix
    mixed = directions_per_batch(run_for(spm_path, tmp_path / "m", "mixed"))
    assert any(de_en in d and len(d) > 1 for d in mixed)
