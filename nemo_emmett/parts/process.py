"""Child processes that do not outlive their parent: ``exit_with_parent`` for pool and dataloader workers."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def exit_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Call it first thing in a child (a pool ``initializer``, a ``worker_init_fn``). Without it, a worker
    whose parent was killed with SIGKILL is re-parented to PID 1 and waits forever on its task queue.
    If the parent died while the call ran (its id changed), the child sends itself ``sig`` at once. The parent is the process that forked this one: for a forkserver's workers that
    is the forkserver, which itself exits when the main process does (its pipe to it closes).
    A no-op off Linux, or where libc cannot be loaded.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died between reading its id and prctl taking effect
        os.kill(os.getpid(), sig)
