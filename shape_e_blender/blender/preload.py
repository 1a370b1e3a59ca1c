"""Loading the models in advance: when the panel is first drawn, start the worker and load the
pipeline that Generate will use, so that pressing it a few seconds later pays neither the
worker's start nor the model's load (the ``preload`` preference, on by default).

Never in background mode (a script's first job pays the start itself, and says so in its
timings); never for a model that is not on disk (it would be a download, which only the Download
button and a job that allows it make; core.weights.on_disk decides without the worker); never for
a worker command (another machine's worker starts with the first job); at most once per model and
settings in a session, so a worker stopped on purpose (Release, keep-alive off) stays stopped.
A Generate pressed meanwhile queues behind the load in the worker and shows its progress.
"""

from __future__ import annotations

import sys
from typing import Any

import bpy

from ..client.process import executable
from ..core.errors import ShapEError
from ..core.files import is_file
from ..core.params import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL, SETTINGS
from ..core.weights import on_disk
from . import prefs, tasks
from .status import STAGE_LABELS

POLL_S = 0.25
_tried: set[tuple[Any, ...]] = set()  # what was loaded in advance (or found not on disk) already


def wanted(
    p: prefs.ShapEPreferences, context: bpy.types.Context
) -> tuple[str, str, dict[str, str]] | None:
    """The model, its kind and where it runs, that Generate would use now; None where the
    preferences ask for no load in advance."""
    if not p.preload or p.worker_command.strip():
        return None
    image = context.scene.shape_e.source != "TEXT"  # an image file, or the camera's render
    kind = "image" if image else "text"
    model = (p.image_model if image else p.text_model).strip()
    model = model or (DEFAULT_IMAGE_MODEL if image else DEFAULT_TEXT_MODEL)
    where = {n: SETTINGS[n].from_identifier(getattr(p, n)) for n in ("device", "precision")}
    return model, kind, where


def maybe_start(context: bpy.types.Context, *, background: bool | None = None) -> bool:
    """Called by the panel's draw: start the load in advance where it is wanted; True when it
    started. ``background`` stands for bpy.app.background (a test of the UI's path sets it)."""
    if bpy.app.background if background is None else background:
        return False
    if tasks.busy() or (tasks.warming is not None and not tasks.warming.done):
        return False
    try:
        p = prefs.get(context)
        want = wanted(p, context)
        if want is None:
            return False
        model, kind, where = want
        python = prefs.worker_python(p)
        if not is_file(executable(str(python))):
            return False  # no worker environment yet: tried again once it is set up
        key = (model, kind, *sorted(where.items()), str(python))
        if key in _tried:
            return False
        _tried.add(key)
        if not on_disk(model, kind):
            return False
        client = prefs.client(context)
        tasks.warming = client.load(model, kind, **where)
    except ShapEError as err:  # no worker environment yet, an unusable jobs folder, ...
        print(f"shape_e: loading the models in advance: {err.message}", file=sys.stderr)
        return False
    if not bpy.app.timers.is_registered(timer):
        bpy.app.timers.register(timer, first_interval=POLL_S, persistent=True)
    return True


def timer() -> float | None:
    """Poll the worker until the load in advance has ended (a task, once begun, polls it)."""
    job = tasks.warming
    if job is None:
        return None
    if not tasks.busy():
        tasks.tick()
    if not job.done:
        return POLL_S
    if job.error is not None:
        print(f"shape_e: loading the models in advance: {job.error.message}", file=sys.stderr)
    tasks.warming = None
    return None


def progress() -> str:
    """What the panel says while the load in advance runs; "" when none does."""
    job = tasks.warming
    if job is None or job.done or tasks.busy():
        return ""
    stage = job.progress.stage if job.progress is not None else "starting"
    return f"{STAGE_LABELS.get(stage, stage)} in the background"


def forget() -> None:
    """For unregister() and tests: the next draw may load in advance again."""
    _tried.clear()
    if bpy.app.timers.is_registered(timer):
        bpy.app.timers.unregister(timer)
