"""The one cache folder of the package (tokenizers, the demo corpus, OOMptimizer results, exports)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NEMO_EMMETT_CACHE"


def cache_dir() -> Path:
    """``$NEMO_EMMETT_CACHE``, else ``~/.cache/nemo_emmett``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "nemo_emmett"))
