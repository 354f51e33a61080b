"""An exclusive lock on a folder, held for the life of the process.

``fcntl.flock`` on a file inside the folder: the kernel releases it when the process ends, however
it ends (SIGKILL included), so a killed run never leaves a stale lock that blocks its own resume.
The file keeps the holder's pid and host, for the message the next process gets."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO

LOCK_NAME = "run.lock"
_HELD: dict[str, IO[str]] = {}  # folder -> open lock file: closing it would release the lock


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock."""


def lock_folder(folder: str | Path, *, hint: str = "") -> Path:
    """Take the exclusive lock of ``folder`` (created if missing) for the rest of this process; the
    lock file's path. Raises :class:`FolderLockedError` naming the folder, the holder (pid, host, since
    when) and ``hint`` when another process holds it. Taking it again in the same process is a no-op."""
    folder = Path(folder).resolve()
    path = folder / LOCK_NAME
    if str(folder) in _HELD:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 -- held open for the life of the process
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown pid"
        f.close()
        raise FolderLockedError(
            f"{folder} is in use by another run ({holder}; lock file {path}). {hint}".rstrip()
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    _HELD[str(folder)] = f
    return path
