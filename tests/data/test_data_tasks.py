"""``data.tasks``: train and validate on some tasks' sources only (stage 1 of the forgetting recipe: MT)."""

import logging

import pytest

from nemo_emmett.startup import resolve_sources
from tests.conftest import write_text_source


def sources(tmp_path):
    mt = write_text_source(tmp_path / "mt", "mt", 20)
    return {"train_sources": [{"name": "mt", "path": str(mt), "task": "mt", "source_lang": "en", "target_lang": "de"},
                              {"name": "asr", "path": str(mt), "task": "asr", "source_lang": "en", "target_lang": "en"}],
            "validation_sources": [{"name": "val_asr", "path": str(mt), "task": "asr", "source_lang": "en",
                                    "target_lang": "en"}]}


def test_only_the_sources_of_the_tasks_given_are_kept_and_the_others_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="nemo_emmett.startup"):
        cfg = resolve_sources({**sources(tmp_path), "tasks": ["mt"]})
    assert [s["name"] for s in cfg.train_sources] == ["mt"] and cfg.validation_sources == []
    assert "left out: asr (asr)" in caplog.text and "left out: val_asr (asr)" in caplog.text
    assert [s["name"] for s in resolve_sources(sources(tmp_path)).train_sources] == ["mt", "asr"]  # null: all


def test_a_filter_that_leaves_nothing_or_names_no_task_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"data.tasks=\['st'\] leaves no train_sources: their tasks are \['asr', 'mt'\]"):
        resolve_sources({**sources(tmp_path), "tasks": ["st"]})
    with pytest.raises(ValueError, match=r"data.tasks: unknown task\(s\) \['tts'\]"):
        resolve_sources({**sources(tmp_path), "tasks": ["tts"]})
