"""Helpers shared by the test folders and by the child processes they start. Standard library
only: Blender children (any Blender version) and bpy-free client tests import it too.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FAST = {"steps": 4, "grid_size": 32}  # a tiny generation: seconds on two CPU cores
# The worker's interpreter. build.py names .venv's Python: the Blender tests also run under
# Pythons that hold only bpy and numpy (like Blender's own), so the worker runs elsewhere.
WORKER_PYTHON = os.environ.get("SHAPE_E_WORKER_PYTHON") or sys.executable
# An interpreter with numpy but no torch, as a worker environment is before its setup finishes:
# build.py names Python 3.13's .venv-py313, which is also what Blender 5.1+ would make.
NO_TORCH_PYTHON = os.environ.get("SHAPE_E_NO_TORCH_PYTHON", "")
NO_TORCH_REASON = "needs a Python with numpy but no torch: build.py test names it"
RESULT_PREFIX = "RESULT_JSON:"
HAS_EGL = ctypes.util.find_library("EGL") is not None
NO_EGL_REASON = "rendering with bpy needs an EGL library (Mesa's libEGL); without it Blender aborts"
_tiny_models: dict[str, Path] = {}


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a child Python: no PYTHON* variables, the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_child(
    *args: str,
    timeout: float = 600,
    env_extra: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] = REPO,
) -> subprocess.CompletedProcess:
    """Run a child process (from the repository root unless ``cwd``) with child_env(); output
    captured as text."""
    return subprocess.run(
        list(args),
        cwd=cwd,
        env=child_env(**(env_extra or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_blender_script(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> dict[str, Any]:
    """Run ``python -m <module> args`` with this interpreter (so the same bpy) in a subprocess.

    The script prints one line ``RESULT_JSON:{...}`` (see emit_result); that dict is returned.
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"{module} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def emit_result(result: dict[str, Any]) -> None:
    """The child's side of run_blender_script."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def tiny_model(base: Path, kind: str) -> Path:
    """A tiny random pipeline written by the worker's interpreter (this one may lack torch)."""
    if kind not in _tiny_models:
        folder = base / f"tiny-{kind}"
        cmd = [WORKER_PYTHON, "-m", "shape_e_blender", "tiny-model", str(folder)]
        proc = run_child(*cmd, *(["--image"] if kind == "image" else []))
        assert proc.returncode == 0, proc.stderr[-3000:]
        _tiny_models[kind] = folder
    return _tiny_models[kind]


@contextlib.contextmanager
def frozen(popen: subprocess.Popen):
    """The worker stopped (SIGSTOP) inside the block and let go (SIGCONT) after it.

    A frozen worker cannot read a shutdown request nor exit, so a call that returns while it is
    frozen and leaves it running has provably not waited for it to exit: no timing involved.
    """
    import pytest

    if not hasattr(signal, "SIGSTOP"):
        pytest.skip("freezing a process needs POSIX signals")
    os.kill(popen.pid, signal.SIGSTOP)
    try:
        yield popen
    finally:
        if popen.poll() is None:
            os.kill(popen.pid, signal.SIGCONT)


def interrupt(popen: subprocess.Popen, signum: int, timeout: float = 300.0) -> tuple[Any, Any]:
    """Send ``signum`` to a running child while it is frozen (its job cannot end before the
    signal is there), let it go on and wait for its end: its (stdout, stderr)."""
    os.kill(popen.pid, signal.SIGSTOP)
    os.kill(popen.pid, signum)
    os.kill(popen.pid, signal.SIGCONT)
    return popen.communicate(timeout=timeout)


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "300k"):
    """``folder`` on a file system of ``size`` bytes (a tmpfs) inside the block: a disk that
    fills up mid-job. Skips where this user cannot mount one (mounting needs root on Linux)."""
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    tried = (
        subprocess.run(
            [mount or "mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mount and sys.platform.startswith("linux")
        else None
    )
    if tried is None or tried.returncode != 0:
        why = tried.stderr.strip() if tried is not None else "not Linux, or no mount command"
        pytest.skip(f"a small disk needs a tmpfs mount, which failed here: {why}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def process_gone(popen: subprocess.Popen, timeout: float = 30.0) -> bool:
    """Whether the process has exited within ``timeout`` (something else reaps it)."""
    deadline = time.monotonic() + timeout
    while popen.poll() is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_process(pid: int) -> None:
    """Kill a worker from outside, as a crash or the OOM killer would."""
    if os.name == "nt":
        os.kill(pid, signal.SIGTERM)  # TerminateProcess on Windows
    else:
        os.kill(pid, signal.SIGKILL)


def remote_command(machine: Path, model: Path) -> tuple[list[str], Path]:
    """A wrapper around the worker that lives in ``machine``: its own package copy, model copy,
    HOME, jobs root and working folder. Returns the command and the model's path there."""
    site, home, jobs, cwd = (machine / n for n in ("site", "home", "jobs", "cwd"))
    for folder in (home, cwd):
        folder.mkdir(parents=True)
    package = REPO / "shape_e_blender"
    shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(model, machine / "models" / "tiny")
    script = (
        f"cd {shlex.quote(str(cwd))} && HOME={shlex.quote(str(home))} "
        f"PYTHONPATH={shlex.quote(str(site))} HF_HOME={shlex.quote(str(home / 'hf'))} "
        f"exec {shlex.quote(WORKER_PYTHON)} -m shape_e_blender.worker "
        f"--jobs-root {shlex.quote(str(jobs))}"
    )
    return ["sh", "-c", script], machine / "models" / "tiny"


def workers_serving(jobs: Path) -> list[int]:
    """The pids of the worker processes whose command line names ``jobs`` (Linux's /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        if b"shape_e_blender.worker" in command and str(jobs).encode() in command:
            pids.append(int(proc.name))
    return pids


def until_no_worker_serves(jobs: Path, timeout: float = 60.0) -> list[int]:
    """Wait (bounded) for the workers of ``jobs`` to be gone and reaped; those still there."""
    deadline = time.monotonic() + timeout
    while workers_serving(jobs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return workers_serving(jobs)
