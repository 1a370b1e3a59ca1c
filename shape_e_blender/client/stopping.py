"""How a WorkerClient lets its worker go: politely (shutdown), alone (detach), at once (kill), and
the reaping of stopped workers' threads (join). Functions of the client, kept apart from its
requests and messages.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from . import watchdog
from .process import kill_now, kill_tree, stop_after

if TYPE_CHECKING:
    from .client import WorkerClient


def shutdown(c: WorkerClient, timeout: float = 10.0, *, wait: bool = True) -> None:
    """Ask the worker to finish its jobs and exit; kill it if it lingers past ``timeout``.

    ``wait=False`` returns at once (Blender's UI thread): a thread waits out ``timeout``
    instead, and join() collects it later.
    """
    w = c._worker
    if w is None:
        return
    c._worker = None
    if w.running:
        c._send(w, "shutdown", {})
        w.close_input()
        if wait:
            stop_after(w.popen, timeout)
        else:
            stopper = threading.Thread(
                target=stop_after, args=(w.popen, timeout), name="shape_e-stop", daemon=True
            )
            w.threads.append(stopper)
            stopper.start()
    c._retire(w)
    c.join(5.0 if wait else 0.0)


def detach(c: WorkerClient, timeout: float = 5.0) -> bool:
    """Leave the worker to finish its jobs alone (Blender quits while one runs): it writes
    their results into their job folders, then exits; this side stops listening now and its
    jobs fail here with WORKER_EXITED. Returns True once the worker has let go of its pipes
    and every reader thread has ended (within ``timeout``); otherwise (a worker that does not
    know how to detach, or is hung) it is killed and False is returned."""
    w = c._worker
    if w is None or not w.running:
        c.kill()
        return True
    c._worker = None
    w.released = w.detached = True
    c._send(w, "shutdown", {"detach": True})
    w.close_input()
    c._fail_pending(w.generation, watchdog.DETACHED)
    c._retire(w)
    deadline = time.monotonic() + timeout
    for t in w.threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if not w.threads_alive():
        return True
    w.note(f"the worker did not let go of its pipes within {timeout:g} s: stopping it")
    kill_tree(w.popen)
    c.join(5.0)
    return False


def kill(c: WorkerClient, *, wait: bool = True) -> None:
    """Hard release: stop the process now (frees its GPU memory); running jobs fail.

    Workers still finishing after shutdown(wait=False) go too. ``wait=False`` returns at once
    (Blender's UI thread): the reader threads reap the process, and join() collects them later.
    """
    w = c._worker
    c._worker = None
    if w is not None:
        w.released = True
        c._fail_pending(w.generation, watchdog.RELEASED)
        c._retire(w)
    for old in c._old:
        # A live reader thread may mean children that outlived the worker and hold its pipes.
        # A detached worker finishes its jobs alone, holding none of them.
        if (old.running and not old.detached) or old.threads_alive():
            old.released = True
            (kill_tree if wait else kill_now)(old.popen)
    c.join(5.0 if wait else 0.0)


def join(c: WorkerClient, timeout: float = 5.0) -> None:
    """Wait for the threads of stopped workers (Blender must not exit with them).

    ``join(0)`` only forgets those that have finished: it never blocks.
    """
    for w in c._old:
        for t in w.threads:
            t.join(timeout)
    # Keep the last two for their stderr tail (their exit may not be polled yet).
    c._old = [w for i, w in enumerate(c._old) if i >= len(c._old) - 2 or w.threads_alive()]
