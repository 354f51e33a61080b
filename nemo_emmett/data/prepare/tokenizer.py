"""A SentencePiece model trained on the training sources' text, cached by what it depends on.

Trained at start-up (``nemo_emmett/startup.py``), before the data plan and the model, which both
receive the resulting tokenizer."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from nemo_emmett.data.shar import content_key
from nemo_emmett.data.sources import SourceSpec
from nemo_emmett.parts.cache import cache_dir

log = logging.getLogger(__name__)

TRAINER_SETTINGS = {"character_coverage": 1.0, "hard_vocab_limit": False,
                    "pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3}
"""SentencePiece trainer arguments fixed here; part of every cache key, so changing one retrains."""


def train_sentencepiece(
    texts: Iterable[str],
    *,
    vocab_size: int,
    key: dict,
    out_dir: str | Path | None = None,
    model_type: str = "unigram",
    user_defined_symbols: list[str] | None = None,
) -> Path:
    """Train (or reuse) ``<out_dir>/spm_<hash>.model``; ``key`` must describe the texts (e.g. their
    folders and sizes) so that a different corpus gets a different model."""
    import sentencepiece as spm

    symbols = sorted(user_defined_symbols or [])
    full_key = {**key, "vocab_size": vocab_size, "model_type": model_type, "symbols": symbols,
                "trainer": TRAINER_SETTINGS}
    digest = hashlib.sha1(json.dumps(full_key, sort_keys=True).encode()).hexdigest()[:12]
    out_dir = Path(out_dir) if out_dir is not None else cache_dir() / "tokenizers"
    model = out_dir / f"spm_{digest}.model"
    if model.is_file():
        return model
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        n = 0
        with corpus.open("w") as f:
            for t in texts:
                if t.strip():
                    f.write(t.replace("\n", " ") + "\n")
                    n += 1
        if n == 0:
            raise ValueError("no text to train a SentencePiece model on")
        prefix = Path(tmp) / "spm"
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            user_defined_symbols=symbols,
            minloglevel=2,
            **TRAINER_SETTINGS,
        )
        os.replace(f"{prefix}.model", model)
    log.info("Trained SentencePiece model %s (vocab %d) on %d lines", model, vocab_size, n)
    return model


def tokenizer_for_sources(specs: list[SourceSpec], *, vocab_size: int, sample_examples: int,
                          allow_incomplete: bool = False) -> Path:
    """The SentencePiece model of a run without a tokenizer of its own: trained (or reused from the
    cache) on the source and target text of the first ``sample_examples`` examples, spread evenly over
    the training ``specs`` (resolved: ``num_examples`` known), with each target-language tag (``<de>``)
    as one token.

    Cached by content, not by path: the key holds each source's :func:`~nemo_emmett.data.shar.content_key`
    (its completion marker's fingerprint, or its shard files' sizes and times when it has no marker and
    ``allow_incomplete``), what is read from it (task, languages, examples per source) and the trainer
    settings, so a folder re-prepared in place with new text trains a new model."""
    from nemo_emmett.data.examples import source_text, target_text
    from nemo_emmett.data.plan import sample_examples as first_examples

    if not specs:
        raise ValueError("no training sources to train a SentencePiece model on")
    per_source = max(1, sample_examples // len(specs))

    def texts() -> Iterable[str]:  # read only when the model is not cached
        for sample in first_examples(specs, per_source):
            for e in sample:
                yield from (source_text(e), target_text(e))

    key = {"sources": [{"content": content_key(s.path, allow_incomplete=allow_incomplete), "task": s.task,
                        "source_lang": s.source_lang, "target_lang": s.target_lang} for s in specs],
           "per_source": per_source}
    langs = sorted({s.target_lang for s in specs})
    return train_sentencepiece(texts(), vocab_size=vocab_size, key=key, user_defined_symbols=[f"<{lang}>" for lang in langs])
