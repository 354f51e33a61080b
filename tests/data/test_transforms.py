"""Transforms of training examples: each filter's keep/drop decisions on crafted pairs, subword sampling
(fixed for a seed, not the best segmentation, the same text), parsing and its errors, and the pipeline."""

import json
import random

import pytest

from nemo_emmett.data.config import parse_data_config
from nemo_emmett.data.examples import make_text_example, source_text, subword_sampling
from nemo_emmett.data.filters import length_ratio, longest_repeat, numerals, punctuation_ratio, terminal
from nemo_emmett.data.sources import SourceSpec
from nemo_emmett.data.transform import Rejected
from nemo_emmett.data.transforms import (
    TRANSFORMS,
    SourceTransforms,
    describe,
    parse_transform,
    parse_transforms,
)
from nemo_emmett.parts.text_processor import TextProcessor


def pair(source: str, target: str, i: int = 0):
    return make_text_example(example_id=f"x{i}", source_text=source, target_text=target, source_lang="en",
                             target_lang="de", dataset="d")


def verdict(entry: dict, source: str, target: str) -> str:
    out = parse_transform(entry, "t")(pair(source, target), random.Random(0))
    return out.reason if isinstance(out, Rejected) else "keep"


CASES = [
    # (transform, source, target, verdict)
    ({"name": "filter_length"}, "a b c", "x y", "keep"),
    ({"name": "filter_length"}, "a b c", "", "length"),  # min_tokens: 1 by default
    ({"name": "filter_length", "max_tokens": 3}, "a b c", "w x y z", "length"),
    ({"name": "filter_length", "max_tokens": 4}, "a b c", "w x y z", "keep"),
    ({"name": "filter_length", "min_tokens": None, "max_tokens": None, "max_chars": 5}, "abcde", "abcdef", "length"),
    ({"name": "filter_length", "min_tokens": None, "max_tokens": None, "min_chars": 5}, "abcde", "abcde", "keep"),
    ({"name": "filter_ratio", "max_ratio": 2}, "a b", "w x y z", "keep"),  # exactly 2: kept
    ({"name": "filter_ratio", "max_ratio": 2}, "a b", "v w x y z", "length_ratio"),
    ({"name": "filter_ratio", "max_ratio": 2, "unit": "chars"}, "ab", "abcde", "length_ratio"),
    ({"name": "filter_ratio", "max_ratio": 3, "unit": "chars"}, "ab cd", "ab", "keep"),  # 5 / 2 chars
    ({"name": "filter_repetition"}, "ha ha ha", "x", "keep"),  # 3 copies: not more than 3
    ({"name": "filter_repetition"}, "ha ha ha ha", "x", "repetition"),
    ({"name": "filter_repetition"}, "x", "a b a b a b a b", "repetition"),  # a bigram, 4 times
    ({"name": "filter_repetition", "max_ngram": 1}, "x", "a b a b a b a b", "keep"),
    ({"name": "filter_repetition", "unit": "chars", "max_repeats": 4}, "nooooo", "nein", "repetition"),
    ({"name": "filter_repetition", "unit": "chars", "max_repeats": 5}, "nooooo", "nein", "keep"),
    ({"name": "filter_numerals"}, "It cost 1,000 dollars in 2024.", "Es kostete 2024 1.000 Dollar.", "keep"),
    ({"name": "filter_numerals"}, "Room 12", "Zimmer 21", "numerals"),
    ({"name": "filter_numerals"}, "3 cats", "drei Katzen", "numerals"),
    ({"name": "filter_numerals"}, "no digits", "keine Ziffern", "keep"),
    ({"name": "filter_punctuation"}, "Is it?", "Ist es?", "keep"),
    ({"name": "filter_punctuation"}, "Is it?", "Es ist.", "terminal_punctuation"),
    ({"name": "filter_punctuation"}, 'He said "go."', "Er sagte: »Geh.«", "keep"),
    ({"name": "filter_punctuation"}, "Hello", "Hallo.", "terminal_punctuation"),
    ({"name": "filter_punctuation", "terminal": False, "max_ratio": 2}, "a, b, c, d", "a b c d", "punctuation_ratio"),
    ({"name": "filter_punctuation", "terminal": False, "max_ratio": 2}, "a, b", "a b", "keep"),  # (1+1)/(0+1)
]


@pytest.mark.parametrize(("entry", "source", "target", "expected"), CASES)
def test_filters_keep_and_drop_crafted_pairs(entry, source, target, expected):
    assert verdict(entry, source, target) == expected


def test_filter_arithmetic_exact():
    assert longest_repeat(["a", "b", "a", "b", "a", "b", "c"], 1, 4) == 3
    assert longest_repeat(["a", "a", "b", "a", "a", "b"], 1, 4) == 2  # "a a" twice; "a a b" twice
    assert longest_repeat(["a", "b", "c"], 1, 4) == 1 and longest_repeat([], 1, 4) == 0
    assert longest_repeat("abcabcabc", 3, 3) == 3 and longest_repeat("abcabcabc", 1, 2) == 1
    assert numerals("1,000 in 2024 and ٣") == ["000", "1", "2024", "3"]
    assert length_ratio(0, 0) == 1.0 and length_ratio(0, 3) == float("inf") and length_ratio(2, 5) == 2.5
    assert punctuation_ratio("a, b, c.", "a b") == 4.0
    assert [terminal(t) for t in ("Wie?", "Oui !", "好。", "x", "", "ok.)")] == [
        "question", "exclamation", "stop", None, None, "stop"]


def test_filters_never_edit_the_example():
    ex = pair("ha ha ha ha", "x")
    parse_transform({"name": "filter_repetition"}, "t")(ex, random.Random(0))
    assert source_text(ex) == "ha ha ha ha" and "subword_sampling" not in ex.custom


# ---- parsing and bad input --------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "filter_lenght"}, "unknown transform name 'filter_lenght'; known: filter_length, filter_ratio, "
                                "filter_repetition, filter_numerals, filter_punctuation, subword_sampling"),
    ({"name": "filter_length", "min_tokens": 5, "max_tokens": 2}, "(filter_length): min_tokens=5 > max_tokens=2"),
    ({"name": "filter_length", "max_chars": -1}, "max_chars must be an integer >= 0 or null, got -1"),
    ({"name": "filter_ratio", "max_ratio": 0.5}, "(filter_ratio): max_ratio must be a number >= 1, got 0.5"),
    ({"name": "filter_ratio", "unit": "words"}, "unit must be one of tokens, chars, got 'words'"),
    ({"name": "filter_repetition", "max_repeats": 0}, "max_repeats must be an integer >= 1, got 0"),
    ({"name": "filter_repetition", "min_ngram": 3, "max_ngram": 2}, "min_ngram=3 > max_ngram=2"),
    ({"name": "filter_punctuation", "terminal": False}, "checks nothing"),
    ({"name": "filter_length", "max_token": 3}, "(filter_length): unknown option(s) ['max_token']; filter_length "
                                                "takes min_tokens, max_tokens, min_chars, max_chars"),
    ({"name": "filter_numerals", "x": 1}, "filter_numerals takes no options"),
    ({"name": "subword_sampling", "nbest_size": 1}, "nbest_size must be -1 (the whole lattice) or an integer >= 2, got 1"),
    ({"name": "subword_sampling", "alpha": 0}, "alpha must be a finite number > 0, got 0"),
    ({"max_tokens": 3}, "expected a mapping with a 'name'"),
])
def test_bad_entries_name_the_key_and_value(entry, message):
    with pytest.raises(ValueError) as e:
        parse_transforms([{"name": "filter_numerals"}, entry], "data.transforms")
    assert message in str(e.value)
    assert str(e.value).startswith("data.transforms[1]")


def test_errors_reach_the_data_config_and_the_source():
    with pytest.raises(ValueError, match=r"data\.transforms\[0\] \(filter_ratio\): max_ratio must be"):
        parse_data_config({"transforms": [{"name": "filter_ratio", "max_ratio": 0.9}]})
    with pytest.raises(ValueError, match=r"source 'a': transforms\[0\]: unknown transform name 'noise'; known: "):
        SourceSpec(name="a", path="p", task="mt", source_lang="en", target_lang="de", transforms=[{"name": "noise"}])
    with pytest.raises(ValueError, match="expected a list of transforms"):
        parse_transforms({"name": "filter_length"}, "data.transforms")


def test_defaults_come_from_the_dataclasses():
    cfg = parse_data_config({"transforms": [{"name": "filter_length", "max_tokens": 50}]})
    assert cfg.transforms == [{"name": "filter_length", "max_tokens": 50}]
    (t,) = parse_transforms(cfg.transforms, "data.transforms")
    assert t.options() == {"name": "filter_length", "min_tokens": 1, "max_tokens": 50, "min_chars": None,
                           "max_chars": None}
    assert describe([t, TRANSFORMS["subword_sampling"]()]) == "filter_length(max_tokens=50), subword_sampling"
    spec = SourceSpec(name="a", path="p", task="mt", source_lang="en", target_lang="de", transforms=[t.options()])
    assert spec.transforms == (t,)  # a parsed entry round-trips through its options


# ---- the pipeline -----------------------------------------------------------------------------------

def test_pipeline_runs_in_order_stops_at_the_first_rejection_and_is_a_pure_function():
    steps = parse_transforms([{"name": "filter_length", "max_tokens": 3}, {"name": "subword_sampling"}], "t")
    pipe = SourceTransforms(("a", "b"), (steps, ()), seed=7, slot=1)
    assert pipe(0, pair("a b c d", "x"), 5) == Rejected("length")
    kept = pipe(0, pair("a b", "x"), 5)
    assert subword_sampling(kept) == subword_sampling(pipe(0, pair("a b", "x"), 5))  # same draw: same seed
    assert subword_sampling(kept) != subword_sampling(pipe(0, pair("a b", "x"), 6))  # next draw: another
    other = SourceTransforms(("a", "b"), (steps, ()), seed=7, slot=2)
    assert subword_sampling(other(0, pair("a b", "x"), 5)) != subword_sampling(kept)  # another slot: another
    untouched = pair("a b c d e", "x")
    assert pipe(1, untouched, 5) is untouched  # source b has no transforms


# ---- subword sampling -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spm_text(tmp_path_factory):
    from nemo_emmett.data.prepare.tokenizer import train_sentencepiece

    lines = [f"the {w} sampled {v} segmentation" for w in ("quick", "quiet", "quilted", "quaint")
             for v in ("bravely", "brightly", "briskly")]
    path = train_sentencepiece(lines * 5, vocab_size=45, key={"test": "sampling"},
                               out_dir=tmp_path_factory.mktemp("spm"))
    return TextProcessor(spm_path=str(path))


def test_sampling_is_fixed_for_a_seed_differs_from_the_best_and_keeps_the_text(spm_text):
    text = "the quilted sampled briskly segmentation"
    best = spm_text.source_ids(text)
    t = parse_transform({"name": "subword_sampling", "alpha": 0.1}, "t")
    ex = t(pair(text, text), random.Random(3))
    sampling = subword_sampling(ex)
    first = spm_text.source_ids(text, sampling=sampling)
    spm_text.source_ids("the quick sampled bravely segmentation", sampling=sampling.for_target())  # in between
    assert spm_text.source_ids(text, sampling=sampling) == first  # reseeded: what came before does not matter
    assert first != best
    assert spm_text.decode(first) == text
    target = spm_text.target_ids(text, sampling=sampling)
    assert target[-1] == spm_text.eos_id and spm_text.decode(target) == text
    assert target[:-1] != first  # the target side has its own seed
    seeds = {tuple(spm_text.source_ids(text, sampling=subword_sampling(t(pair(text, text), random.Random(k)))))
             for k in range(20)}
    assert len(seeds) > 5 and all(spm_text.decode(list(s)) == text for s in seeds)
    assert spm_text.source_ids(text) == best  # no sampling: the best segmentation, whatever came before


def test_sampling_is_the_same_in_another_process(spm_text):
    """A resumed run is a new process: the same seed must give the same segmentation there (SentencePiece's
    own enable_sampling does not: its generator ignores the seed across processes)."""
    import subprocess
    import sys

    from nemo_emmett.parts.subword_sampling import SubwordSampling

    text = "the quilted sampled briskly segmentation"
    mine = [spm_text.source_ids(text, sampling=SubwordSampling(0.5, -1, seed)) for seed in range(8)]
    code = ("import json, sys; from nemo_emmett.parts.text_processor import TextProcessor; "
            "from nemo_emmett.parts.subword_sampling import SubwordSampling; t = TextProcessor(spm_path=sys.argv[1]); "
            f"print(json.dumps([t.source_ids({text!r}, sampling=SubwordSampling(0.5, -1, s)) for s in range(8)]))")
    out = subprocess.run([sys.executable, "-c", code, spm_text.spm_path], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == mine
    assert len({tuple(m) for m in mine}) > 2  # they are samples, not the best segmentation each time


def test_sampling_needs_a_sentencepiece_tokenizer(tmp_path):
    from nemo_emmett.parts.subword_sampling import SubwordSampling

    tp = TextProcessor.__new__(TextProcessor)
    tp.spm_path, tp.hf_path, tp._tok = None, "some/hf-folder", None
    with pytest.raises(ValueError, match="subword_sampling .* needs a SentencePiece tokenizer; .*'some/hf-folder'"):
        tp.encode("x", SubwordSampling(0.1, -1, 0))
