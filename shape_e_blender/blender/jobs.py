"""The add-on's one worker client and the one job it runs at a time.

Only Blender's main thread calls in here. An operator starts a job with begin(); tick() then polls
the client (from a bpy.app.timers function in the UI, in a loop in background mode), keeps
``status`` up to date for the panel, and runs the job's finish step (the scene import) once the
worker has answered. Runtime state lives here in Python, not in scene properties: undo and file
saves must not rewind or store a progress bar.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
from bpy.app.handlers import persistent

from ..core.errors import CANCELLED, INTERNAL_ERROR, JOB_FAILED, ShapEError
from .client import Job, WorkerClient

BUSY_MESSAGE = "a Shap-E job is already running: wait for it to finish, or press Cancel"
TIMER_INTERVAL_S = 0.1
STAGE_LABELS = {
    "starting": "Starting worker",
    "queued": "Queued",
    "downloading": "Downloading",
    "loading": "Loading model",
    "encoding": "Encoding",
    "sampling": "Sampling",
    "decoding": "Extracting mesh",
    "writing": "Writing",
}


@dataclass
class Status:
    """What the panel and the preferences show about the current or last job."""

    state: str = "idle"  # idle | running | cancelling | done | cancelled | error
    kind: str = ""  # generate | download | check
    label: str = ""
    stage: str = ""
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    started: float = 0.0
    message: str = ""
    error: str = ""
    hint: str = ""
    error_field: str = ""
    objects: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # a job that succeeded in part

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0

    def progress_text(self) -> str:
        name = STAGE_LABELS.get(self.stage, self.stage.capitalize() or "Working")
        if self.state == "cancelling":
            return f"Cancelling ({name})"
        if self.stage == "downloading" and self.total:
            count = f" {self.step / 2**20:.0f}/{self.total / 2**20:.0f} MB"
        elif self.stage == "queued":
            count = f" ({self.total} ahead)" if self.total else ""
        elif self.total > 1:
            count = f" {self.step}/{self.total}"
        else:
            count = ""
        eta = f", {_duration(self.eta_s)} left" if self.eta_s else ""
        return f"{name}{count}{eta}"


@dataclass(eq=False)
class Active:
    """A job in flight: the worker requests it consists of, and what to do when they answer."""

    kind: str
    requests: list[Job]
    label: str = ""
    # Runs on the main thread once every request succeeded; returns the objects it created.
    finish: Callable[[Active, bpy.types.Context], list[Any]] | None = None
    keep_alive: bool = True
    verb: str = "Created"  # the done message: "<verb> <object names>"
    blocking: bool = False  # run_blocking() drives it: stopping the worker after it may wait
    discard: bool = False  # the file changed under the job: do not import its result
    error: ShapEError | None = None
    objects: list[Any] = field(default_factory=list)
    # What the finish step left out but the job still produced (e.g. a variant with no surface).
    warnings: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return all(r.done for r in self.requests)

    @property
    def cancelled(self) -> bool:
        return self.error is not None and self.error.code == CANCELLED


status = Status()
_client: WorkerClient | None = None
# Clients replaced while their worker was still stopping: their threads are joined later.
_retired: list[WorkerClient] = []
_active: Active | None = None
_last: Active | None = None


def client_for(python: str | os.PathLike[str], jobs_root: str | os.PathLike[str]) -> WorkerClient:
    """The shared client; a new one when the preferences now name another worker."""
    global _client
    if _client is not None and (_client.python, _client.jobs_root) != (
        str(python),
        Path(jobs_root),
    ):
        if busy():
            raise ShapEError(JOB_FAILED, BUSY_MESSAGE, "wait for the job, or press Cancel")
        # Called from operators on the UI thread: ask the old worker to exit, never wait for it.
        _client.shutdown(wait=False)
        _retired.append(_client)
        _client = None
    if _client is None:
        _client = WorkerClient(python, jobs_root)
    return _client


def current_client() -> WorkerClient | None:
    return _client


def worker_info() -> dict[str, Any]:
    return _client.info if _client is not None else {}


def busy() -> bool:
    return _active is not None


def active() -> Active | None:
    return _active


def last() -> Active | None:
    """The job that ended last (its requests hold the worker's results)."""
    return _last


def new_job_dir(jobs_root: Path, label: str) -> Path:
    """A fresh folder for one job: time stamp plus a readable slug, never reused."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:40] or "job"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = jobs_root / (f"{stamp}-{slug}" + (f"-{n}" if n else ""))
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise ShapEError(INTERNAL_ERROR, f"no free job folder name in {jobs_root}", "clean it up")


def begin(job: Active) -> None:
    global _active, status
    if _active is not None:
        raise ShapEError(JOB_FAILED, BUSY_MESSAGE, "wait for the job, or press Cancel")
    _active = job
    status = Status(
        state="running", kind=job.kind, label=job.label, stage="starting", started=time.time()
    )


def show_error(err: ShapEError, kind: str = "generate", label: str = "") -> None:
    global status
    status = Status(
        state="error",
        kind=kind,
        label=label,
        error=err.message,
        hint=err.hint,
        error_field=err.field or "",
    )


def tick(context: bpy.types.Context | None = None, timeout: float = 0.0) -> Active | None:
    """Poll the worker once; returns the active job when it has just ended, else None."""
    global _active, _last
    _reap()
    if _client is None:
        return None
    events = _client.poll(timeout)
    job = _active
    if job is None:
        return None
    # Show the first unfinished request (a download of two models queues the second).
    current = next((r for r in job.requests if not r.done), None)
    for ev in events:
        if ev.kind == "progress" and ev.progress is not None and ev.job is current:
            p = ev.progress
            status.stage, status.step, status.total, status.eta_s = (
                p.stage,
                p.step,
                p.total,
                p.eta_s,
            )
    if not job.done:
        return None
    _active = None
    job.error = next((r.error for r in job.requests if r.error is not None), None)
    if job.error is None and job.discard:
        job.error = ShapEError(CANCELLED, "cancelled: another file was opened", "")
    if job.error is None and job.finish is not None:
        try:
            with _main_context(context):
                job.objects = job.finish(job, context or bpy.context)
        except ShapEError as err:
            job.error = err
        except Exception as exc:
            traceback.print_exc()
            job.error = ShapEError(
                INTERNAL_ERROR,
                f"the import failed: {type(exc).__name__}: {exc}",
                "the traceback is in the system console; the mesh files stay in the job folder",
            )
    _settle(job)
    _last = job
    if not job.keep_alive:
        # From a timer this is the UI thread: the worker exits (or is killed) on its own time.
        _client.shutdown(wait=job.blocking)
    return job


def run_blocking(context: bpy.types.Context | None = None) -> Active:
    """Poll until the active job ends (background mode, or blocking=True)."""
    if _active is None:
        raise ShapEError(INTERNAL_ERROR, "no job is running", "start one first")
    _active.blocking = True
    try:
        while True:
            done = tick(context, timeout=0.25)
            if done is not None:
                return done
    except KeyboardInterrupt:
        # Ctrl+C in a terminal: stop the worker's job rather than leave it running unseen.
        release(wait=True)
        tick(context)
        raise


def cancel() -> bool:
    job = _active
    if job is None or _client is None:
        return False
    for r in job.requests:
        if not r.done:
            _client.cancel(r)
    status.state = "cancelling"
    return True


def release(wait: bool = False) -> bool:
    """Kill the worker now (frees VRAM). A running job ends with an error on the next tick.

    Returns at once unless ``wait``: the process is gone moments later, its threads are joined
    by a later tick or by shutdown().
    """
    if _client is None or not _client.is_running():
        return False
    _client.kill(wait=wait)
    return True


def timer() -> float | None:
    """bpy.app.timers callback: poll until the job is done, redraw the UI meanwhile."""
    global _active
    try:
        tick()
    except Exception as exc:
        # An exception here would unregister the timer and leave the job "running" forever.
        traceback.print_exc()
        show_error(ShapEError(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", "see the console"))
        _active = None
    _redraw()
    return TIMER_INTERVAL_S if _active is not None else None


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(timer):
        # persistent: the job outlives a file load (the load_pre handler cancels it).
        bpy.app.timers.register(timer, first_interval=TIMER_INTERVAL_S, persistent=True)


@persistent
def on_load_pre(*_args: Any) -> None:
    if _active is not None and _active.kind == "generate":
        _active.discard = True
        cancel()


def shutdown() -> None:
    """For unregister(): stop the worker, the timer and every thread."""
    global _client, _active, _last, status
    if bpy.app.timers.is_registered(timer):
        bpy.app.timers.unregister(timer)
    for c in [*_retired, *([_client] if _client is not None else [])]:
        c.kill()  # waits: Blender must not go on (or exit) with our threads alive
    _retired.clear()
    _client = None
    _active = None
    _last = None
    status = Status()


def _reap() -> None:
    """Forget stopped workers whose threads have ended; never blocks."""
    if _client is not None:
        _client.join(0)
    for c in list(_retired):
        c.join(0)
        if not c.threads_alive():
            _retired.remove(c)


def _settle(job: Active) -> None:
    global status
    err = job.error
    if err is None:
        names = [getattr(o, "name", str(o)) for o in job.objects]
        status = Status(
            state="done",
            kind=job.kind,
            label=job.label,
            message=f"{job.verb} {', '.join(names)}" if names else "Done",
            objects=names,
            warnings=list(job.warnings),
        )
        for warning in job.warnings:
            # A timer has no operator to report through: the console gets them too.
            print(f"shape_e: {job.label}: {warning}", file=sys.stderr)
    elif err.code == CANCELLED:
        status = Status(state="cancelled", kind=job.kind, label=job.label, message="Cancelled")
    else:
        show_error(err, job.kind, job.label)


def _main_context(context: bpy.types.Context | None) -> contextlib.AbstractContextManager:
    """Timers run without a window in the context; give the import the main window's."""
    if context is not None or bpy.context.window is not None:
        return contextlib.nullcontext()
    windows = bpy.context.window_manager.windows
    if not windows:
        return contextlib.nullcontext()
    return bpy.context.temp_override(window=windows[0])


def _redraw() -> None:
    wm = bpy.context.window_manager
    for win in wm.windows if wm is not None else ():
        for area in win.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"
