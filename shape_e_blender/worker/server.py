"""The worker's protocol loop: JSON-RPC 2.0 lines on stdin/stdout (docs/protocol.md).

The protocol's side of each method is here (parsing its params, answering); the work of a
``generate`` or ``download`` is the engine's.

Threads:
- the reader thread reads stdin, answers what needs no model at once (hello, status, cancel,
  malformed lines) and queues jobs (generate, download);
- the main thread runs the queued jobs one at a time, so models stay loaded between them.

stdout belongs to the protocol alone (output.py). SIGTERM, SIGINT and SIGHUP stop the worker
cleanly (signals.py, Server.stop).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..core import protocol
from ..core.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    ShapEError,
    cancelled,
    environment_incomplete,
    invalid,
    unexpected,
)
from .logs import LOG_FORMAT
from .output import Output, take_over_stdout
from .paths import default_jobs_root
from .signals import stop_on_signals

log = logging.getLogger("shape_e_blender.worker")


@dataclass
class Job:
    id: protocol.Id
    method: str
    params: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)


class Server:
    def __init__(self, output: Output, *, jobs_root: Path) -> None:
        self.out = output
        self.jobs_root = jobs_root
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._closed = False  # no more input (EOF or shutdown)
        self._shutdown_id: protocol.Id = None
        self._shutdown_requested = False
        self._engine = None
        self._methods: dict[str, Callable[[Job], Any]] = {
            "generate": self.generate,
            "download": self.download,
            "load": self.load,
        }

    @property
    def engine(self):
        if self._engine is None:
            started = time.perf_counter()
            with _environment_check():
                # Imported on the first job: hello and malformed lines never wait for torch.
                from .engine import Engine

                imported = time.perf_counter() - started
                log.info("imported the engine in %.2f s", imported)
                self._engine = Engine(self.jobs_root, imported_in=imported)
        return self._engine

    # -- reader side ---------------------------------------------------------------------------

    def read_loop(self, stream: BinaryIO) -> None:
        try:
            while raw := stream.readline(protocol.MAX_REQUEST_BYTES + 1):
                if len(raw) > protocol.MAX_REQUEST_BYTES and not raw.endswith(b"\n"):
                    self._refuse_long_line(raw, stream)
                    continue
                line = raw.strip()
                if not line:
                    continue
                self.handle_line(line)
                if self._shutdown_requested:
                    break
        except Exception:  # the loop must end in close(); the traceback goes to stderr
            log.exception("reading stdin failed")
        finally:
            self.close()

    def _refuse_long_line(self, head: bytes, stream: BinaryIO) -> None:
        """Answer a line over the limit, reading the rest of it in pieces and dropping them: a
        line is never held whole, however long it is (a client could send gigabytes)."""
        size = len(head)
        tail = head
        while not tail.endswith(b"\n"):
            tail = stream.readline(1 << 20)
            if not tail:
                break
            size += len(tail)
        size -= tail.endswith(b"\n")
        err = protocol.line_too_long(size)
        self.out.send(protocol.error_response(protocol.leading_id(head), err))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop soon (the process was sent SIGTERM, SIGINT or SIGHUP): the running job is
        cancelled at its next step (its folder gets error.json), the queued ones are answered
        cancelled, and no more requests are taken; run_jobs then returns."""
        with self._cond:
            queued = list(self._queue)
            self._queue.clear()
            if self._running is not None:
                self._running.cancel.set()
            self._closed = True
            self._cond.notify_all()
        for job in queued:
            self.out.send(protocol.error_response(job.id, cancelled()))

    def handle_line(self, line: bytes) -> None:
        try:
            req = protocol.parse_request(line)
        except ShapEError as err:  # whatever the line holds, the reader goes on to the next
            rid = None if err.code == PARSE_ERROR else protocol.request_id_of(line)
            self.out.send(protocol.error_response(rid, err))
            return
        try:
            self.dispatch(req)
        except ShapEError as err:
            if not req.notification:
                self.out.send(protocol.error_response(req.id, err))
        except Exception as exc:
            log.exception("request %r failed", req.method)
            if not req.notification:
                err = ShapEError(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", "see the log")
                self.out.send(protocol.error_response(req.id, err))

    def dispatch(self, req: protocol.Request) -> None:
        method = req.method
        if method in protocol.CONTROL_PARAMS:
            protocol.refuse_unknown(method, req.params, protocol.CONTROL_PARAMS[method])
        if method == "hello":
            self._answer(req, self.hello())
        elif method == "status":
            self._answer(req, self.status())
        elif method == "cancel":
            target = req.params.get("id")
            if target is None or isinstance(target, bool) or not isinstance(target, (int, str)):
                raise invalid("id", "must name the request to cancel", 'send {"id": 2}')
            self.cancel(target, req)
        elif method == "shutdown":
            detach = req.params.get("detach", False)
            if not isinstance(detach, bool):
                raise invalid("detach", "must be true or false", 'send {"detach": true} or {}')
            self._shutdown_requested = True
            self._shutdown_id = req.id
            if detach:
                self.out.detach(self.jobs_root / protocol.WORKER_LOG_FILE)
        elif method in self._methods:
            if req.id is None:
                raise ShapEError(
                    INVALID_REQUEST,
                    f"{method} needs an id: its progress and its answer name it",
                    'send "id": 1 (a number or a string)',
                )
            self._validate(method, req.params)
            self.enqueue(Job(req.id, method, req.params))
        else:
            raise ShapEError(
                METHOD_NOT_FOUND,
                f"unknown method {method!r}",
                f"methods: {', '.join(protocol.METHODS)}",
            )

    def _validate(self, method: str, params: dict[str, Any]) -> None:
        """Reject bad parameters at once, before the job waits in the queue."""
        if method == "generate":
            protocol.GenerateRequest.from_json(params)
        else:
            protocol.ModelRequest.from_json(method, params)

    def _answer(self, req: protocol.Request, result: Any) -> None:
        if not req.notification:
            self.out.send(protocol.response(req.id, result))

    def hello(self) -> dict[str, Any]:
        with _environment_check():
            # torch: the reader thread answers status, cancel and bad lines without it.
            from .models.devices import device_report, versions

        devices = device_report()
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "package": package_version(),
            "pid": os.getpid(),
            "versions": versions(),
            "devices": devices,
            "default_device": devices[0]["name"],
            "jobs_root": str(self.jobs_root),
        }

    def status(self) -> dict[str, Any]:
        with self._cond:
            running = self._running.id if self._running else None
            queued = [j.id for j in self._queue]
        loaded = self._engine.models.loaded() if self._engine is not None else []
        return {"running": running, "queued": queued, "loaded": loaded}

    def enqueue(self, job: Job) -> None:
        with self._cond:
            if any(j.id == job.id for j in (self._running, *self._queue) if j is not None):
                # Its answer and its progress would be told from the other's, and a cancel
                # could stop only one of them.
                raise invalid(
                    "id",
                    f"{job.id!r} is the id of a job that is queued or running",
                    "give each request its own id",
                )
            ahead = len(self._queue) + (1 if self._running else 0)
            self._queue.append(job)
            self._cond.notify_all()
        if ahead:
            self.out.progress(protocol.Progress(job.id, "queued", 0, ahead))

    def cancel(self, target: int | str, req: protocol.Request) -> None:
        """Answer ``req`` with whether ``target`` was cancelled; the answer always goes out before
        the cancelled job's own answer."""
        with self._cond:
            if self._running is not None and self._running.id == target:
                self._running.cancel.set()
                # Sent holding the lock that run_jobs takes before the job's answer goes out.
                self._answer(req, {"cancelled": True})
                return
            for job in list(self._queue):
                if job.id == target:
                    self._queue.remove(job)
                    break
            else:
                self._answer(req, {"cancelled": False})
                return
        self._answer(req, {"cancelled": True})
        self.out.send(protocol.error_response(target, cancelled()))

    # -- job side (main thread) ----------------------------------------------------------------

    def run_jobs(self) -> None:
        """Run queued jobs until the input has ended and the queue is empty."""
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    break
                job = self._queue.popleft()
                self._running = job
            answer = self.run_job(job)
            # Not running any more before the answer goes out: a status or cancel sent after the
            # answer arrived must not find the job still running.
            with self._cond:
                self._running = None
            if job.cancel.is_set() and "result" in answer:
                # cancel already answered {"cancelled": true}; the files stay in job_dir.
                answer = protocol.error_response(job.id, cancelled())
            self.out.send(answer)
        if self._shutdown_id is not None:
            self.out.send(protocol.response(self._shutdown_id, {}))

    def run_job(self, job: Job) -> dict[str, Any]:
        """Run one job; returns its answer (a response or an error response)."""
        try:
            return protocol.response(job.id, self._methods[job.method](job))
        except ShapEError as err:
            return protocol.error_response(job.id, err)
        except Exception as exc:
            log.exception("job %r failed", job.id)
            return protocol.error_response(job.id, unexpected(exc))

    # -- the protocol's side of the jobs -------------------------------------------------------

    def _engine_for(self, job: Job):
        """The engine; its first use imports torch's and diffusers' model code (seconds): the
        job says so with a "starting" stage, so that the wait has a name."""
        if self._engine is not None:
            return self._engine
        self.out.progress(protocol.Progress(job.id, "starting", 0, 1))
        engine = self.engine
        self.out.progress(protocol.Progress(job.id, "starting", 1, 1))
        return engine

    def generate(self, job: Job) -> dict[str, Any]:
        request = protocol.GenerateRequest.from_json(job.params)
        result = self._engine_for(job).generate(
            request, request_id=job.id, emit=self.out.progress, cancel=job.cancel.is_set
        )
        return result.to_dict(inline=True)

    def download(self, job: Job) -> dict[str, Any]:
        req = protocol.ModelRequest.from_json("download", job.params)
        result = self._engine_for(job).download(
            req.model,
            kind=req.kind,
            cache_dir=req.cache_dir,
            request_id=job.id,
            emit=self.out.progress,
            cancel=job.cancel.is_set,
        )
        return result.to_dict()

    def load(self, job: Job) -> dict[str, Any]:
        """Load a model from disk, never the network, so that the next generate pays no load."""
        req = protocol.ModelRequest.from_json("load", job.params)
        with _environment_check():
            # huggingface_hub, not torch: a model that is not on disk is answered before the
            # engine (torch, diffusers) is imported at all.
            from .hub.download import resolve_model

        folder = resolve_model(req.model, kind=req.kind, cache_dir=req.cache_dir)
        return self._engine_for(job).load(req, folder, request_id=job.id, emit=self.out.progress)


@contextlib.contextmanager
def _environment_check() -> Iterator[None]:
    """A worker Python without torch, diffusers, ... gets an error that says how to fix it."""
    try:
        yield
    except ImportError as exc:
        log.exception("the worker environment is incomplete")
        raise environment_incomplete(exc, sys.executable) from exc


def package_version() -> str:
    """The add-on's version, from the manifest beside the package when it is installed."""
    here = Path(__file__).resolve().parents[1]
    for manifest in (here / "blender_manifest.toml", here.parent / "blender_manifest.toml"):
        if manifest.exists():
            return str(tomllib.loads(manifest.read_text(encoding="utf-8")).get("version", "0"))
    return "0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shape_e_blender.worker",
        description="Shap-E worker: JSON-RPC 2.0 lines on stdin/stdout (see docs/protocol.md).",
    )
    parser.add_argument("--jobs-root", type=Path, default=None, help="where job folders go")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=LOG_FORMAT,
    )
    proto = take_over_stdout()
    server = Server(Output(proto), jobs_root=args.jobs_root or default_jobs_root())
    reader = threading.Thread(
        target=server.read_loop, args=(sys.stdin.buffer,), name="stdin-reader", daemon=True
    )
    reader.start()
    stopped = stop_on_signals(server.stop)
    log.info("worker ready (pid %d, jobs in %s)", os.getpid(), server.jobs_root)
    server.run_jobs()
    if stopped:
        log.warning("stopped by %s; every job is answered", stopped[0].name)
        logging.shutdown()
        # Not a normal exit: the reader thread may be inside a read of stdin, which the
        # interpreter's shutdown would wait on (a fatal error: "could not acquire lock").
        os._exit(128 + stopped[0])
    log.info("input closed and every job answered; exiting")
    return 0
