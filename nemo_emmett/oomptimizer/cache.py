"""OOMptimizer results cached on disk, keyed by everything the measured memory depends on."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from nemo_emmett.oomptimizer.config import OOMptimizerConfig
from nemo_emmett.oomptimizer.result import CACHE_FORMAT, OOMptimizerResult
from nemo_emmett.parts.cache import cache_dir

log = logging.getLogger(__name__)


def cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_path(cfg: OOMptimizerConfig, key: str) -> Path:

    root = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir() / "oomptimizer"
    return root / f"{key}.json"


def load_cached(path: Path, key: str) -> OOMptimizerResult | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != CACHE_FORMAT or data.get("key") != key:
            return None
        return OOMptimizerResult.from_json(data)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        log.warning("OOMptimizer: ignoring unreadable cache file %s (%s)", path, e)
        return None


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
