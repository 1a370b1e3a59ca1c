"""The managed worker environment: a venv with the pinned worker requirements (vendor/worker/).

Blender's own Python creates the venv (so its version matches a Python that torch supports), and
the venv's pip installs a hash lock (vendor/worker/*.lock.txt) in hash-checking mode: every
package, dependencies included, must match a pinned sha256, or nothing is installed. Nothing is
installed into Blender's Python. It runs in a background thread that only reads the
subprocesses' output; poll() applies it on the caller's thread (Blender's main thread). No bpy
here.
"""

from __future__ import annotations

import collections
import os
import platform
import queue
import shutil
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import CANCELLED, JOB_FAILED, ShapEError
from .process import PACKAGE_DIR, clean_env, kill_now, process_group_kwargs, venv_python

# Imported by the check step: a worker environment without these cannot run a job.
WORKER_IMPORTS = ("torch", "diffusers", "transformers", "skimage", "trimesh", "PIL", "numpy")
STAGES = ("creating", "installing", "checking")
STAGE_TEXT = {
    "creating": "Creating the environment",
    "installing": "Downloading and installing packages",
    "checking": "Checking the environment",
}


def vendor_dir(package_dir: Path = PACKAGE_DIR) -> Path:
    """vendor/worker/: inside the installed extension, or beside the package in the source tree."""
    for base in (package_dir, package_dir.parent):
        candidate = base / "vendor" / "worker"
        if (candidate / "base.txt").is_file():
            return candidate
    raise ShapEError(
        JOB_FAILED,
        f"the worker requirements (vendor/worker/*.txt) are missing beside {package_dir}",
        "reinstall the extension, or create an environment by hand and set worker_python",
    )


# PyPI's torch wheel per OS: the MPS build on macOS (the CPU one too), a CUDA 13 build on Linux,
# the CPU build on Windows. Where it is the variant's build, pypi.lock.txt serves; elsewhere the
# variant's own lock, whose torch comes from PyTorch's index (vendor/README.md).
PYPI_TORCH = {"darwin": ("mps", "cpu"), "linux": ("cuda",), "win32": ("cpu",)}


def machine_variant() -> str:
    """cuda where an NVIDIA driver answers, mps on Apple silicon, else cpu.

    Runs nvidia-smi, which can take seconds: call it off Blender's UI thread (EnvSetup does).
    """
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mps"
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            ok = subprocess.run([smi, "-L"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            ok = None
        if ok is not None and ok.returncode == 0 and b"GPU" in ok.stdout:
            return "cuda"
    return "cpu"


def lock_name(variant: str, system: str = sys.platform) -> str:
    """The lock file that installs ``variant`` (cpu, cuda, mps) on ``system`` (sys.platform)."""
    stem = "pypi" if variant in PYPI_TORCH.get(system, ()) else variant
    return f"{stem}{LOCK_SUFFIX}"


LOCK_SUFFIX = ".lock.txt"
UNHASHED = (
    " (this build has no hash lock for this machine's torch build: the pins are installed "
    "without hash checking; see vendor/README.md)"
)


def requirements_for_machine(folder: Path) -> Path:
    """The hash lock in ``folder`` for this machine's variant (machine_variant: runs nvidia-smi),
    or, where this build has none (a torch build from PyTorch's own index, which the machine that
    wrote the locks could not reach: vendor/README.md), the variant's pins, unhashed: the setup
    works and says so, rather than leave the machine without a worker."""
    lock = folder / lock_name(machine_variant())
    if lock.is_file():
        return lock
    return folder / (lock.name.removesuffix(LOCK_SUFFIX) + ".txt")


def is_lock(requirements: Path) -> bool:
    return requirements.name.endswith(LOCK_SUFFIX)


def missing_lock(lock: Path) -> ShapEError:
    source = lock.name.removesuffix(LOCK_SUFFIX) + ".txt"
    return ShapEError(
        JOB_FAILED,
        f"this build of the extension has no hash lock for this machine ({lock.name} is not "
        f"in {lock.parent}); `python build.py lock` writes it where PyPI and PyTorch's package "
        "index are reachable",
        f"create an environment by hand (vendor/README.md: pip install -r vendor/worker/{source})"
        " and set worker_python",
    )


class EnvSetup:
    """Create ``env_dir`` as a venv and install ``requirements`` into it, in the background.

    ``requirements`` is a file, or a function that picks one (requirements_for_machine): it is
    called on the setup's own thread, so a slow probe never holds up Blender.
    """

    def __init__(
        self,
        env_dir: str | os.PathLike[str],
        requirements: str | os.PathLike[str] | Callable[[], Path],
        *,
        base_python: str = sys.executable,
        verify: tuple[str, ...] = WORKER_IMPORTS,
    ) -> None:
        self.env_dir = Path(env_dir)
        self._pick = requirements if callable(requirements) else None
        # Known once the setup thread has picked it (at once when given as a file).
        self.requirements: Path | None = None if callable(requirements) else Path(requirements)
        self.base_python = base_python
        self.verify = verify
        self.stage = ""
        self.last_line = ""
        self.fraction = 0.0
        self.done = False
        self.error: ShapEError | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._cancel = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._proc_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="shape_e-setup", daemon=True)

    @property
    def python(self) -> Path:
        return venv_python(self.env_dir)

    def commands(self) -> list[tuple[str, list[str]]]:
        if self.requirements is None:
            raise ShapEError(JOB_FAILED, "the requirements file is not chosen yet", "start() first")
        py = str(self.python)
        # A lock: hash-checking mode, wheels only (an sdist's build would run unhashed code).
        hashed = (
            ["--require-hashes", "--only-binary", ":all:"] if is_lock(self.requirements) else []
        )
        check = f"import {', '.join(self.verify)}; print('ok')" if self.verify else "print('ok')"
        return [
            ("creating", [self.base_python, "-m", "venv", str(self.env_dir)]),
            (
                "installing",
                [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar",
                 "off", *hashed, "-r", str(self.requirements)],
            ),
            ("checking", [py, "-c", check]),
        ]  # fmt: skip

    def start(self) -> EnvSetup:
        self._thread.start()
        return self

    def poll(self, timeout: float = 0.0) -> bool:
        """Apply what the subprocesses said; True once finished (see ``error``).

        With ``timeout`` > 0 and nothing said yet, wait that long for the first line.
        """
        wait = timeout if timeout > 0 and not self.done else 0.0
        while True:
            try:
                kind, value = self._queue.get(timeout=wait) if wait else self._queue.get_nowait()
            except queue.Empty:
                return self.done
            wait = 0.0
            if kind == "stage":
                self.stage = value
                self.fraction = STAGES.index(value) / len(STAGES)
            elif kind == "line":
                self.last_line = value
                if value.startswith("Installing collected packages"):
                    self.fraction = max(self.fraction, 0.6)
            elif kind == "error":
                self.error, self.done = value, True
            elif kind == "done":
                self.fraction, self.done = 1.0, True

    def stage_text(self) -> str:
        return STAGE_TEXT.get(self.stage, "Starting")

    def cancel(self) -> None:
        """Stop the setup; returns at once (the setup thread reaps what it started)."""
        self._cancel.set()
        with self._proc_lock:
            if self._proc is not None:
                kill_now(self._proc)

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._steps()
        except Exception as exc:
            # The UI waits for "done" or "error": whatever went wrong, it must get one.
            traceback.print_exc()
            self._queue.put(("error", ShapEError(
                JOB_FAILED,
                f"setting up the worker environment failed: {type(exc).__name__}: {exc}",
                "the traceback is in the system console; press Set Up again, or create an "
                "environment by hand (vendor/README.md) and set worker_python",
            )))  # fmt: skip

    def _steps(self) -> None:
        if self._pick is not None:
            self.requirements = self._pick()
            unhashed = "" if is_lock(self.requirements) else UNHASHED
            picked = f"requirements: {self.requirements.name}{unhashed}"
            self.tail.append(picked)  # in the error of a setup that fails later, too
            self._queue.put(("line", picked))
        lock = self.requirements
        if lock is not None and not lock.is_file():
            self._queue.put(("error", missing_lock(lock)))
            return
        for stage, cmd in self.commands():
            self._queue.put(("stage", stage))
            rc = self._call(cmd)
            if self._cancel.is_set():
                err = ShapEError(CANCELLED, "setting up the worker environment was cancelled",
                                 "press Set Up again to finish it")  # fmt: skip
                self._queue.put(("error", err))
                return
            if rc != 0:
                self._queue.put(("error", self._failure(stage, rc)))
                return
        self._queue.put(("done", None))

    def _failure(self, stage: str, rc: int) -> ShapEError:
        tail = "\n".join(list(self.tail)[-12:])
        said = "\n".join(self.tail)
        lock = self.requirements.name if self.requirements is not None else "the lock"
        if stage == "installing" and "DO NOT MATCH THE HASHES" in said:
            return ShapEError(
                JOB_FAILED,
                f"a downloaded package does not match its sha256 in {lock}, so nothing was "
                f"installed (exit status {rc}):\n{tail}",
                "the download was altered on the way (a proxy or a damaged file): check the "
                "network and press Set Up again; if it fails the same way, create an environment "
                "by hand (vendor/README.md) and set worker_python",
            )
        if stage == "installing" and "--require-hashes mode" in said:
            return ShapEError(
                JOB_FAILED,
                f"{lock} does not pin every package with a hash (exit status {rc}):\n{tail}",
                "reinstall the extension (its lock is incomplete), or create an environment "
                "by hand (vendor/README.md) and set worker_python",
            )
        if (
            stage == "installing"
            and "No matching distribution found" in said
            and "(from versions: none)" not in said  # none at all: the index was not reached
        ):
            return ShapEError(
                JOB_FAILED,
                f"{lock} pins a version that has no wheel for this Python and system (exit "
                f"status {rc}):\n{tail}",
                "create an environment by hand from a Python that the pins have wheels for "
                "(vendor/README.md) and set worker_python",
            )
        return ShapEError(
            JOB_FAILED,
            f"{STAGE_TEXT[stage].lower()} failed (exit status {rc}):\n{tail}",
            "check the network connection and free disk space, then press Set Up again; or "
            "create an environment by hand (vendor/README.md) and set worker_python",
        )

    def _call(self, cmd: list[str]) -> int:
        try:
            with self._proc_lock:
                if self._cancel.is_set():
                    return -1
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=clean_env(None),
                    **process_group_kwargs(),
                )
        except OSError as exc:
            self.tail.append(f"{cmd[0]}: {exc}")
            return -1
        proc = self._proc
        assert proc.stdout is not None  # started with stdout=PIPE
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.tail.append(line)
                self._queue.put(("line", line))
        return proc.wait()
