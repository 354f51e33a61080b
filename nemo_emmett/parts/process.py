"""Helper processes die with the process that started them.

A process killed with SIGKILL runs no clean-up, so its children (dataloader workers, helper pools)
are re-parented to PID 1 and keep running, holding memory, unless the kernel is asked to signal
them when their parent dies."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
"""``prctl`` option (linux/prctl.h): the signal the calling process gets when its parent dies."""


def exit_with_parent(sig: int = signal.SIGKILL, *, parent_pid: int | None = None) -> None:
    """The calling process gets ``sig`` when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), and
    exits at once if the parent already died: ``os.getppid()`` differs from ``parent_pid`` (the pid
    recorded before the fork; None: the parent at call time, which cannot tell). No-op off Linux.

    The kernel ties the signal to the parent *thread* that forked this process: call it in a child
    forked (or spawned) from a thread that lives as long as the parent process, e.g. its main thread."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG, {int(sig)}) failed: {os.strerror(err)}")
    if parent_pid is not None and os.getppid() != parent_pid:  # died between the fork and the prctl
        os._exit(1)
