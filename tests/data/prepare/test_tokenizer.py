"""The start-up tokenizer: trained once on the sources' text, then reused without reading the data."""

import pytest

import nemo_emmett.data.plan as plan
from nemo_emmett.data.plan import resolve_sources
from nemo_emmett.data.prepare.tokenizer import tokenizer_for_sources


def test_a_cached_tokenizer_reads_no_examples(tmp_path, monkeypatch, text_sources):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    specs = resolve_sources([{"name": "a", "path": str(text_sources["a"]), "task": "mt", "source_lang": "en",
                              "target_lang": "de"}], "train_sources")
    first = tokenizer_for_sources(specs, vocab_size=40, sample_examples=100)
    monkeypatch.setattr(plan, "sample_examples", lambda *a, **k: pytest.fail("read examples for a cached tokenizer"))
    assert tokenizer_for_sources(specs, vocab_size=40, sample_examples=100) == first
