"""Child processes that do not outlive their parent: ``exit_with_parent`` for pool and dataloader workers.

A process killed with SIGKILL runs no clean-up, so its children (dataloader workers, helper pools)
are re-parented to PID 1 and keep running, holding memory, unless the kernel is asked to signal
them when their parent dies."""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
"""``prctl`` option (linux/prctl.h): the signal the calling process gets when its parent dies."""


def exit_with_parent(sig: int = signal.SIGKILL, *, parent_pid: int | None = None) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Call it first thing in a child (a pool ``initializer``, a ``worker_init_fn``). Without it, a worker
    whose parent was killed with SIGKILL is re-parented to PID 1 and waits forever on its task queue.
    If the parent died before the call took effect, the child sends itself ``sig`` at once: when
    ``os.getppid()`` differs from ``parent_pid`` (the pid recorded before the fork; None: the parent at
    call time), or when the multiprocessing process that started it (``multiprocessing.parent_process()``,
    watched through its sentinel pipe) is gone. The kernel watches the thread that forked this process:
    start workers from a thread that lives as long as they should (the main thread). Under a forkserver
    that parent is the server, which never exits while its workers live (each holds its "alive" pipe
    open): use the ``spawn`` or ``fork`` start methods. A no-op off Linux, or where libc cannot be loaded.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid() if parent_pid is None else parent_pid
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG, {int(sig)}) failed: {os.strerror(err)}")
    starter = multiprocessing.parent_process()  # the process that asked for this one (None in a main process)
    if os.getppid() != parent or (starter is not None and not starter.is_alive()):
        os.kill(os.getpid(), sig)
