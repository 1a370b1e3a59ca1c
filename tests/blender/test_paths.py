"""blender/paths.py in this process (the installed-extension case is in test_extension.py).

Nothing here creates folders in the real Blender user config: the fallback is checked with
create=False, and every folder that is created lies under tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import pytest

from shape_e_blender.blender.paths import jobs_dir, root_package, user_dir
from shape_e_blender.core.errors import ShapEError


@pytest.mark.parametrize(
    ("package", "root"),
    [
        ("bl_ext.user_default.shape_e_blender", "bl_ext.user_default.shape_e_blender"),
        ("bl_ext.user_default.shape_e_blender.blender", "bl_ext.user_default.shape_e_blender"),
        ("bl_ext.my_repo.shape_e_blender.blender.ui", "bl_ext.my_repo.shape_e_blender"),
        ("shape_e_blender.blender", "shape_e_blender"),
    ],
)
def test_root_package(package, root):
    assert root_package(package) == root


def test_extension_folder_is_blenders_own(context):
    expected = bpy.utils.extension_path_user("bl_ext.some_repo.shape_e_blender", path="jobs")
    got = user_dir("bl_ext.some_repo.shape_e_blender.blender", "jobs", create=False)
    assert got == Path(expected)
    assert got.parts[-4:] == (".user", "some_repo", "shape_e_blender", "jobs")


def test_source_checkout_falls_back_to_user_datafiles(context):
    got = user_dir("shape_e_blender.blender", "jobs", create=False)
    datafiles = Path(bpy.utils.user_resource("DATAFILES"))
    assert got == datafiles / "shape_e_blender" / "jobs"


def test_jobs_override_is_created_and_used(context, tmp_path):
    target = tmp_path / "my jobs" / "deep"
    assert jobs_dir("bl_ext.user_default.shape_e_blender", f"  {target}  ") == target
    assert target.is_dir()


def test_jobs_override_expands_home(context, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert jobs_dir("shape_e_blender", "~/shape_e_jobs") == tmp_path / "shape_e_jobs"
    assert (tmp_path / "shape_e_jobs").is_dir()


def test_jobs_override_relative_to_the_blend_file(context, tmp_path):
    with pytest.raises(ShapEError, match="not saved"):
        jobs_dir("shape_e_blender", "//jobs")
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    assert jobs_dir("shape_e_blender", "//jobs") == tmp_path / "jobs"
    assert (tmp_path / "jobs").is_dir()


def test_unwritable_jobs_override_is_a_clear_error(context, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ShapEError, match="could not be created") as err:
        jobs_dir("shape_e_blender", str(blocker / "jobs"))
    assert "preferences" in err.value.hint
