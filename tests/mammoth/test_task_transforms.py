"""The MAMMOTH task table's ``transforms``: checked when parsed, handed to the sources of the task's direction."""

import pytest

from nemo_emmett.mammoth.tasks import ModularTaskConfig, with_task_transforms

NUMERALS = [{"name": "filter_numerals"}]


def source(name, tgt, **kw):
    return {"name": name, "task": "mt", "source_lang": "en", "target_lang": tgt, **kw}


def test_a_tasks_transforms_reach_its_sources_unless_they_list_their_own():
    tasks = [ModularTaskConfig(name="mt_en-de", source_lang="en", target_lang="de", transforms=NUMERALS),
             ModularTaskConfig(name="mt_en-fr", source_lang="en", target_lang="fr")]
    got = with_task_transforms([source("a", "de"), source("b", "de", transforms=[]), source("c", "fr")], tasks)
    assert [s.get("transforms") for s in got] == [NUMERALS, [], None]


def test_a_bad_task_transform_names_the_task_and_the_known_list():
    with pytest.raises(ValueError, match=r"task 'mt_en-de': transforms\[0\]: unknown transform name 'mask'; known: "
                                         r"filter_length, .*subword_sampling"):
        ModularTaskConfig(name="mt_en-de", source_lang="en", target_lang="de", transforms=[{"name": "mask"}])
