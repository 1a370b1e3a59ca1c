"""Real Blender (bpy as a module): a clean scene per test, away from the developer's Blender.

Only bpy, numpy, the standard library and our core, client and blender modules are imported by
these tests, so they run under every Blender version of the matrix, whose Pythons hold no torch.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import pytest

from tests.support import WORKER_PYTHON

from .addon import ROOT, disable_addon, drain, enable_addon


@pytest.fixture
def context():
    """bpy.context on an empty scene; loading it also clears the undo stack."""
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context


@pytest.fixture(scope="module")
def addon(tmp_path_factory):
    """The add-on enabled for a whole test module (the worker stays warm between its tests)."""
    enable_addon()
    p = bpy.context.preferences.addons[ROOT].preferences
    p.worker_python = WORKER_PYTHON
    p.jobs_dir = str(tmp_path_factory.mktemp("jobs"))
    yield p
    disable_addon()


@pytest.fixture
def text_model(addon, worker_text_model) -> Path:
    """The tiny text model, set as the add-on's text_model preference."""
    addon.text_model = str(worker_text_model)
    return worker_text_model


@pytest.fixture
def scene(addon):
    """An empty scene with undo enabled, and no task state left from an earlier test."""
    from shape_e_blender.blender import tasks

    bpy.ops.wm.read_homefile(use_empty=True)
    # Module mode starts with undo off; an initial step makes ed.undo() work.
    bpy.context.preferences.edit.undo_steps = 32
    bpy.ops.ed.undo_push(message="initial")
    tasks.status = tasks.Status()
    addon.keep_alive = True
    yield bpy.context.scene
    if tasks.busy():
        tasks.release()
        drain()
