"""The direction key: one spelling of ``task:src-tgt`` for data, models and MAMMOTH."""

from __future__ import annotations

import pytest

from nemo_emmett.data.examples import direction, direction_key, make_text_example, parse_direction
from nemo_emmett.data.sources import SourceSpec


def test_direction_key_round_trips():
    assert direction_key("st", "en", "de") == "st:en-de"
    for parts in (("mt", "en", "de"), ("asr", "en", "en"), ("st", "pt_BR", "fr")):
        assert parse_direction(direction_key(*parts)) == parts


def test_every_spelling_agrees():
    ex = make_text_example(example_id="x", source_text="a", target_text="b", source_lang="de", target_lang="en",
                           dataset="d")
    spec = SourceSpec(name="s", path="p", task="mt", source_lang="de", target_lang="en")
    assert direction(ex) == spec.direction == direction_key("mt", "de", "en") == "mt:de-en"


@pytest.mark.parametrize("key", ["mt", "mt:en", "mt:en-", ":en-de", "mt:en-zh-Hans", "mt:en-de:x", None])
def test_parse_direction_rejects_what_it_cannot_split(key):
    with pytest.raises(ValueError, match="is not of the form <task>:<source_lang>-<target_lang>"):
        parse_direction(key)
