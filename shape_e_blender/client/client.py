"""WorkerClient: a proxy for one worker process that speaks docs/protocol.md.

It starts the worker on first use and again after it died, numbers the requests, routes each
answer and progress notification to its JobHandle, checks the protocol version in ``hello``, and
stops the worker (politely, or at once). No bpy: the caller polls it from one thread (Blender's
main thread: a timer in the UI, a loop in background mode), and only ``poll()`` changes a handle.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.errors import JOB_FAILED, PROTOCOL_MISMATCH, WORKER_EXITED, ShapEError
from ..core.files import is_file
from ..core.protocol import (
    PROTOCOL_VERSION,
    WORKER_LOG_FILE,
    GenerateRequest,
    Progress,
    request,
)
from . import stopping, watchdog
from .handle import Event, JobHandle
from .process import PACKAGE_DIR, clean_env, executable, kill_now, worker_command
from .transport import Inbox, WorkerProcess


class WorkerClient:
    """``python`` is the worker environment's interpreter; ``jobs_root`` is where jobs sent
    without a job folder go, and where the worker's stderr log (``worker.log``) is kept.

    ``silence_timeout``: a worker that writes nothing on stdout for this many seconds while any
    of its requests is unanswered is killed (its process group), and those requests fail with
    the end of its log. 0 turns the watchdog off. ``hello_timeout`` bounds the start.
    """

    EXITED = "the worker exited (status {status}) before answering"
    CHECK = "or check worker_python in the add-on's preferences"

    def __init__(
        self,
        python: str | os.PathLike[str],
        jobs_root: str | os.PathLike[str],
        *,
        package_dir: str | os.PathLike[str] = PACKAGE_DIR,
        env: Mapping[str, str] | None = None,
        hello_timeout: float = 300.0,
        silence_timeout: float = watchdog.SILENCE_TIMEOUT_S,
    ) -> None:
        self.python = str(python)
        self.jobs_root = Path(jobs_root)
        self.package_dir = Path(package_dir)
        self._base_env = env
        self.hello_timeout = hello_timeout
        self.silence_timeout = silence_timeout
        self._inbox: Inbox = queue.Queue()
        self._events: list[Event] = []
        self._jobs: dict[int, JobHandle] = {}
        self._next_id = 1
        self._generation = 0
        self._worker: WorkerProcess | None = None
        self._old: list[WorkerProcess] = []  # stopped workers whose threads may still run
        self.info: dict[str, Any] = {}  # the last hello result

    # -- the process ---------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.jobs_root / WORKER_LOG_FILE

    @property
    def pid(self) -> int | None:
        w = self._worker
        return w.popen.pid if w is not None and w.running else None

    def is_running(self) -> bool:
        return self.pid is not None

    def command(self) -> list[str]:
        return worker_command(self.python, self.jobs_root, self.package_dir)

    def start(self) -> JobHandle:
        """Start the worker if it is not running; returns its ``hello`` job (answered later)."""
        w = self._worker
        if w is not None and w.running and not w.released:
            assert w.hello is not None
            return w.hello
        if w is not None:
            self._retire(w)
        if not is_file(executable(self.python)):
            raise ShapEError(
                WORKER_EXITED,
                f"the worker's Python interpreter does not exist: {self.python}",
                "set up the worker environment in the add-on's preferences, or set worker_python "
                "to a Python that has torch and diffusers",
                "worker_python",
            )
        self.jobs_root.mkdir(parents=True, exist_ok=True)
        try:
            w = WorkerProcess.start(
                self._generation + 1,
                self.command(),
                env=clean_env(self.package_dir, self._base_env),
                cwd=str(self.package_dir.parent),
                log_path=self.log_path,
                inbox=self._inbox,
            )
        except OSError as exc:
            raise ShapEError(
                WORKER_EXITED,
                f"could not start the worker ({self.python}): {exc}",
                "check worker_python in the add-on's preferences",
                "worker_python",
            ) from exc
        self._generation += 1
        self._worker = w
        w.hello = self._send(w, "hello", {})
        return w.hello

    def hello(self, timeout: float | None = None) -> dict[str, Any]:
        """Start the worker if needed and wait for its ``hello`` answer."""
        job = self.start()
        try:
            self.wait(job, self.hello_timeout if timeout is None else timeout)
        except ShapEError:
            # A worker that cannot say hello in time cannot run a job: stop it, or it runs on
            # unseen (the wait has given up on it).
            w = self._worker
            if w is not None and job is w.hello:
                waited = self.hello_timeout if timeout is None else timeout
                self._abandon(w, watchdog.no_hello(waited, w.tail(), self.log_path, self.CHECK))
            raise
        return job.raise_for_error()

    def shutdown(self, timeout: float = 10.0, *, wait: bool = True) -> None:
        """Ask the worker to finish its jobs and exit (stopping.shutdown)."""
        stopping.shutdown(self, timeout, wait=wait)

    def detach(self, timeout: float = 5.0) -> bool:
        """Leave the worker to finish its jobs alone (stopping.detach)."""
        return stopping.detach(self, timeout)

    def kill(self, *, wait: bool = True) -> None:
        """Stop the process now; running jobs fail (stopping.kill)."""
        stopping.kill(self, wait=wait)

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the threads of stopped workers (stopping.join)."""
        stopping.join(self, timeout)

    def threads_alive(self) -> list[threading.Thread]:
        workers = [*self._old, *([self._worker] if self._worker else [])]
        return [t for w in workers for t in w.threads if t.is_alive()]

    def stderr_tail(self, lines: int = 30) -> str:
        w = self._worker or (self._old[-1] if self._old else None)
        return w.tail(lines) if w is not None else ""

    # -- requests ------------------------------------------------------------------------------

    def generate(self, req: GenerateRequest) -> JobHandle:
        return self._send(self._started(), "generate", req.to_json())

    def download(
        self, model: str, kind: str | None = None, cache_dir: str | None = None
    ) -> JobHandle:
        """Fetch a model's weights; ``kind`` ("text" or "image") says which files it needs."""
        params = {"model": model, "kind": kind, "cache_dir": cache_dir}
        given = {k: v for k, v in params.items() if v}
        return self._send(self._started(), "download", given)

    def load(self, model: str, kind: str, **where: str) -> JobHandle:
        """Load a model that is on disk (never downloading), so that the next generate with it
        pays no load; ``where``: device and precision, as for generate."""
        return self._send(self._started(), "load", {"model": model, "kind": kind, **where})

    def cancel(self, job: JobHandle | int) -> JobHandle | None:
        """Ask the worker to cancel a job; the job itself then ends with a ``cancelled`` error."""
        jid = job.id if isinstance(job, JobHandle) else job
        w = self._worker
        if w is None or not w.running:
            return None
        return self._send(w, "cancel", {"id": jid})

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0):
        """Send a request and wait for its answer (hello, status, ...). Raises ShapEError."""
        job = self._send(self._started(), method, params or {})
        self.wait(job, timeout)
        return job.raise_for_error()

    def status(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.call("status", {}, timeout)

    # -- receiving -----------------------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Apply everything the worker said since the last call; return it as events.

        With ``timeout`` > 0, wait that long for the first message (no busy waiting).
        """
        self._pump(timeout)
        events, self._events = self._events, []
        return events

    def wait(self, job: JobHandle, timeout: float | None = None) -> JobHandle:
        """Block until ``job`` is done (events stay queued for the next poll())."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.done:
            left = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if left <= 0:
                raise ShapEError(
                    JOB_FAILED,
                    f"the worker did not answer {job.method} within {timeout:g} s",
                    f"see the worker log at {self.log_path}",
                )
            self._pump(left)
        return job

    # -- internals -----------------------------------------------------------------------------

    def _started(self) -> WorkerProcess:
        self.start()
        assert self._worker is not None
        return self._worker

    def _send(self, w: WorkerProcess, method: str, params: dict[str, Any]) -> JobHandle:
        job = JobHandle(self._next_id, method, params, w.generation)
        self._next_id += 1
        self._jobs[job.id] = job
        try:
            w.send(request(job.id, method, params))
        except (OSError, ValueError):
            # The worker died under us. Its stdout reader reports the exit with stderr's tail,
            # and that fails this job along with the others; nothing more to do here.
            pass
        return job

    def _pump(self, timeout: float) -> None:
        try:
            item = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            item = None
        until = time.monotonic() + watchdog.PUMP_BUDGET_S  # a flood must not hold the watch off
        while item is not None:
            self._handle(*item)
            if time.monotonic() > until:
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        self._watch()

    def _watch(self) -> None:
        """Stop the worker once it is overdue (watchdog.overdue), failing its jobs."""
        w = self._worker
        if w is None or w.released:
            return
        sent = [
            j.sent_at for j in self._jobs.values() if j.generation == w.generation and not j.done
        ]
        late = watchdog.overdue(w, sent, self.hello_timeout, self.silence_timeout, time.monotonic())
        if late is None:
            return
        w.note(f"silent for {late:.0f} s: stopping the worker")
        if w.hello is not None and not w.hello.done:
            self._abandon(
                w, watchdog.no_hello(self.hello_timeout, w.tail(), self.log_path, self.CHECK)
            )
        else:
            self._abandon(w, watchdog.silent(late, w.tail(), self.log_path))

    def _handle(self, gen: int, kind: str, payload: Any) -> None:
        if kind == "exit":
            self._on_exit(gen, payload)
        elif kind == "noise":
            self._note(gen, f"(stdout) {payload}")
        elif kind == "note":
            self._note(gen, payload)
        elif not isinstance(payload, dict):
            self._note(gen, f"(stdout) not a message: {payload!r}")
        elif "id" in payload and ("result" in payload or "error" in payload):
            self._on_response(gen, payload)
        elif payload.get("method") == "progress" and isinstance(payload.get("params"), dict):
            params = payload["params"]
            job = self._jobs.get(params.get("id"))
            if job is None or job.done:
                return
            try:
                progress = Progress.from_json(params)
            except (TypeError, ValueError):
                self._note(gen, f"malformed progress: {params!r}")
                return
            job.progress = progress
            self._events.append(Event("progress", job, progress))
        else:
            self._note(gen, f"unexpected message: {payload!r}"[:500])

    def _on_response(self, gen: int, msg: dict[str, Any]) -> None:
        job = self._jobs.get(msg["id"]) if isinstance(msg["id"], int) else None
        if job is None or job.done:
            # e.g. a parse error with id null; it names no job of ours.
            self._note(gen, f"response to no pending request: {json.dumps(msg)[:500]}")
            return
        w = self._worker_of(gen)
        hello_from = w if w is not None and job is w.hello else None  # a worker's hello
        if "error" in msg:
            err = ShapEError.from_json(msg["error"])
            self._finish(job, error=err)
            if hello_from is not None:
                # A worker that cannot say hello (e.g. its Python has no torch) cannot run a job
                # either: its other jobs fail with the same message and hint.
                self._abandon(hello_from, err)
            return
        result = msg["result"]
        if hello_from is not None:
            protocol = result.get("protocol") if isinstance(result, dict) else None
            if protocol != PROTOCOL_VERSION:
                err = ShapEError(
                    PROTOCOL_MISMATCH,
                    f"the worker speaks protocol {protocol!r}; this add-on speaks "
                    f"{PROTOCOL_VERSION} ({self.python})",
                    "update the worker environment (Preferences > Set up worker environment), "
                    "or point worker_python at an interpreter that runs this version",
                )
                self._finish(job, error=err)
                self._abandon(hello_from, err)
                return
            self.info = result
            hello_from.start_s = time.monotonic() - hello_from.spawned
        elif w is not None:
            w.bill_start(job.sent_at, result)
        self._finish(job, result=result)

    def _abandon(self, w: WorkerProcess, error: ShapEError) -> None:
        """Fail every job sent to ``w`` with ``error`` and kill it, without waiting (poll() may
        run on Blender's UI thread); its reader threads reap it."""
        self._fail_pending(w.generation, error)
        if w is self._worker:
            self._worker = None
            w.released = True
            kill_now(w.popen)
            self._retire(w)

    def _on_exit(self, gen: int, returncode: int | None) -> None:
        w = self._worker_of(gen)
        if w is self._worker and w is not None:
            self._worker = None
            self._retire(w)
        tail = w.tail() if w is not None else ""
        message = self.EXITED.format(status=returncode) + (
            f"; the end of its log:\n{tail}" if tail else ""
        )
        hint = f"the whole log is in {self.log_path}; press Generate to start a new worker, "
        self._fail_pending(gen, ShapEError(WORKER_EXITED, message, hint + self.CHECK))

    def _fail_pending(self, gen: int, error: ShapEError) -> None:
        for job in list(self._jobs.values()):
            if job.generation == gen and not job.done:
                self._finish(job, error=error)

    def _finish(
        self, job: JobHandle, *, result: Any = None, error: ShapEError | None = None
    ) -> None:
        job.done = True
        job.result = result
        job.error = error
        self._events.append(Event("error" if error is not None else "result", job))
        # Keep finished jobs only while someone may still look them up by id.
        if len(self._jobs) > 256:
            for jid in [j.id for j in self._jobs.values() if j.done][:128]:
                del self._jobs[jid]

    def _worker_of(self, gen: int) -> WorkerProcess | None:
        for w in [self._worker, *self._old]:
            if w is not None and w.generation == gen:
                return w
        return None

    def _retire(self, w: WorkerProcess) -> None:
        if w not in self._old:
            self._old.append(w)
        w.close_input()

    def _note(self, gen: int, text: str) -> None:
        w = self._worker_of(gen)
        if w is not None:
            w.note(text)
        else:
            print(f"shape_e: worker {gen}: {text}", file=sys.stderr)
