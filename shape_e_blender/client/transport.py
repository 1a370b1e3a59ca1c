"""One worker process and the threads that read its pipes.

The threads only read: what they read goes on the client's queue as (generation, kind, payload),
with kind "message" (a JSON object from stdout), "noise" (a stdout line that is not JSON),
"note" (the client's own remark for the log) or "exit" (the process is gone and its pipes are
drained). Everything else happens on the thread that polls the queue. stderr goes to the worker
log file and to a bounded tail in memory, so that the pipe never fills.
"""

from __future__ import annotations

import collections
import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ..core.protocol import encode
from .handle import JobHandle
from .process import kill_now, process_group_kwargs

STDERR_LINES = 400  # the bounded tail kept in memory; the whole stream goes to the log file
# stdout: a line of the protocol at most this long (an inline grid-512 mesh is tens of MB), and
# at most this many lines that are not the protocol shown; later ones are dropped.
MAX_LINE_BYTES = 1 << 30
NOISE_LINES = 20
NOISE_NOTE = (
    f"more than {NOISE_LINES} stdout lines that are not protocol messages: the rest are dropped "
    "(does the worker command run `python -m shape_e_blender.worker`?)"
)
LOG_ROTATE_BYTES = 5 << 20

Inbox = queue.Queue  # of (generation, kind, payload)


class LogFile:
    """The worker's stderr log on disk. A log that cannot be written (a full disk, a folder in its
    place) is given up after one note in the in-memory tail: draining stderr must go on, or the
    pipe fills and the worker blocks."""

    def __init__(self, path: Path, header: str) -> None:
        self.path = path
        self.failure = ""  # why the log was given up; empty while it works
        self._file: IO[str] | None = None
        try:
            with contextlib.suppress(OSError):
                if path.stat().st_size > LOG_ROTATE_BYTES:
                    path.replace(path.with_suffix(".log.1"))
            self._file = path.open("a", encoding="utf-8")
        except OSError as exc:
            self._give_up(exc)
        self.write(header)

    def write(self, line: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except (OSError, ValueError) as exc:
            self._give_up(exc)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:  # the last flush can fail like any write
                self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self.failure = (
            f"the worker log {self.path} cannot be written ({exc}); keeping only its tail"
        )


class WorkerProcess:
    """A started worker: its process, its reader threads and the tail of its stderr."""

    def __init__(self, generation: int, popen: subprocess.Popen, spawned: float) -> None:
        self.generation = generation
        self.popen = popen
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.tail_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.hello: JobHandle | None = None
        self.spawned = spawned  # time.monotonic() just before the process was started
        # Seconds from the spawn to hello's answer, and whether a job's timings carry them.
        self.start_s: float | None = None
        self.start_billed = False
        self.released = False  # stopped on purpose
        self.detached = False  # left to finish its jobs alone: its exit is not waited for
        # When stdout last gave a line (time.monotonic()), set by the reader thread: the
        # client's silence watchdog reads it, so a UI thread that polled late counts nothing.
        self.last_heard = time.monotonic()
        self._write_lock = threading.Lock()

    @classmethod
    def start(
        cls,
        generation: int,
        command: list[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        log_path: Path,
        inbox: Inbox,
    ) -> WorkerProcess:
        """Start ``command`` with its pipes read into ``inbox``; OSError when it cannot start."""
        log = LogFile(
            log_path, f"--- worker started {time.strftime('%Y-%m-%d %H:%M:%S')}: {command}"
        )
        spawned = time.monotonic()
        try:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                **process_group_kwargs(),
            )
        except OSError:
            log.close()
            raise
        w = cls(generation, popen, spawned)
        if log.failure:
            w.note(log.failure)
        err = threading.Thread(
            target=w._read_stderr, args=(log,), name="shape_e-stderr", daemon=True
        )
        out = threading.Thread(
            target=w._read_stdout, args=(err, inbox), name="shape_e-stdout", daemon=True
        )
        w.threads = [err, out]
        err.start()
        out.start()
        return w

    def bill_start(self, sent_at: float, result: Any) -> None:
        """The start (spawn to hello's answer) joins the timings of the first answer that has
        timings, when its request was sent before the worker was ready: it waited for it."""
        timings = result.get("timings") if isinstance(result, dict) else None
        if self.start_billed or self.start_s is None or not isinstance(timings, dict):
            return
        self.start_billed = True
        if sent_at <= self.spawned + self.start_s:
            result["timings"] = {"start": round(self.start_s, 4), **timings}

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def send(self, message: dict[str, Any]) -> None:
        """Write one protocol message; OSError or ValueError when the pipe is gone."""
        data = encode(message).encode("utf-8")
        with self._write_lock:
            assert self.popen.stdin is not None  # started with three pipes
            self.popen.stdin.write(data)
            self.popen.stdin.flush()

    def close_input(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.popen.stdin is not None:
                self.popen.stdin.close()

    def tail(self, lines: int = 30) -> str:
        with self.tail_lock:
            return "\n".join(list(self.stderr_tail)[-lines:])

    def threads_alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def note(self, text: str) -> None:
        """A line of the client's own in the tail (and the console); from any thread."""
        with self.tail_lock:
            self.stderr_tail.append(f"[client] {text}")
        print(f"shape_e: worker {self.generation}: {text}", file=sys.stderr)

    def _read_stdout(self, stderr_thread: threading.Thread, inbox: Inbox) -> None:
        gen = self.generation
        try:
            # Long lines (an inline mesh at grid 512 is tens of MB on one line), but bounded: a
            # broken worker command (a binary stream, `yes`) must not fill Blender's memory.
            assert self.popen.stdout is not None
            noise = 0
            while raw := self.popen.stdout.readline(MAX_LINE_BYTES + 1):
                if len(raw) > MAX_LINE_BYTES:
                    inbox.put((gen, "note", f"a stdout line over {MAX_LINE_BYTES >> 20} MiB"))
                    kill_now(self.popen)
                    break
                try:
                    msg = json.loads(raw)
                except (ValueError, RecursionError):
                    msg = None
                if not isinstance(msg, dict):
                    # Not the protocol: it says nothing of a job's progress (the watchdog is not
                    # reset), and past a few lines it is only counted, not queued or printed.
                    noise += 1
                    if noise <= NOISE_LINES:
                        text = raw.decode("utf-8", "replace").rstrip()
                        inbox.put((gen, "noise", text[:400]))
                    elif noise == NOISE_LINES + 1:
                        inbox.put((gen, "note", NOISE_NOTE))
                    continue
                self.last_heard = time.monotonic()
                inbox.put((gen, "message", msg))
        except Exception as exc:
            # The stream cannot be read on (out of memory for a line, a closed pipe): no job of
            # this worker can be answered any more, so stop it. The traceback goes to stderr.
            traceback.print_exc()
            inbox.put((gen, "note", f"reading the worker's output failed: {exc!r}"))
            kill_now(self.popen)
        finally:
            # However the loop ended, the jobs must learn that the worker is gone. Let stderr
            # finish first so the tail is complete.
            if not self.detached:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(10)
            stderr_thread.join(10)
            inbox.put((gen, "exit", self.popen.poll()))

    def _read_stderr(self, log: LogFile) -> None:
        try:
            assert self.popen.stderr is not None
            for raw in self.popen.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self.tail_lock:
                    self.stderr_tail.append(line)
                if not log.failure:
                    log.write(line)
                    if log.failure:
                        self.note(log.failure)
        finally:
            log.close()
