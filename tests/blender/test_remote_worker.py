"""The worker_command preference against real bpy: a worker reached only through a command's
stdio (a wrapper with its own HOME, jobs root, working folder and package copy) makes the
meshes, and they are imported from the add-on's own job folder."""

from __future__ import annotations

import shlex
from pathlib import Path

import bpy
import pytest

from shape_e_blender.blender import history, tasks
from shape_e_blender.core import jobdir
from tests.blender.images import disc_png
from tests.support import FAST, remote_command

# The remote transport is the client's: no Blender version changes it.
pytestmark = pytest.mark.main_blender


@pytest.fixture
def remote(addon, tmp_path, worker_text_model):
    command, model = remote_command(tmp_path / "gpu-box", worker_text_model)
    addon.worker_command = shlex.join(command)
    yield model, tmp_path / "gpu-box"
    addon.worker_command = ""
    tasks.release(wait=True)
    tasks.tick()


def test_a_remote_workers_mesh_is_imported_from_the_local_job_folder(scene, remote, addon):
    model, machine = remote
    result = bpy.ops.shape_e.text_to_mesh(prompt="a red chair", model=str(model), **FAST)
    assert result == {"FINISHED"}
    obj = bpy.data.objects["Red chair"]
    assert len(obj.data.polygons) > 0
    folder = Path(obj["shape_e"]["job_dir"])
    assert folder.parent == Path(addon.jobs_dir)  # this machine's jobs folder
    latent = obj["shape_e"]["latent"]
    assert Path(latent).is_file() and latent.startswith(str(folder))
    assert jobdir.read_job(folder).state == jobdir.DONE
    history.forget()
    _root, recent = history.recent(bpy.context)
    assert any(job.path == folder and job.importable for job in recent)  # Recent Jobs lists it
    assert any(p.is_dir() for p in (machine / "jobs").iterdir())  # the remote kept its own


def test_a_spec_builds_through_the_remote_worker(scene, remote, tmp_path):
    model, _machine = remote
    spec = tmp_path / "remote.toml"
    spec.write_text(
        f'[defaults]\nsteps = 2\ngrid_size = 32\ntext_model = "{model}"\n\n'
        '[[object]]\nname = "Cup"\nprompt = "a cup"\nlocation = [1, 0, 0]\n\n'
        '[[object]]\nname = "Jug"\nprompt = "a jug"\n',
        encoding="utf-8",
    )
    assert bpy.ops.shape_e.build_scene(filepath=str(spec), blocking=True) == {"FINISHED"}
    assert sorted(o.name for o in bpy.data.objects) == ["Cup", "Jug"]
    assert tuple(bpy.data.objects["Cup"].location) == pytest.approx((1, 0, 0))


def test_an_image_job_runs_on_the_remote_worker_with_the_image_sent_inline(
    scene, addon, tmp_path, worker_image_model
):
    command, model = remote_command(tmp_path / "gpu-box", worker_image_model)
    addon.worker_command = shlex.join(command)
    try:
        image = disc_png(tmp_path / "here" / "orange_ball.png")
        result = bpy.ops.shape_e.image_to_mesh(filepath=str(image), model=str(model), **FAST)
    finally:
        addon.worker_command = ""
        tasks.release(wait=True)
        tasks.tick()
    assert result == {"FINISHED"}
    obj = bpy.data.objects["Orange ball"]
    assert obj["shape_e"]["image"] == str(image) and len(obj.data.polygons) > 0
    assert Path(obj["shape_e"]["job_dir"]).parent == Path(addon.jobs_dir)
