"""Fixtures for the client, operator, panel and preferences tests.

The add-on is enabled from this source tree the way Blender enables any add-on
(addon_utils.enable), and its worker is the real ``python -m shape_e_blender.worker`` run by this
interpreter, which has the worker's stack too. A test module imports the ``*_fixture`` functions;
pytest then finds them by their names (``addon``, ``scene``, ``worker_text_model``, ...).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")
import addon_utils  # noqa: E402  (ships with bpy)

ROOT = "shape_e_blender"
REPO = Path(__file__).resolve().parents[2]
FAST = {"steps": 4, "grid_size": 32}  # a tiny generation: seconds on two CPU cores
# The worker's interpreter. build.py names .venv's Python: these tests also run on Blender 4.2,
# whose venv holds only bpy and numpy (like Blender's own Python), so the worker runs elsewhere.
WORKER_PYTHON = os.environ.get("SHAPE_E_WORKER_PYTHON") or sys.executable
_tiny_models: dict[str, Path] = {}


def child_env() -> dict[str, str]:
    """This environment for a child Python, without PYTHON* variables, with the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO)
    return env


def run_child(
    *args: str, timeout: float = 600, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a child process from the repository root with child_env(); output captured as text."""
    return subprocess.run(
        list(args),
        cwd=REPO,
        env=child_env() | (env_extra or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def frozen(popen: subprocess.Popen):
    """The worker stopped (SIGSTOP) inside the block and let go (SIGCONT) after it.

    A frozen worker cannot read a shutdown request nor exit, so a call that returns while it is
    frozen and leaves it running has provably not waited for it to exit: no timing involved.
    """
    if not hasattr(signal, "SIGSTOP"):
        pytest.skip("freezing a process needs POSIX signals")
    os.kill(popen.pid, signal.SIGSTOP)
    try:
        yield popen
    finally:
        if popen.poll() is None:
            os.kill(popen.pid, signal.SIGCONT)


def process_gone(popen: subprocess.Popen, timeout: float = 30.0) -> bool:
    """Whether the process has exited within ``timeout`` (something else reaps it)."""
    deadline = time.monotonic() + timeout
    while popen.poll() is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def tiny_model(base: Path, kind: str) -> Path:
    """A tiny random pipeline written by the worker's interpreter (this one may lack torch)."""
    if kind not in _tiny_models:
        folder = base / f"tiny-{kind}"
        cmd = [WORKER_PYTHON, "-m", "shape_e_blender", "tiny-model", str(folder)]
        proc = run_child(*cmd, *(["--image"] if kind == "image" else []))
        assert proc.returncode == 0, proc.stderr[-3000:]
        _tiny_models[kind] = folder
    return _tiny_models[kind]


@pytest.fixture(scope="session", name="worker_text_model")
def worker_text_model_fixture(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.getbasetemp(), "text")


@pytest.fixture(scope="session", name="worker_image_model")
def worker_image_model_fixture(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.getbasetemp(), "image")


def enable_addon() -> None:
    package = sys.modules.get(ROOT)
    if package is not None:
        # Already imported by the tests: without this stamp addon_utils would reload it.
        package.__time__ = Path(package.__file__).stat().st_mtime
    errors: list[BaseException] = []
    mod = addon_utils.enable(ROOT, default_set=True, handle_error=errors.append)
    assert mod is not None, f"the add-on did not register: {errors}"


def disable_addon() -> None:
    addon_utils.disable(ROOT, default_set=True)


@pytest.fixture(scope="module", name="addon")
def addon_fixture(tmp_path_factory):
    """The add-on enabled for a whole test module (the worker stays warm between its tests)."""
    enable_addon()
    p = bpy.context.preferences.addons[ROOT].preferences
    p.worker_python = WORKER_PYTHON
    p.jobs_dir = str(tmp_path_factory.mktemp("jobs"))
    yield p
    disable_addon()


@pytest.fixture(name="text_model")
def text_model_fixture(addon, worker_text_model) -> Path:
    """The tiny text model, set as the add-on's text_model preference."""
    addon.text_model = str(worker_text_model)
    return worker_text_model


@pytest.fixture(name="scene")
def scene_fixture(addon):
    """An empty scene with undo enabled, and no job state left from an earlier test."""
    from shape_e_blender.blender import jobs

    bpy.ops.wm.read_homefile(use_empty=True)
    # Module mode starts with undo off; an initial step makes ed.undo() work.
    bpy.context.preferences.edit.undo_steps = 32
    bpy.ops.ed.undo_push(message="initial")
    jobs.status = jobs.Status()
    addon.keep_alive = True
    yield bpy.context.scene
    if jobs.busy():
        jobs.release()
        drain()


def drain(timeout: float = 120.0):
    """Poll the add-on's job until it ends (what the UI's timer does); returns it."""
    from shape_e_blender.blender import jobs

    deadline = time.monotonic() + timeout
    while jobs.busy():
        assert time.monotonic() < deadline, f"job still running: {jobs.status}"
        done = jobs.tick(bpy.context, timeout=0.25)
        if done is not None:
            return done
    return jobs.last()


def poll_until_stage(stage: str, timeout: float = 120.0) -> None:
    """Poll until the running job reports ``stage`` (e.g. sampling)."""
    from shape_e_blender.blender import jobs

    deadline = time.monotonic() + timeout
    while jobs.status.stage != stage:
        assert jobs.busy(), f"the job ended before {stage}: {jobs.status}"
        assert time.monotonic() < deadline, f"no {stage} progress: {jobs.status}"
        jobs.tick(bpy.context, timeout=0.25)


def kill_process(pid: int) -> None:
    """Kill a worker from outside, as a crash or the OOM killer would."""
    if os.name == "nt":
        os.kill(pid, signal.SIGTERM)  # TerminateProcess on Windows
    else:
        os.kill(pid, signal.SIGKILL)
