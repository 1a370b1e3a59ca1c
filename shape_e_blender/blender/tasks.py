"""The one task the add-on runs at a time, its timer, and what the UI shows about it.

A task is worker requests (a generation, a re-mesh, a download, the worker check) or the worker
environment's setup. Only Blender's main thread calls in here. An operator starts a task with
begin(); tick() then polls it (from a bpy.app.timers function in the UI, in a loop in background
mode: run_blocking), keeps ``status`` up to date for the panel and the preferences, and runs the
task's finish step (the scene import) once it has ended. Runtime state lives here in Python, not
in scene properties: undo and file saves must not rewind or store a progress bar.

The add-on's one WorkerClient lives here too (client_for): models stay warm between tasks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
from bpy.app.handlers import persistent

from ..client.client import WorkerClient
from ..client.envsetup import EnvSetup
from ..client.handle import JobHandle
from ..client.remote import RemoteWorkerClient
from ..client.watchdog import SILENCE_TIMEOUT_S
from ..core.errors import CANCELLED, INTERNAL_ERROR, JOB_FAILED, ShapEError
from .status import Status, timings_of

BUSY_MESSAGE = "a Shap-E job is already running: wait for it to finish, or press Cancel"
KEPT_MESSAGE = "another file was opened while the job ran: import its result from Recent Jobs"
TIMER_INTERVAL_S = 0.1


Finish = Callable[["Task", bpy.types.Context], list[Any]]


@dataclass(eq=False)
class Task:
    """One task: worker requests, or the environment setup (``setup``), and its finish step."""

    kind: str
    requests: list[JobHandle] = field(default_factory=list)
    label: str = ""
    # Runs on the main thread once the task succeeded; returns the objects it created.
    finish: Finish | None = None
    keep_alive: bool = True
    verb: str = "Created"  # the done message: "<verb> <object names>"
    setup: EnvSetup | None = None
    blocking: bool = False  # run_blocking() drives it: stopping the worker after it may wait
    discard: bool = False  # another file was opened under the task: keep its result out of it
    error: ShapEError | None = None
    objects: list[Any] = field(default_factory=list)
    # What the finish step left out but the task still produced (e.g. a variant with no surface).
    warnings: list[str] = field(default_factory=list)
    # A scene build: each request fails alone (the finish step imports the others and lists the
    # failures), and ``parts`` names each request's object for the progress ("2/5 Lamp").
    each_alone: bool = False
    parts: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        if self.setup is not None:
            return self.setup.done
        return all(r.done for r in self.requests)

    @property
    def cancelled(self) -> bool:
        return self.error is not None and self.error.code == CANCELLED

    @property
    def job_dir(self) -> Path | None:
        """The job folder of a generation: the first unfinished request's that names one (a
        scene build runs one at a time), else the first request's."""
        named = [r for r in self.requests if r.job_dir]
        current = next((r for r in named if not r.done), named[0] if named else None)
        return Path(current.job_dir) if current is not None and current.job_dir else None

    def poll(self, timeout: float) -> None:
        """Apply what happened since the last poll to ``status``; waits up to ``timeout``."""
        if self.setup is not None:
            self.setup.poll(timeout)
            status.stage, status.message = self.setup.stage, self.setup.last_line
            status.fraction_override = self.setup.fraction
            return
        if _client is None:
            return
        # Show the first unfinished request (a download of two models queues the second).
        current = next((r for r in self.requests if not r.done), None)
        # A request queued behind the models' load in advance (preload) shows that load.
        ahead = warming if warming is not None and not warming.done else None
        for ev in _client.poll(timeout):
            p = ev.progress
            if p is None:
                continue
            # Behind the load, the request's own "queued" would hide what it waits for.
            if ev.job is ahead or (ev.job is current and not (ahead and p.stage == "queued")):
                status.show(p)
        if self.parts and current is not None:
            self._show_part(self.requests.index(current))

    def _show_part(self, index: int) -> None:
        """Which object of a scene build runs, and the time left for the whole build: the
        current object's estimate plus the finished ones' mean time for each one after it."""
        if status.part != index + 1:
            status.part, status.parts = index + 1, len(self.requests)
            status.part_label = self.parts[index]
            status.part_started = time.time()
            status.stage, status.step, status.total, status.eta_s = "queued", 0, 0, None
        mean = (status.part_started - status.started) / index if index else None
        left = len(self.requests) - index - 1
        current = status.eta_s if status.eta_s is not None else mean
        status.overall_eta_s = (
            current + left * (mean if mean is not None else current)
            if current is not None
            else None
        )

    def first_error(self) -> ShapEError | None:
        if self.setup is not None:
            return self.setup.error
        return next((r.error for r in self.requests if r.error is not None), None)

    def cancel(self) -> None:
        if self.setup is not None:
            self.setup.cancel()
        elif _client is not None:
            for r in self.requests:
                if not r.done:
                    _client.cancel(r)


status = Status()
# Called with ``status`` after each poll of a blocking run (the headless command's progress).
watch: Callable[[Status], None] | None = None
_client: WorkerClient | None = None
_client_key: tuple[str, Path, str] | None = None  # what _client was made for (client_for)
# Clients replaced while their worker was still stopping: their threads are joined later.
_retired: list[WorkerClient] = []
_active: Task | None = None
_last: Task | None = None
warming: JobHandle | None = None  # the models' load in advance (preload.py), while it runs


def client_for(
    python: str | os.PathLike[str],
    jobs_root: str | os.PathLike[str],
    command: str = "",
    silence_timeout: float = SILENCE_TIMEOUT_S,
) -> WorkerClient:
    """The shared client; a new one when the preferences now name another worker. ``command``
    (the worker_command preference), when set, is the worker instead of ``python``;
    ``silence_timeout`` (a preference too: 0 waits forever) applies from the next poll on."""
    global _client, _client_key
    key = (str(python), Path(jobs_root), command.strip())
    if _client is not None and _client_key != key:
        if busy():
            raise ShapEError(JOB_FAILED, BUSY_MESSAGE, "wait for the job, or press Cancel")
        # Called from operators on the UI thread: ask the old worker to exit, never wait for it.
        _client.shutdown(wait=False)
        _retired.append(_client)
        _client = None
    if _client is None:
        _client = (
            RemoteWorkerClient(key[2], jobs_root) if key[2] else WorkerClient(python, jobs_root)
        )
        _client_key = key
    # One bound for the user: a worker silent that long, starting or running a job, is stopped.
    _client.silence_timeout = _client.hello_timeout = silence_timeout
    return _client


def current_client() -> WorkerClient | None:
    return _client


def worker_info() -> dict[str, Any]:
    return _client.info if _client is not None else {}


def busy() -> bool:
    return _active is not None


def active() -> Task | None:
    return _active


def last() -> Task | None:
    """The task that ended last (its requests hold the worker's results)."""
    return _last


def begin(task: Task) -> None:
    global _active, status
    if _active is not None:
        raise ShapEError(JOB_FAILED, BUSY_MESSAGE, "wait for the job, or press Cancel")
    _active = task
    status = Status(
        state="running", kind=task.kind, label=task.label, stage="starting", started=time.time()
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


def tick(context: bpy.types.Context | None = None, timeout: float = 0.0) -> Task | None:
    """Poll the active task once; returns it when it has just ended, else None."""
    global _active, _last
    _reap()
    task = _active
    if task is None:
        if _client is not None:
            _client.poll(timeout)  # answers to nobody's request still go somewhere: the log
        return None
    task.poll(timeout)
    if not task.done:
        return None
    _active = None
    task.error = None if task.each_alone else task.first_error()
    if task.error is None and task.discard:
        task.warnings.append(KEPT_MESSAGE)
    elif task.error is None and task.finish is not None:
        try:
            with _main_context(context):
                task.objects = task.finish(task, context or bpy.context)
        except ShapEError as err:
            task.error = err
        except Exception as exc:
            traceback.print_exc()
            task.error = ShapEError(
                INTERNAL_ERROR,
                f"the import failed: {type(exc).__name__}: {exc}",
                "the traceback is in the system console; the mesh files stay in the job folder",
            )
    _settle(task)
    _last = task
    if not task.keep_alive and _client is not None:
        # From a timer this is the UI thread: the worker exits (or is killed) on its own time.
        _client.shutdown(wait=task.blocking)
    return task


def run_blocking(context: bpy.types.Context | None = None) -> Task:
    """Poll until the active task ends (background mode, or blocking=True)."""
    if _active is None:
        raise ShapEError(INTERNAL_ERROR, "no job is running", "start one first")
    _active.blocking = True
    try:
        while True:
            done = tick(context, timeout=0.25)
            if done is not None:
                return done
            if watch is not None:
                watch(status)
    except KeyboardInterrupt:
        # Ctrl+C in a terminal: stop the worker's job rather than leave it running unseen.
        if _active is not None and _active.setup is not None:
            _active.cancel()
        release(wait=True)
        tick(context)
        raise


def cancel() -> bool:
    task = _active
    if task is None:
        return False
    task.cancel()
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
    """bpy.app.timers callback: poll until the task is done, redraw the UI meanwhile."""
    global _active
    try:
        done = tick()
        for warning in done.warnings if done is not None else ():
            # A timer has no operator to report through (a blocking call's operator reports
            # them): the console gets them too, once.
            print(f"shape_e: {done.label}: {warning}", file=sys.stderr)
    except Exception as exc:
        # An exception here would unregister the timer and leave the task "running" forever.
        traceback.print_exc()
        show_error(ShapEError(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", "see the console"))
        _active = None
    _redraw()
    return TIMER_INTERVAL_S if _active is not None else None


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(timer):
        # persistent: the task outlives a file load (on_load_post keeps its result out of it).
        bpy.app.timers.register(timer, first_interval=TIMER_INTERVAL_S, persistent=True)


@persistent
def on_load_post(*_args: Any) -> None:
    """Another .blend was opened (or File > New) while a task runs: it runs on, and its result
    stays in its job folder (Recent Jobs lists it) instead of landing in a file it was not
    made for."""
    if _active is not None and _active.finish is not None:
        _active.discard = True


def shutdown() -> None:
    """For unregister(): stop the worker, a setup, the timer and every thread."""
    global _client, _active, _last, status, warming
    if bpy.app.timers.is_registered(timer):
        bpy.app.timers.unregister(timer)
    if _active is not None and _active.setup is not None:
        _active.setup.cancel()
        _active.setup.join(10)
    if _client is not None and _active is not None and _active.requests:
        _client.detach()  # quitting mid-job: the worker finishes alone (Recent Jobs lists it)
    for c in [*_retired, *([_client] if _client is not None else [])]:
        c.kill()  # waits: Blender must not go on (or exit) with our threads alive
    _retired.clear()
    _client = _active = _last = warming = None
    status = Status()


def _reap() -> None:
    """Forget stopped workers whose threads have ended; never blocks."""
    if _client is not None:
        _client.join(0)
    for c in list(_retired):
        c.join(0)
        if not c.threads_alive():
            _retired.remove(c)


def _settle(task: Task) -> None:
    global status
    err = task.error
    if err is None:
        names = [getattr(o, "name", str(o)) for o in task.objects]
        done = "Kept in Recent Jobs" if task.discard else "Done"
        status = Status(
            state="done",
            kind=task.kind,
            label=task.label,
            message=f"{task.verb} {', '.join(names)}" if names else done,
            objects=names,
            warnings=list(task.warnings),
            timings=timings_of(r.result for r in task.requests),
        )
    elif err.code == CANCELLED:
        status = Status(state="cancelled", kind=task.kind, label=task.label, message="Cancelled")
    else:
        show_error(err, task.kind, task.label)


def _main_context(context: bpy.types.Context | None) -> contextlib.AbstractContextManager:
    """Timers run without a window in the context; give the import the main window's."""
    if context is not None or bpy.context.window is not None:
        return contextlib.nullcontext()
    windows = bpy.context.window_manager.windows
    if not windows:
        return contextlib.nullcontext()
    # 5.2's stubs type ContextTempOverride apart from context managers; Blender's is one.
    return bpy.context.temp_override(window=windows[0])  # type: ignore[return-value, unused-ignore]


def _redraw() -> None:
    wm = bpy.context.window_manager
    for win in wm.windows if wm is not None else ():
        for area in win.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()
