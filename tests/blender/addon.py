"""The add-on in the test process: enable it from this source tree, and drive its task loop.

The add-on is enabled the way Blender enables any add-on (addon_utils.enable), and its worker is
the real ``python -m shape_e_blender.worker`` run by the worker's interpreter. Timers never fire
in module mode, so the tests call the loop's tick() themselves, as the UI's timer would.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import addon_utils
import bpy

from shape_e_blender.blender import tasks

ROOT = "shape_e_blender"


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


def drain(timeout: float = 120.0):
    """Poll the add-on's task until it ends (what the UI's timer does); returns it."""
    deadline = time.monotonic() + timeout
    while tasks.busy():
        assert time.monotonic() < deadline, f"job still running: {tasks.status}"
        done = tasks.tick(bpy.context, timeout=0.25)
        if done is not None:
            return done
    return tasks.last()


def poll_until_stage(stage: str, timeout: float = 120.0) -> None:
    """Poll until the running task reports ``stage`` (e.g. sampling)."""
    deadline = time.monotonic() + timeout
    while tasks.status.stage != stage:
        assert tasks.busy(), f"the job ended before {stage}: {tasks.status}"
        assert time.monotonic() < deadline, f"no {stage} progress: {tasks.status}"
        tasks.tick(bpy.context, timeout=0.25)
