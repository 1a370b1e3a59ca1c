"""How the worker process takes SIGTERM, SIGINT and SIGHUP: as a request to stop soon.

Sent by a terminal's Ctrl+C, an ssh connection that drops, a service manager, or the client's
kill (SIGTERM first, SIGKILL a few seconds later).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any


def stop_on_signals(stop: Callable[[], None]) -> list[signal.Signals]:
    """Have SIGTERM, SIGINT and SIGHUP call ``stop`` (Server.stop: the running job is cancelled,
    so its folder gets error.json instead of reading as interrupted, and no traceback is
    printed); returns the list the signal is put in once it came. A second signal ends the
    process at once (a job stuck where it cannot be cancelled, e.g. loading a model)."""
    stopped: list[signal.Signals] = []

    def handler(signum: int, _frame: Any) -> None:
        if stopped:
            os._exit(128 + signum)
        stopped.append(signal.Signals(signum))
        # Not here: the main thread may hold the output's lock where the signal came.
        threading.Thread(target=stop, name="stop", daemon=True).start()

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):  # Windows has no SIGHUP
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)
    return stopped


def interrupt_on_sigterm() -> None:
    """A command line's SIGTERM (a service manager, ``kill``, a closed terminal's job control)
    taken as Ctrl+C: KeyboardInterrupt, so that the command ends as it does on Ctrl+C (the job's
    folder gets its error.json, workers are stopped, one line is printed) instead of dying
    silently mid-write."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
