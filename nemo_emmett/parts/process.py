"""Child processes that do not outlive their parent: ``exit_with_parent`` for pool and dataloader workers."""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def exit_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Call it first thing in a child (a pool ``initializer``, a ``worker_init_fn``). Without it, a worker
    whose parent was killed with SIGKILL is re-parented to PID 1 and waits forever on its task queue.
    If the parent died before the call took effect (a spawned worker may take seconds to import its
    way there), the child sends itself ``sig`` at once: when its parent id changed meanwhile, or when
    the multiprocessing process that started it (``multiprocessing.parent_process()``, watched through
    its sentinel pipe) is gone. The kernel watches the thread that forked this process: start workers
    from a thread that lives as long as they should (the main thread). Under a forkserver that parent
    is the server, which never exits while its workers live (each holds its "alive" pipe open): use the
    ``spawn`` or ``fork`` start methods. A no-op off Linux, or where libc cannot be loaded.
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
    starter = multiprocessing.parent_process()  # the process that asked for this one (None in a main process)
    if os.getppid() != parent or (starter is not None and not starter.is_alive()):
        os.kill(os.getpid(), sig)
