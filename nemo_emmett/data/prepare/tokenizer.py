"""A SentencePiece model trained on the training sources' text, cached by what it depends on."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("NEMO_EMMETT_CACHE", Path.home() / ".cache" / "nemo_emmett"))


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
    full_key = {**key, "vocab_size": vocab_size, "model_type": model_type, "symbols": symbols}
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
            character_coverage=1.0,
            hard_vocab_limit=False,
            user_defined_symbols=symbols,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            minloglevel=2,
        )
        os.replace(f"{prefix}.model", model)
    log.info("Trained SentencePiece model %s (vocab %d) on %d lines", model, vocab_size, n)
    return model
