"""Sharing patterns -> component names, for given tasks."""

import pytest

from nemo_emmett.mammoth.sharing import (
    PATTERNS,
    language_groups,
    sharing_id,
    single_component,
    stack_component,
)

GROUPS = language_groups({"germanic": ["en", "de"], "romance": ["fr", "es"]})


@pytest.mark.parametrize("pattern, encoder, decoder", [
    ("FULL", "full", "full"),
    ("SRC_LANGUAGE", "en", "en"),
    ("TGT_LANGUAGE", "fr", "fr"),
    ("LANGUAGE", "en", "fr"),
    ("SRC_GROUP", "germanic", "germanic"),
    ("TGT_GROUP", "romance", "romance"),
    ("GROUP", "germanic", "romance"),
])
def test_every_pattern_for_en_fr(pattern, encoder, decoder):
    kw = {"source_lang": "en", "target_lang": "fr", "groups": GROUPS}
    assert sharing_id(pattern, side="encoder", **kw) == encoder
    assert sharing_id(pattern, side="decoder", **kw) == decoder
    assert stack_component("encoder", 1, pattern, **kw) == f"encoder.1.{encoder}"
    assert stack_component("decoder", 0, pattern, **kw) == f"decoder.0.{decoder}"


def test_patterns_table_is_complete():
    assert set(PATTERNS) == {"FULL", "SRC_GROUP", "TGT_GROUP", "GROUP", "SRC_LANGUAGE", "TGT_LANGUAGE", "LANGUAGE"}


def test_tasks_share_exactly_what_their_patterns_say():
    tasks = [("en", "de"), ("en", "fr"), ("de", "en"), ("fr", "es")]
    enc = {t: stack_component("encoder", 0, "SRC_LANGUAGE", source_lang=t[0], target_lang=t[1]) for t in tasks}
    dec = {t: stack_component("decoder", 0, "TGT_GROUP", source_lang=t[0], target_lang=t[1], groups=GROUPS)
           for t in tasks}
    assert enc[("en", "de")] == enc[("en", "fr")] == "encoder.0.en"
    assert enc[("de", "en")] == "encoder.0.de"
    assert dec[("en", "fr")] == dec[("fr", "es")] == "decoder.0.romance"
    assert dec[("en", "de")] == dec[("de", "en")] == "decoder.0.germanic"


def test_embeddings_take_the_side_they_are_looked_up_for():
    kw = {"source_lang": "en", "target_lang": "de"}
    assert single_component("embed", "LANGUAGE", side="encoder", **kw) == "embed.en"
    assert single_component("embed", "LANGUAGE", side="decoder", **kw) == "embed.de"
    assert single_component("perception", "FULL", side="encoder", **kw) == "perception.full"


def test_target_specific_encoder_components_are_allowed():
    assert stack_component("encoder", 0, "TGT_LANGUAGE", source_lang="en", target_lang="de") == "encoder.0.de"


def test_bad_input_names_the_culprit():
    with pytest.raises(ValueError, match="unknown sharing pattern 'SOURCE'"):
        sharing_id("SOURCE", side="encoder", source_lang="en", target_lang="de")
    with pytest.raises(ValueError, match="needs a group for language 'cs'"):
        sharing_id("GROUP", side="decoder", source_lang="en", target_lang="cs", groups=GROUPS)
    with pytest.raises(ValueError, match="group 'slavic' lists language 'pl'"):
        language_groups({"slavic": ["cs", "pl"]}, languages=["en", "cs"])
    with pytest.raises(ValueError, match="language 'en' is in two groups"):
        language_groups({"a": ["en"], "b": ["en"]})
    with pytest.raises(ValueError, match="group name 'a.b'"):
        language_groups({"a.b": ["en"]})
