import gzip

import pytest

from nemo_emmett.data.prepare.templates import (
    VARIABLES,
    all_directions,
    corpus_paths,
    discover_pairs,
    expand_template,
    parse_pairs,
    template_variables,
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{src_lang}", "fr"),
        ("{tgt_lang}", "de"),
        ("{lang_pair}", "fr-de"),
        ("{sorted_pair}", "de-fr"),
        ("{side_a}", "de"),
        ("{side_b}", "fr"),
        ("data/{lang_pair}/train.{src_lang}.gz", "data/fr-de/train.fr.gz"),
        ("literal {{braces}}/{side_a}", "literal {braces}/de"),
    ],
)
def test_expand_each_variable(template, expected):
    assert expand_template(template, "fr", "de") == expected


def test_variables_cover_all_names():
    assert set(template_variables("en", "de")) == set(VARIABLES)


def test_unknown_variable_names_template_variable_and_allowed():
    with pytest.raises(ValueError) as err:
        expand_template("data/{foo}/train.{src_lang}", "en", "de")
    msg = str(err.value)
    assert "'data/{foo}/train.{src_lang}'" in msg
    assert "{foo}" in msg
    for var in VARIABLES:
        assert "{" + var + "}" in msg


def test_directional_paths_per_direction():
    paths = corpus_paths("d/{lang_pair}/train.{src_lang}", "d/{lang_pair}/train.{tgt_lang}",
                         [("en", "de"), ("de", "en")], "directional")
    assert paths == {
        ("en", "de"): ("d/en-de/train.en", "d/en-de/train.de"),
        ("de", "en"): ("d/de-en/train.de", "d/de-en/train.en"),
    }


def test_symmetric_paths_serve_both_directions_from_one_corpus():
    paths = corpus_paths("d/{sorted_pair}/train.{side_a}", "d/{sorted_pair}/train.{side_b}",
                         [("en", "de"), ("de", "en")], "symmetric")
    # side_a = de, side_b = en: the source file is always the file of the source language
    assert paths == {
        ("de", "en"): ("d/de-en/train.de", "d/de-en/train.en"),
        ("en", "de"): ("d/de-en/train.en", "d/de-en/train.de"),
    }


def test_symmetric_rejects_direction_dependent_variables():
    with pytest.raises(ValueError, match=r"\{src_lang\}.*symmetric mode"):
        corpus_paths("d/{sorted_pair}/train.{src_lang}", "d/{sorted_pair}/train.{side_b}", [("en", "de")], "symmetric")


def test_unknown_mode_and_same_file_for_both_sides():
    with pytest.raises(ValueError, match="'both'"):
        corpus_paths("a.{src_lang}", "a.{tgt_lang}", [("en", "de")], "both")
    with pytest.raises(ValueError, match="same file 'train.de-en'"):
        corpus_paths("train.{sorted_pair}", "train.{sorted_pair}", [("en", "de")], "directional")


def test_parse_pairs():
    assert parse_pairs("en-de, en-fr") == [("en", "de"), ("en", "fr")]
    for bad in ("en", "en-en", "en-de-fr", ",", "-de"):
        with pytest.raises(ValueError):
            parse_pairs(bad)


def test_all_directions():
    assert all_directions(["en", "de", "en"]) == [("en", "de"), ("de", "en")]


def test_discover_directional_pairs(tmp_path):
    for pair, langs in (("en-de", ("en", "de")), ("en-fr", ("en",))):  # en-fr lacks its .fr side
        (tmp_path / pair).mkdir()
        for lang in langs:
            (tmp_path / pair / f"train.{lang}").write_text("x\n")
    found = discover_pairs(f"{tmp_path}/{{lang_pair}}/train.{{src_lang}}", f"{tmp_path}/{{lang_pair}}/train.{{tgt_lang}}",
                           ["en", "de", "fr"], "directional")
    assert found == [("en", "de")]


def test_discover_symmetric_pairs_gives_both_directions(tmp_path):
    (tmp_path / "de-en").mkdir()
    for lang in ("de", "en"):
        (tmp_path / "de-en" / f"train.{lang}").write_text("x\n")
    found = discover_pairs(f"{tmp_path}/{{sorted_pair}}/train.{{side_a}}",
                           f"{tmp_path}/{{sorted_pair}}/train.{{side_b}}", ["en", "de", "fr"], "symmetric")
    assert sorted(found) == [("de", "en"), ("en", "de")]


def test_discover_multiway_layout(tmp_path):
    for lang in ("en", "de", "cs"):
        with gzip.open(tmp_path / f"train.{lang}.gz", "wt") as f:
            f.write("x\n")
    found = discover_pairs(f"{tmp_path}/train.{{src_lang}}.gz", f"{tmp_path}/train.{{tgt_lang}}.gz",
                           ["en", "de", "fr", "cs"], "directional")
    assert found == [("en", "de"), ("en", "cs"), ("de", "en"), ("de", "cs"), ("cs", "en"), ("cs", "de")]
