"""The one cache folder of the package (tokenizers, the demo corpus, OOMptimizer results, exports)."""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "NEMO_EMMETT_CACHE"


def cache_dir() -> Path:
    """``$NEMO_EMMETT_CACHE``, else ``~/.cache/nemo_emmett``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "nemo_emmett"))


def content_key(files: dict[str, bytes], prefix: str) -> str:
    """``<prefix>-<hash>`` of the files' relative names and bytes (the same files, the same key)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return f"{prefix}-{digest.hexdigest()[:20]}"


def content_folder(files: dict[str, bytes], area: str, prefix: str) -> Path:
    """A folder holding ``files`` ({relative name: bytes}) under ``<cache>/<area>/``, named after their
    content (:func:`content_key`), so it stays readable for as long as a process uses it and is shared by
    every caller with the same files. Where the cache cannot be written (a read-only home, say): a
    folder of this process, removed at its exit, with a WARNING."""
    key = content_key(files, prefix)
    try:
        return _materialise(cache_dir() / area, key, files)
    except OSError as e:
        tmp = Path(tempfile.mkdtemp(prefix=f"emmett-{prefix}-"))
        atexit.register(shutil.rmtree, tmp, True)
        log.warning("Cannot write the cache (%s); using %s for this process (set %s)", e, tmp, CACHE_ENV)
        return _materialise(tmp, key, files)


def _materialise(root: Path, key: str, files: dict[str, bytes]) -> Path:
    target = root / key
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}."))
    for name, data in files.items():
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_bytes(data)
    try:
        os.rename(stage, target)
    except OSError:  # another process got there first: same content
        shutil.rmtree(stage, ignore_errors=True)
        if not target.is_dir():
            raise
    return target
