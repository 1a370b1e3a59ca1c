"""WorkerClient: starts the worker process and speaks docs/protocol.md with it.

No bpy in here (stdlib and core only), so it runs and is tested anywhere. Threads only read pipes
and put what they read on a queue; everything else, job state included, changes in ``poll()``,
which the caller runs on one thread (Blender's main thread: timers in the UI, a loop in
background mode).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from ..core.errors import JOB_FAILED, PROTOCOL_MISMATCH, WORKER_EXITED, ShapEError
from ..core.protocol import PROTOCOL_VERSION, GenerateRequest, Progress, encode, request

# The package folder (shape_e_blender/ in the source tree, the extension's folder once installed).
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The child gets only what a Python program with torch and the Hugging Face hub needs. Blender sets
# PYTHONHOME/PYTHONPATH for its own interpreter (they would break the worker's), and may carry
# other variables meant for itself, so this is an allowlist rather than a blocklist.
KEEP_VARS = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "LD_LIBRARY_PATH",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",  # the lowercase spellings match too (names are compared upper-cased)
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        # Windows: without SYSTEMROOT, Python's socket and random modules fail to start.
        "SYSTEMROOT",
        "SYSTEMDRIVE",
        "WINDIR",
        "COMSPEC",
        "PATHEXT",
        "USERPROFILE",
        "USERNAME",
        "APPDATA",
        "LOCALAPPDATA",
        "PROGRAMDATA",
        "PROGRAMFILES",
        "NUMBER_OF_PROCESSORS",
        "PROCESSOR_ARCHITECTURE",
        "OS",
    }
)
KEEP_PREFIXES = (
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "DIFFUSERS_",
    "TORCH_",
    "PYTORCH_",
    "CUDA_",
    "NVIDIA_",
    "HIP_",
    "ROCM_",
    "OMP_",
    "MKL_",
    "XDG_",  # the Hugging Face cache defaults to $XDG_CACHE_HOME/huggingface
    "LC_",
    "SSL_",
    "SHAPE_E_",
)

STDERR_LINES = 400  # the bounded tail kept in memory; the whole stream goes to the log file
LOG_ROTATE_BYTES = 5 << 20
KILL_GRACE_S = 3.0

EventKind = Literal["progress", "result", "error"]


def venv_python(env_dir: str | os.PathLike[str]) -> Path:
    """The interpreter inside a venv, on Windows and elsewhere."""
    env_dir = Path(env_dir)
    if os.name == "nt":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


def clean_env(
    package_dir: str | os.PathLike[str] | None = PACKAGE_DIR,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A child Python's environment: an allowlist of ``base`` plus our own PYTHON* settings.

    ``package_dir``'s parent goes on PYTHONPATH so that ``-m shape_e_blender.worker`` finds this
    very package; None leaves PYTHONPATH out (pip, venv).
    """
    base = os.environ if base is None else base
    # Upper-cased for the test: Windows names are case-insensitive (SystemRoot, Path).
    env = {
        k: v
        for k, v in base.items()
        if not k.upper().startswith("PYTHON")
        and (k.upper() in KEEP_VARS or k.upper().startswith(KEEP_PREFIXES))
    }
    if package_dir is not None:
        env["PYTHONPATH"] = str(Path(package_dir).resolve().parent)
    env["PYTHONUNBUFFERED"] = "1"
    # Pipes default to the locale's code page on Windows; the protocol is UTF-8.
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def process_group_kwargs() -> dict[str, Any]:
    """Start the child in its own process group, so that killing it takes its children too."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def kill_tree(popen: subprocess.Popen, grace: float = KILL_GRACE_S) -> None:
    """Stop a process started with process_group_kwargs() and everything it started; waits.

    Waits up to twice ``grace`` for the process to end: for background mode and unregister().
    Blender's UI thread calls kill_now() instead.
    """
    if os.name == "nt":
        if popen.poll() is None:
            # taskkill /T takes the children (torch's helpers) along; kill() is the fallback.
            subprocess.run(
                ["taskkill", "/T", "/F", "/PID", str(popen.pid)],
                capture_output=True,
                check=False,
                creationflags=subprocess.CREATE_NO_WINDOW,
            )
            with contextlib.suppress(OSError):
                popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(grace)
        return
    # start_new_session made the child a group leader: its pid is the group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    # Children may outlive the leader; SIGKILL the whole group either way.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(grace)


def kill_now(popen: subprocess.Popen) -> None:
    """Kill a process started with process_group_kwargs() and its children, without waiting.

    For Blender's UI thread: nothing here blocks. Whoever reads the process's pipes sees them
    close and reaps it (WorkerClient's stdout reader, EnvSetup's thread).
    """
    if os.name == "nt":
        if popen.poll() is not None:
            return
        try:
            # Started, not waited for: taskkill ends by itself. popen.kill() first would orphan
            # the children, which taskkill /T finds through their parent.
            subprocess.Popen(
                ["taskkill", "/T", "/F", "/PID", str(popen.pid)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                creationflags=subprocess.CREATE_NO_WINDOW,
            )
        except OSError:
            with contextlib.suppress(OSError):
                popen.kill()
        return
    # SIGKILL at once: the group goes whatever it is doing, and its pipes close.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)


def _stop_after(popen: subprocess.Popen, timeout: float) -> None:
    """Give a process asked to exit ``timeout`` seconds, then kill it and its children."""
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_tree(popen)


@dataclass(eq=False)  # compared by identity: two requests are never the same job
class Job:
    """One request and what came back for it. Changed only by WorkerClient.poll()."""

    id: int
    method: str
    params: dict[str, Any]
    generation: int  # which worker process it was sent to
    progress: Progress | None = None
    result: Any = None
    error: ShapEError | None = None
    done: bool = False
    sent_at: float = field(default_factory=time.monotonic)

    def raise_for_error(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(frozen=True)
class Event:
    kind: EventKind
    job: Job
    progress: Progress | None = None


class _LogFile:
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


@dataclass
class _Worker:
    """One worker process and its reader threads."""

    generation: int
    popen: subprocess.Popen
    stderr_tail: collections.deque[str]
    tail_lock: threading.Lock
    threads: list[threading.Thread] = field(default_factory=list)
    hello: Job | None = None
    released: bool = False  # we stopped it on purpose

    def tail(self, lines: int = 30) -> str:
        with self.tail_lock:
            return "\n".join(list(self.stderr_tail)[-lines:])


class WorkerClient:
    """A proxy for one worker process, started on first use and restarted after it dies.

    ``python`` is the worker environment's interpreter; ``jobs_root`` is where jobs sent without a
    job folder go, and where the worker's stderr log (``worker.log``) is kept.
    """

    def __init__(
        self,
        python: str | os.PathLike[str],
        jobs_root: str | os.PathLike[str],
        *,
        package_dir: str | os.PathLike[str] = PACKAGE_DIR,
        env: Mapping[str, str] | None = None,
        hello_timeout: float = 300.0,
    ) -> None:
        self.python = str(python)
        self.jobs_root = Path(jobs_root)
        self.package_dir = Path(package_dir)
        self._base_env = env
        self.hello_timeout = hello_timeout
        self._queue: queue.Queue[tuple[int, str, Any]] = queue.Queue()
        self._events: list[Event] = []
        self._jobs: dict[int, Job] = {}
        self._next_id = 1
        self._generation = 0
        self._worker: _Worker | None = None
        self._old: list[_Worker] = []  # stopped workers whose threads may still be finishing
        self._write_lock = threading.Lock()
        self.info: dict[str, Any] = {}  # the last hello result

    # -- process ---------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.jobs_root / "worker.log"

    @property
    def pid(self) -> int | None:
        w = self._worker
        return w.popen.pid if w is not None and w.popen.poll() is None else None

    def is_running(self) -> bool:
        return self.pid is not None

    def executable(self) -> str:
        """``python`` itself, or a bare command name ("python3.11") found on PATH."""
        if Path(self.python).is_file():
            return self.python
        return shutil.which(self.python) or self.python

    def command(self) -> list[str]:
        # The package folder's own name: "shape_e_blender" when installed as the extension.
        return [
            self.executable(),
            "-m",
            f"{self.package_dir.name}.worker",
            "--jobs-root",
            str(self.jobs_root),
        ]

    def start(self) -> Job:
        """Start the worker if it is not running; returns its ``hello`` job (answered later)."""
        w = self._worker
        if w is not None and w.popen.poll() is None and not w.released:
            assert w.hello is not None
            return w.hello
        if w is not None:
            self._retire(w)
        if not Path(self.executable()).is_file():
            raise ShapEError(
                WORKER_EXITED,
                f"the worker's Python interpreter does not exist: {self.python}",
                "set up the worker environment in the add-on's preferences, or set worker_python "
                "to a Python that has torch and diffusers",
                "worker_python",
            )
        self.jobs_root.mkdir(parents=True, exist_ok=True)
        log = _LogFile(
            self.log_path,
            f"--- worker started {time.strftime('%Y-%m-%d %H:%M:%S')}: {self.command()}",
        )
        try:
            popen = subprocess.Popen(
                self.command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=clean_env(self.package_dir, self._base_env),
                cwd=str(self.package_dir.parent),
                **process_group_kwargs(),
            )
        except OSError as exc:
            log.close()
            raise ShapEError(
                WORKER_EXITED,
                f"could not start the worker ({self.python}): {exc}",
                "check worker_python in the add-on's preferences",
                "worker_python",
            ) from exc
        self._generation += 1
        w = _Worker(
            self._generation, popen, collections.deque(maxlen=STDERR_LINES), threading.Lock()
        )
        if log.failure:
            self._note_worker(w, log.failure)
        err = threading.Thread(
            target=self._read_stderr, args=(w, log), name="shape_e-stderr", daemon=True
        )
        out = threading.Thread(
            target=self._read_stdout, args=(w, err), name="shape_e-stdout", daemon=True
        )
        w.threads = [err, out]
        err.start()
        out.start()
        self._worker = w
        w.hello = self._send_request(w, "hello", {})
        return w.hello

    def hello(self, timeout: float | None = None) -> dict[str, Any]:
        """Start the worker if needed and wait for its ``hello`` answer."""
        job = self.start()
        self.wait(job, self.hello_timeout if timeout is None else timeout)
        return job.raise_for_error()

    def shutdown(self, timeout: float = 10.0, *, wait: bool = True) -> None:
        """Ask the worker to finish its jobs and exit; kill it if it lingers past ``timeout``.

        ``wait=False`` returns at once (Blender's UI thread): a thread waits out ``timeout``
        instead, and join() collects it later.
        """
        w = self._worker
        if w is None:
            return
        self._worker = None
        if w.popen.poll() is None:
            self._send_request(w, "shutdown", {})
            with contextlib.suppress(OSError, ValueError):
                w.popen.stdin.close()
            if wait:
                _stop_after(w.popen, timeout)
            else:
                stopper = threading.Thread(
                    target=_stop_after, args=(w.popen, timeout), name="shape_e-stop", daemon=True
                )
                w.threads.append(stopper)
                stopper.start()
        self._retire(w)
        self.join(5.0 if wait else 0.0)

    def kill(self, *, wait: bool = True) -> None:
        """Hard release: stop the process now (frees its GPU memory); running jobs fail.

        Workers still finishing after shutdown(wait=False) go too. ``wait=False`` returns at once
        (Blender's UI thread): the reader threads reap the process, and join() collects them later.
        """
        w = self._worker
        self._worker = None
        if w is not None:
            w.released = True
            self._fail_pending(
                w.generation,
                ShapEError(
                    WORKER_EXITED,
                    "the worker was released while the job ran",
                    "press Generate to start again",
                ),
            )
            self._retire(w)
        for old in self._old:
            # A live reader thread may mean children that outlived the worker and hold its pipes.
            if old.popen.poll() is None or any(t.is_alive() for t in old.threads):
                old.released = True
                (kill_tree if wait else kill_now)(old.popen)
        self.join(5.0 if wait else 0.0)

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the threads of stopped workers (Blender must not exit with them).

        ``join(0)`` only forgets those that have finished: it never blocks.
        """
        for w in self._old:
            for t in w.threads:
                t.join(timeout)
        # Keep the last two for their stderr tail (their exit may not be polled yet).
        self._old = [
            w
            for i, w in enumerate(self._old)
            if i >= len(self._old) - 2 or any(t.is_alive() for t in w.threads)
        ]

    def threads_alive(self) -> list[threading.Thread]:
        workers = [*self._old, *([self._worker] if self._worker else [])]
        return [t for w in workers for t in w.threads if t.is_alive()]

    def stderr_tail(self, lines: int = 30) -> str:
        w = self._worker or (self._old[-1] if self._old else None)
        return w.tail(lines) if w is not None else ""

    # -- requests --------------------------------------------------------------------------------

    def generate(self, req: GenerateRequest) -> Job:
        self.start()
        assert self._worker is not None
        return self._send_request(self._worker, "generate", req.to_json())

    def download(self, model: str, kind: str | None = None, cache_dir: str | None = None) -> Job:
        """Fetch a model's weights; ``kind`` ("text" or "image") says which files it needs."""
        self.start()
        assert self._worker is not None
        params: dict[str, Any] = {"model": model}
        if kind:
            params["kind"] = kind
        if cache_dir:
            params["cache_dir"] = cache_dir
        return self._send_request(self._worker, "download", params)

    def cancel(self, job: Job | int) -> Job | None:
        """Ask the worker to cancel a job; the job itself then ends with a ``cancelled`` error."""
        jid = job.id if isinstance(job, Job) else job
        w = self._worker
        if w is None or w.popen.poll() is not None:
            return None
        return self._send_request(w, "cancel", {"id": jid})

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0):
        """Send a request and wait for its answer (hello, status, ...). Raises ShapEError."""
        self.start()
        assert self._worker is not None
        job = self._send_request(self._worker, method, params or {})
        self.wait(job, timeout)
        return job.raise_for_error()

    def status(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.call("status", {}, timeout)

    # -- receiving -------------------------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Apply everything the worker said since the last call; return it as events.

        With ``timeout`` > 0, wait that long for the first message (no busy waiting).
        """
        self._pump(timeout)
        events, self._events = self._events, []
        return events

    def wait(self, job: Job, timeout: float | None = None) -> Job:
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

    def pending(self) -> list[Job]:
        return [j for j in self._jobs.values() if not j.done]

    # -- internals -------------------------------------------------------------------------------

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def _send_request(self, w: _Worker, method: str, params: dict[str, Any]) -> Job:
        job = Job(self._take_id(), method, params, w.generation)
        self._jobs[job.id] = job
        try:
            self._write(w, request(job.id, method, params))
        except (OSError, ValueError):
            # The worker died under us. Its stdout reader reports the exit with stderr's tail,
            # and that fails this job along with the others; nothing more to do here.
            pass
        return job

    def _write(self, w: _Worker, message: dict[str, Any]) -> None:
        data = encode(message).encode("utf-8")
        with self._write_lock:
            w.popen.stdin.write(data)
            w.popen.stdin.flush()

    def _read_stdout(self, w: _Worker, stderr_thread: threading.Thread) -> None:
        gen = w.generation
        try:
            # Lines of any length: an inline mesh at grid 512 is tens of MB on one line.
            for raw in w.popen.stdout:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    self._queue.put((gen, "noise", raw.decode("utf-8", "replace").rstrip()))
                    continue
                self._queue.put((gen, "message", msg))
        except Exception as exc:
            # The stream cannot be read on (out of memory for a line, a closed pipe): no job of
            # this worker can be answered any more, so stop it. The traceback goes to stderr.
            traceback.print_exc()
            self._queue.put((gen, "note", f"reading the worker's output failed: {exc!r}"))
            kill_now(w.popen)
        finally:
            # However the loop ended, the jobs must learn that the worker is gone. Let stderr
            # finish first so the tail is complete.
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.popen.wait(10)
            stderr_thread.join(10)
            self._queue.put((gen, "exit", w.popen.poll()))

    def _read_stderr(self, w: _Worker, log: _LogFile) -> None:
        try:
            for raw in w.popen.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with w.tail_lock:
                    w.stderr_tail.append(line)
                if not log.failure:
                    log.write(line)
                    if log.failure:
                        self._note_worker(w, log.failure)
        finally:
            log.close()

    def _pump(self, timeout: float) -> None:
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(*item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return

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
            job = self._jobs.get(params.get("id"))  # type: ignore[arg-type]
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
        is_hello = w is not None and job is w.hello
        if "error" in msg:
            err = ShapEError.from_json(msg["error"])
            self._finish(job, error=err)
            if is_hello:
                # A worker that cannot say hello (e.g. its Python has no torch) cannot run a job
                # either: its other jobs fail with the same message and hint.
                self._abandon(w, err)
            return
        result = msg["result"]
        if is_hello:
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
                self._abandon(w, err)
                return
            self.info = result
        self._finish(job, result=result)

    def _abandon(self, w: _Worker, error: ShapEError) -> None:
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
        message = f"the worker exited (status {returncode}) before answering"
        if tail:
            message += f"; the end of its log:\n{tail}"
        self._fail_pending(
            gen,
            ShapEError(
                WORKER_EXITED,
                message,
                f"the whole log is in {self.log_path}; press Generate to start a new worker, "
                "or check worker_python in the add-on's preferences",
            ),
        )

    def _fail_pending(self, gen: int, error: ShapEError) -> None:
        for job in list(self._jobs.values()):
            if job.generation == gen and not job.done:
                self._finish(job, error=error)

    def _finish(self, job: Job, *, result: Any = None, error: ShapEError | None = None) -> None:
        job.done = True
        job.result = result
        job.error = error
        self._events.append(Event("error" if error is not None else "result", job))
        # Keep finished jobs only while someone may still look them up by id.
        if len(self._jobs) > 256:
            for jid in [j.id for j in self._jobs.values() if j.done][:128]:
                del self._jobs[jid]

    def _worker_of(self, gen: int) -> _Worker | None:
        for w in [self._worker, *self._old]:
            if w is not None and w.generation == gen:
                return w
        return None

    def _retire(self, w: _Worker) -> None:
        if w not in self._old:
            self._old.append(w)
        with contextlib.suppress(OSError, ValueError):
            w.popen.stdin.close()

    def _note(self, gen: int, text: str) -> None:
        w = self._worker_of(gen)
        if w is not None:
            self._note_worker(w, text)
        else:
            print(f"shape_e: worker {gen}: {text}", file=sys.stderr)

    @staticmethod
    def _note_worker(w: _Worker, text: str) -> None:
        """A line of the client's own in the worker's tail (and the console); any thread."""
        with w.tail_lock:
            w.stderr_tail.append(f"[client] {text}")
        print(f"shape_e: worker {w.generation}: {text}", file=sys.stderr)
