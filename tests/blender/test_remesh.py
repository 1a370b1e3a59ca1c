"""shape_e.remesh end to end: real bpy, the real worker subprocess, tiny random Shap-E models.

A shape generated at grid 32 is extracted again from its saved latent at another grid, in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import bpy
import numpy as np
import pytest

from shape_e_blender.blender import finish, prefs, tasks
from shape_e_blender.core import jobdir
from shape_e_blender.core.mesh import MeshData
from shape_e_blender.core.params import GenerationParams
from shape_e_blender.core.protocol import GenerateRequest
from tests.blender.addon import drain, poll_until_stage
from tests.support import FAST


def _generate(prompt: str = "a red chair", **kwargs) -> bpy.types.Object:
    """A real generation at grid 32; returns the new active object."""
    assert bpy.ops.shape_e.text_to_mesh(prompt=prompt, seed=7, **(FAST | kwargs)) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def _snapshot(obj: bpy.types.Object) -> dict:
    """What a failed re-mesh must leave exactly as it was."""
    return {
        "name": obj.name,
        "mesh": obj.data.name,
        "vertices": len(obj.data.vertices),
        "polygons": len(obj.data.polygons),
        "location": tuple(obj.location),
        "settings": obj["shape_e"].to_dict(),
        "meshes": sorted(bpy.data.meshes.keys()),
    }


def _job_folders(addon) -> set[str]:
    return {p.name for p in Path(addon.jobs_dir).iterdir() if p.is_dir()}


def _positions(mesh: bpy.types.Mesh) -> np.ndarray:
    out = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def test_remesh_refines_in_place_and_one_undo_step_brings_the_old_mesh_back(scene, text_model):
    obj = _generate()
    uid, old_mesh, material = obj.session_uid, obj.data.name, obj.data.materials[0]
    settings = obj["shape_e"].to_dict()
    old_latent = Path(settings["job_dir"]) / "0" / "latent.npy"
    assert settings["latent"] == str(old_latent) and settings["grid_size"] == 32
    # What an artist may have done to the object meanwhile: all of it must stay.
    parent = bpy.data.objects.new("Holder", None)
    scene.collection.objects.link(parent)
    obj.parent = parent
    obj.location = (1.0, 2.0, 0.5)
    obj.rotation_euler = (0.0, 0.0, 0.3)
    extra = bpy.data.collections.new("Props")
    scene.collection.children.link(extra)
    extra.objects.link(obj)
    obj.modifiers.new("Offset", "DISPLACE").strength = 0.0
    obj.select_set(True)
    before = len(obj.data.polygons)

    assert bpy.ops.shape_e.remesh(grid_size=64) == {"FINISHED"}

    obj = bpy.data.objects["Red chair"]
    assert obj.session_uid == uid  # the same object, not a new one
    mesh = obj.data
    assert 3.0 < len(mesh.polygons) / before < 5.5  # twice the grid: about 4x the faces
    assert mesh.name == old_mesh and len(bpy.data.meshes) == 1  # the old mesh is gone
    assert list(mesh.materials) == [material]
    assert obj.parent == parent and tuple(obj.location) == (1.0, 2.0, 0.5)
    assert obj.rotation_euler.z == pytest.approx(0.3)
    assert {c.name for c in obj.users_collection} == {scene.collection.name, "Props"}
    assert [m.name for m in obj.modifiers] == ["Offset"]
    new = obj["shape_e"].to_dict()
    assert new["grid_size"] == 64 and new["latent"] == str(old_latent)
    assert new["prompt"] == "a red chair" and new["seed"] == 7
    job_dir = Path(new["job_dir"])
    assert job_dir != Path(settings["job_dir"]) and (job_dir / "0" / "mesh.npz").is_file()
    request = json.loads((job_dir / "request.json").read_text())
    assert request["request"]["latent"] == str(old_latent)  # decoded again, not sampled
    assert "steps" not in request["resolved"]

    on_disk = MeshData.load(job_dir / "0" / "mesh.npz")
    assert len(mesh.vertices) == on_disk.vertex_count
    attr = mesh.color_attributes["Color"]
    assert (attr.data_type, attr.domain) == ("FLOAT_COLOR", "POINT")
    rgba = np.empty(len(mesh.vertices) * 4, np.float32)
    attr.data.foreach_get("color", rgba)
    np.testing.assert_allclose(rgba.reshape(-1, 4)[:, :3], on_disk.colors, atol=1e-6)
    assert rgba.reshape(-1, 4)[:, :3].std() > 0  # real colours, not one constant
    smooth = np.empty(len(mesh.polygons), bool)
    mesh.polygons.foreach_get("use_smooth", smooth)
    assert smooth.all()
    # Standing on its origin like an import: bottom centre at the object's origin.
    pos = _positions(mesh)
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    np.testing.assert_allclose([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]], 0, atol=1e-5)
    assert tasks.status.state == "done" and tasks.status.message == "Re-meshed Red chair"

    bpy.ops.ed.undo()
    obj = bpy.data.objects["Red chair"]
    assert len(obj.data.polygons) == before and obj["shape_e"]["grid_size"] == 32
    assert obj["shape_e"]["job_dir"] == settings["job_dir"]
    bpy.ops.ed.undo()  # one step further is the generation itself: re-meshing was one step
    assert "Red chair" not in bpy.data.objects
    bpy.ops.ed.redo()
    bpy.ops.ed.redo()
    assert len(bpy.data.objects["Red chair"].data.polygons) == len(on_disk.faces)


def test_remesh_of_an_object_shap_e_did_not_make_fails_cleanly(scene, addon, text_model):
    cube_mesh = bpy.data.meshes.new("Cube")
    cube_mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    cube = bpy.data.objects.new("Cube", cube_mesh)
    cube["shape_e"] = "not a settings group"  # someone else's property under our key
    scene.collection.objects.link(cube)
    bpy.context.view_layer.objects.active = cube
    folders = _job_folders(addon)
    with pytest.raises(RuntimeError, match="'Cube' was not made by Shap-E"):
        bpy.ops.shape_e.remesh(grid_size=64)
    assert tasks.status.error_field == "object_name"

    # Named explicitly while a Shap-E object is active: execute refuses it with a hint.
    chair = _generate()
    folders = _job_folders(addon)
    with pytest.raises(RuntimeError, match="'Cube' was not made by Shap-E"):
        bpy.ops.shape_e.remesh(object_name="Cube", grid_size=64)
    assert tasks.status.state == "error" and tasks.status.error_field == "object_name"
    assert "Generate" in tasks.status.hint
    with pytest.raises(RuntimeError, match="no object 'Nothing'"):
        bpy.ops.shape_e.remesh(object_name="Nothing")
    with pytest.raises(RuntimeError, match="grid_size"):
        bpy.ops.shape_e.remesh(grid_size=16)
    assert tasks.status.error_field == "grid_size"
    assert not tasks.busy() and _job_folders(addon) == folders
    assert len(cube.data.polygons) == 1 and cube.data.name == "Cube"
    assert chair["shape_e"]["grid_size"] == 32


def test_remesh_with_the_job_folder_deleted_names_the_missing_latent(scene, addon, text_model):
    obj = _generate()
    before = _snapshot(obj)
    latent = obj["shape_e"]["latent"]
    shutil.rmtree(obj["shape_e"]["job_dir"])
    folders = _job_folders(addon)
    with pytest.raises(RuntimeError) as info:
        bpy.ops.shape_e.remesh(grid_size=64)
    assert latent in str(info.value) and "missing" in str(info.value)
    assert tasks.status.state == "error" and latent in tasks.status.error
    assert "generate the object again (seed 7)" in tasks.status.hint
    assert _snapshot(bpy.data.objects["Red chair"]) == before
    assert not tasks.busy() and _job_folders(addon) == folders


def test_a_worker_error_leaves_the_object_as_it_was(scene, text_model):
    obj = _generate()
    Path(obj["shape_e"]["latent"]).write_bytes(b"not a numpy file")
    before = _snapshot(obj)
    with pytest.raises(RuntimeError, match="cannot read"):
        bpy.ops.shape_e.remesh(grid_size=64)
    # The worker's own error, with its field and hint.
    assert tasks.status.state == "error" and tasks.status.error_field == "latent"
    assert tasks.status.hint
    assert _snapshot(bpy.data.objects["Red chair"]) == before


def test_an_object_without_a_stored_latent_uses_its_job_folder_and_variant(scene, text_model):
    _generate("a cup", variants=2)
    cup0, cup1 = bpy.data.objects["Cup_0"], bpy.data.objects["Cup_1"]
    before0 = _snapshot(cup0)
    job_dir = Path(cup1["shape_e"]["job_dir"])
    del cup1["shape_e"]["latent"]  # as objects imported before the path was stored
    bpy.context.view_layer.objects.active = cup1
    assert bpy.ops.shape_e.remesh(grid_size=48) == {"FINISHED"}
    new = cup1["shape_e"]
    request = json.loads((Path(new["job_dir"]) / "request.json").read_text())
    assert request["request"]["latent"] == str(job_dir / "1" / "latent.npy")
    assert new["latent"] == str(job_dir / "1" / "latent.npy") and new["grid_size"] == 48
    assert new["variant"] == 1 and new["seed"] == 8
    assert _snapshot(cup0) == before0


def test_a_script_names_the_object_with_nothing_active(scene, text_model):
    # A headless pipeline: no active object, the object chosen by name.
    _generate("a cup", variants=2)
    cup1 = bpy.data.objects["Cup_1"]
    before = len(cup1.data.polygons)
    bpy.context.view_layer.objects.active = None
    assert bpy.ops.shape_e.remesh(object_name="Cup_1", grid_size=48) == {"FINISHED"}
    cup1 = bpy.data.objects["Cup_1"]
    assert cup1["shape_e"]["grid_size"] == 48 and len(cup1.data.polygons) > before
    assert bpy.data.objects["Cup_0"]["shape_e"]["grid_size"] == 32
    # With nothing active and no name, the error names the field.
    with pytest.raises(RuntimeError, match="no active object"):
        bpy.ops.shape_e.remesh(grid_size=48)
    assert tasks.status.error_field == "object_name"


def test_non_blocking_remesh_is_finished_by_the_timer_like_the_ui(scene, text_model):
    obj = _generate()
    before = len(obj.data.polygons)
    assert bpy.ops.shape_e.remesh(grid_size=64, blocking=False) == {"FINISHED"}
    assert tasks.busy() and bpy.app.timers.is_registered(tasks.timer)
    assert obj["shape_e"]["grid_size"] == 32  # nothing changes before the worker answers
    # Module mode never fires timers: call the registered function as Blender would.
    while (interval := tasks.timer()) is not None:
        assert interval > 0
        tasks.tick(timeout=0.25)  # wait for the worker instead of spinning
    assert tasks.status.state == "done" and tasks.status.objects == ["Red chair"]
    obj = bpy.data.objects["Red chair"]
    assert obj["shape_e"]["grid_size"] == 64 and len(obj.data.polygons) > 3 * before
    bpy.ops.ed.undo()  # the timer path pushed its step too
    assert len(bpy.data.objects["Red chair"].data.polygons) == before


def test_cancel_mid_remesh_leaves_the_object_and_the_next_remesh_runs(scene, text_model):
    obj = _generate()
    before = _snapshot(obj)
    # Grid 256 decodes for seconds on the tiny model: long enough to cancel mid-way.
    assert bpy.ops.shape_e.remesh(grid_size=256, blocking=False) == {"FINISHED"}
    poll_until_stage("decoding")
    assert bpy.ops.shape_e.cancel() == {"FINISHED"}
    done = drain()
    assert done.cancelled and tasks.status.state == "cancelled"
    assert _snapshot(bpy.data.objects["Red chair"]) == before
    assert bpy.ops.shape_e.remesh(grid_size=40) == {"FINISHED"}
    assert bpy.data.objects["Red chair"]["shape_e"]["grid_size"] == 40


def test_remesh_after_the_object_was_deleted_mid_job_is_an_error(scene, text_model):
    obj = _generate()
    assert bpy.ops.shape_e.remesh(grid_size=48, blocking=False) == {"FINISHED"}
    mesh = obj.data
    bpy.data.objects.remove(obj)
    done = drain()
    assert done.error is not None and "was deleted while it was being re-meshed" in str(done.error)
    assert tasks.status.state == "error" and mesh.users == 0
    assert len(bpy.data.meshes) == 1  # no new mesh was left behind


def test_an_object_from_a_file_of_several_latents_is_remeshed_from_its_own(
    scene, addon, text_model, tmp_path
):
    latent = np.load(_generate("a bowl")["shape_e"]["latent"])
    path = tmp_path / "latents.npy"
    np.save(path, np.stack([latent[::-1].copy(), latent]))  # variant 1 is the bowl's latent
    # A script's latent job, imported the way the operators import results.
    params = GenerationParams.create(latent=str(path), model=str(text_model), grid_size=32)
    job_dir = jobdir.new_job_dir(Path(addon.jobs_dir), "bowls")
    request = prefs.client().generate(GenerateRequest(params, job_dir=str(job_dir)))
    tasks.begin(tasks.Task("generate", [request], "Bowls", finish=finish.generation))
    assert drain().error is None
    obj = bpy.data.objects["Bowls_1"]
    assert obj["shape_e"]["latent"] == str(path) and obj["shape_e"]["variant"] == 1
    assert bpy.ops.shape_e.remesh(object_name="Bowls_1", grid_size=32) == {"FINISHED"}
    # Same latent, same grid: the mesh of variant 1, not of variant 0.
    assert len(obj.data.vertices) == len(bpy.data.objects["Bowl"].data.vertices)
    assert len(obj.data.vertices) != len(bpy.data.objects["Bowls_0"].data.vertices)
