"""Every wait on a worker has a bound: when a worker counts as hung, and what its jobs then say.

WorkerClient asks ``overdue()`` on each poll and in each wait, once its queue is read, and stops
the worker (its process group) when it answers. No bpy, no threads: plain rules and messages.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import WORKER_EXITED, ShapEError
from .transport import WorkerProcess

# A worker that says nothing for this long while a job of it runs is taken for hung and stopped.
# Every stage reports progress far more often (a sampling step, a thousandth of the decoding, a
# downloaded chunk): minutes of silence mean a stuck process, not a slow one.
SILENCE_TIMEOUT_S = 300.0
# The longest one poll handles messages before it looks at the clock again: a worker that floods
# its output must not keep this watch and the caller's deadline (and Blender's UI, which polls on
# its main thread) waiting for the queue to run dry.
PUMP_BUDGET_S = 0.1

RELEASED = ShapEError(
    WORKER_EXITED, "the worker was released while the job ran", "press Generate to start again"
)
DETACHED = ShapEError(
    WORKER_EXITED,
    "Blender stopped listening while the job ran; the worker finishes it alone",
    "its result goes to its job folder: import it from Recent Jobs",
)


def overdue(
    w: WorkerProcess, sent: list[float], hello_timeout: float, silence_timeout: float, now: float
) -> float | None:
    """How long ``w`` has been silent past its bound, or None while it is within it.

    Before its hello the bound is ``hello_timeout`` from the hello's sending (it imports torch
    first: silent for seconds). After it, ``silence_timeout`` since its last line while any
    request of it waits (``sent``: their sending times), counted from the earliest sending when
    it was idle before. 0 is no bound.
    """
    if w.hello is not None and not w.hello.done:
        waited = now - w.hello.sent_at
        return waited if 0 < hello_timeout < waited else None
    if silence_timeout <= 0 or not sent:
        return None
    silent = now - max(w.last_heard, min(sent))
    return silent if silent >= silence_timeout else None


def _with_tail(message: str, tail: str) -> str:
    return message + (f"; the end of its log:\n{tail}" if tail else "")


def no_hello(waited: float, tail: str, log_path: Path, check: str) -> ShapEError:
    return ShapEError(
        WORKER_EXITED,
        _with_tail(f"the worker did not answer hello within {waited:g} s, so it was stopped", tail),
        f"the whole log is in {log_path}; {check}",
    )


def silent(seconds: float, tail: str, log_path: Path) -> ShapEError:
    return ShapEError(
        WORKER_EXITED,
        _with_tail(
            f"the worker said nothing for {seconds:.0f} s while a job ran, so it was stopped", tail
        ),
        f"the whole log is in {log_path}; press Generate to start a new worker. If a step really "
        "takes this long here, raise the silence timeout (silence_timeout in the add-on's "
        "preferences)",
        "silence_timeout",
    )
