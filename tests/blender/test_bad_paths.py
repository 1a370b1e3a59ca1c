"""Paths the OS cannot look up (a name too long for the file system, a link that loops), typed
into an operator or a preference: refused naming the field, never a Python traceback in Blender.

pathlib's is_file() and is_dir() raise OSError for them on Blender's Pythons (3.11 and 3.13), so
each of these reached Blender as "Error: Python: Traceback ...".
"""

from __future__ import annotations

from pathlib import Path

import bpy
import pytest

from shape_e_blender.blender import preload, tasks
from tests.support import WORKER_PYTHON


def _refused(call, *expected: str) -> None:
    before = set(bpy.data.objects.keys())
    with pytest.raises(RuntimeError) as info:  # background mode raises an operator's error
        call()
    text = str(info.value)
    assert "Traceback" not in text and all(e in text for e in expected), text
    assert set(bpy.data.objects.keys()) == before and not tasks.busy()


@pytest.mark.parametrize("name", ["y" * 300, "loop"])
def test_an_image_or_job_folder_the_os_cannot_look_up_is_refused_naming_the_field(
    scene, tmp_path, name
):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    path = tmp_path / name
    _refused(lambda: bpy.ops.shape_e.image_to_mesh(filepath=str(path)), "filepath", "no image")
    _refused(lambda: bpy.ops.shape_e.import_job(job_dir=str(path)), "job_dir", "no folder")


def test_preferences_the_os_cannot_look_up_are_told_as_missing(scene, addon, tmp_path):
    """worker_python reaches the client (start) and the panel's load in advance, which the panel
    runs on every draw (background=False: as the UI would); text_model reaches the latter too."""
    model = addon.text_model
    addon.worker_python = str(tmp_path / ("y" * 300))
    try:
        assert preload.maybe_start(bpy.context, background=False) is False
        _refused(
            lambda: bpy.ops.shape_e.text_to_mesh(prompt="a cup", steps=2, grid_size=32),
            "interpreter does not exist",
        )
        addon.worker_python = WORKER_PYTHON
        addon.text_model = "y" * 300
        assert preload.maybe_start(bpy.context, background=False) is False
    finally:
        addon.worker_python, addon.text_model = WORKER_PYTHON, model
    assert Path(WORKER_PYTHON).is_file() and not tasks.busy()
