"""Scene specs built into Blender (shape_e.build_scene): real bpy, the real worker subprocess,
the tiny random models. The spec's own validation is tested in tests/core/test_spec.py."""

from __future__ import annotations

import math
from pathlib import Path

import bpy
import pytest

from shape_e_blender.blender import scenes, tasks
from shape_e_blender.blender.status import Status
from tests.blender.addon import drain
from tests.blender.images import disc_png
from tests.support import WORKER_PYTHON, run_child

SPEC = """
[defaults]
steps = 2
grid_size = 32

[[object]]
name = "Chair"
prompt = "a red chair"
location = [2, 1, 0]
rotation = [0, 0, 90]
size = 0.5
collection = "Props/Chairs"

[[object]]
name = "Statue"
image = "refs/statue.png"
location = [-2, 0, 0]

[[object]]
name = "Vase"
prompt = "a blue vase"
seed = 4
variants = 2
scale = 1.5
"""


@pytest.fixture
def spec(tmp_path, addon, worker_text_model, worker_image_model) -> Path:
    addon.text_model = str(worker_text_model)
    addon.image_model = str(worker_image_model)
    disc_png(tmp_path / "refs" / "statue.png")
    path = tmp_path / "props.toml"
    path.write_text(SPEC, encoding="utf-8")
    return path


def _folders(addon) -> set[str]:
    return {p.name for p in Path(addon.jobs_dir).iterdir() if p.is_dir()}


def _meshes() -> dict[str, int]:
    """Each object's mesh datablock, by object name: a replaced mesh is another datablock."""
    return {o.name: o.data.as_pointer() for o in bpy.data.objects if o.type == "MESH"}


def _stop_worker() -> None:
    tasks.release(wait=True)
    tasks.tick()
    client = tasks.current_client()
    assert client is None or not client.is_running()


def _worker_started() -> bool:
    client = tasks.current_client()
    return client is not None and client.is_running()


def _build(path: Path) -> set[str]:
    return bpy.ops.shape_e.build_scene(filepath=str(path), blocking=True)


def test_a_spec_builds_into_the_file_and_reads_back_from_it(scene, spec, addon, tmp_path):
    assert _build(spec) == {"FINISHED"}
    assert {n: b["how"] for n, b in scenes.last_build.items()} == dict.fromkeys(
        ("Chair", "Statue", "Vase"), "generate"
    )
    names = {"Chair", "Statue", "Vase_0", "Vase_1"}
    assert set(tasks.status.objects) == names
    assert "Built props.toml (3 generated, 0 reused, 0 unchanged)" in tasks.status.message

    def check() -> None:
        chair = bpy.data.objects["Chair"]
        props = bpy.data.collections["Props"]
        assert [c.name for c in chair.users_collection] == ["Chairs"]
        assert bpy.data.collections["Chairs"].name in props.children
        assert props.name in bpy.context.scene.collection.children
        assert tuple(chair.location) == pytest.approx((2, 1, 0))
        assert tuple(chair.rotation_euler) == pytest.approx((0, 0, math.radians(90)))
        assert max(chair.dimensions) == pytest.approx(0.5, rel=1e-4)  # size: the largest side
        settings = chair["shape_e"].to_dict()
        assert settings["prompt"] == "a red chair" and settings["steps"] == 2
        assert settings["spec"] == str(spec) and settings["spec_object"] == "Chair"
        assert len(settings["spec_key"]) == 32 and Path(settings["job_dir"]).is_dir()
        statue = bpy.data.objects["Statue"]
        assert statue["shape_e"]["image"] == str(tmp_path / "refs" / "statue.png")
        assert statue["shape_e"]["guidance_scale"] == 3.0
        assert tuple(statue.location) == pytest.approx((-2, 0, 0))
        assert statue.users_collection[0] == bpy.context.scene.collection
        a, b = bpy.data.objects["Vase_0"], bpy.data.objects["Vase_1"]
        assert tuple(a.scale) == pytest.approx((1.5,) * 3) and a.location.x == pytest.approx(0)
        assert b.location.x > a.location.x + a.dimensions.x / 2  # the variants side by side
        assert (a["shape_e"]["seed"], b["shape_e"]["seed"]) == (4, 5)
        assert a["shape_e"]["spec_key"] == b["shape_e"]["spec_key"] != settings["spec_key"]

    check()
    saved = tmp_path / "props.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(saved))
    bpy.ops.wm.read_homefile(use_empty=True)
    assert "Chair" not in bpy.data.objects
    bpy.ops.wm.open_mainfile(filepath=str(saved))
    check()


def test_a_second_build_starts_no_worker_and_changes_nothing(scene, spec, addon):
    assert _build(spec) == {"FINISHED"}
    _stop_worker()
    folders, meshes = _folders(addon), _meshes()
    where = {o.name: tuple(o.matrix_world.col[3]) for o in bpy.data.objects}
    assert _build(spec) == {"FINISHED"}
    assert not _worker_started()
    assert set(scenes.last_build[n]["how"] for n in scenes.last_build) == {"unchanged"}
    assert _folders(addon) == folders and _meshes() == meshes
    assert {o.name: tuple(o.matrix_world.col[3]) for o in bpy.data.objects} == where
    # Into a new file: the finished job folders are the cache, still no worker.
    bpy.ops.wm.read_homefile(use_empty=True)
    assert _build(spec) == {"FINISHED"}
    assert not _worker_started() and _folders(addon) == folders
    assert set(scenes.last_build[n]["how"] for n in scenes.last_build) == {"reused"}
    assert set(_meshes()) == set(meshes)


def test_editing_one_prompt_regenerates_that_object_alone_in_place(scene, spec, addon):
    assert _build(spec) == {"FINISHED"}
    folders, meshes = _folders(addon), _meshes()
    vase = bpy.data.objects["Vase_0"]
    vase_object = vase.as_pointer()
    spec.write_text(SPEC.replace("a blue vase", "a green vase"), encoding="utf-8")
    assert _build(spec) == {"FINISHED"}
    assert {n: b["how"] for n, b in scenes.last_build.items()} == {
        "Chair": "unchanged", "Statue": "unchanged", "Vase": "generate",
    }  # fmt: skip
    new = _folders(addon) - folders
    assert len(new) == 1 and "vase" in new.pop()
    after = _meshes()
    assert after["Chair"] == meshes["Chair"] and after["Statue"] == meshes["Statue"]
    assert after["Vase_0"] != meshes["Vase_0"] and after["Vase_1"] != meshes["Vase_1"]
    vase = bpy.data.objects["Vase_0"]
    assert vase.as_pointer() == vase_object and vase["shape_e"]["prompt"] == "a green vase"
    assert vase.users_collection[0] == bpy.context.scene.collection
    assert sorted(o.name for o in bpy.data.objects) == ["Chair", "Statue", "Vase_0", "Vase_1"]

    # Moving, resizing and re-filing an object regenerates nothing.
    moved = SPEC.replace("a blue vase", "a green vase").replace("[2, 1, 0]", "[5, 5, 1]")
    moved = moved.replace("size = 0.5", "size = 2.0").replace("Props/Chairs", "Seats")
    spec.write_text(moved, encoding="utf-8")
    folders, meshes = _folders(addon), _meshes()
    assert _build(spec) == {"FINISHED"}
    chair = bpy.data.objects["Chair"]
    assert _folders(addon) == folders and _meshes() == meshes
    assert tuple(chair.location) == pytest.approx((5, 5, 1))
    assert max(chair.dimensions) == pytest.approx(2.0, rel=1e-4)
    assert [c.name for c in chair.users_collection] == ["Seats"]


def test_a_bad_spec_is_refused_before_anything_is_generated(scene, spec, addon):
    spec.write_text(
        SPEC.replace('name = "Statue"', 'name = "Statue"\nsead = 3').replace(
            "seed = 4", "seed = -4"
        ),
        encoding="utf-8",
    )
    folders = _folders(addon)
    with pytest.raises(RuntimeError) as info:
        _build(spec)
    text = str(info.value)
    assert "object 2 ('Statue'), sead: is not an object key" in text
    assert "object 3 ('Vase'), seed: -4 is outside" in text
    assert _folders(addon) == folders and not any(o.type == "MESH" for o in bpy.data.objects)
    assert tasks.status.state == "error" and tasks.status.error_field == "filepath"


def test_a_failing_object_does_not_stop_the_others(scene, spec, addon, tmp_path):
    (tmp_path / "refs" / "statue.png").write_bytes(b"this is not a picture")
    with pytest.raises(RuntimeError) as info:
        _build(spec)
    assert "1 of 3 objects of props.toml failed" in str(info.value)
    assert "object 2 ('Statue'): image" in str(info.value)
    assert sorted(o.name for o in bpy.data.objects) == ["Chair", "Vase_0", "Vase_1"]
    assert scenes.last_build["Statue"]["error"] and not scenes.last_build["Chair"]["error"]
    # Fixed (with a picture no earlier test used), the next build makes the missing object only.
    disc_png(tmp_path / "refs" / "statue.png", radius=9)
    assert _build(spec) == {"FINISHED"}
    assert {n: b["how"] for n, b in scenes.last_build.items()} == {
        "Chair": "unchanged", "Statue": "generate", "Vase": "unchanged",
    }  # fmt: skip


def test_an_object_the_spec_no_longer_lists_is_left_with_a_warning(scene, spec, addon):
    assert _build(spec) == {"FINISHED"}
    spec.write_text(SPEC.split('[[object]]\nname = "Vase"')[0], encoding="utf-8")
    assert _build(spec) == {"FINISHED"}
    assert "Vase_0" in bpy.data.objects and "Vase_1" in bpy.data.objects
    assert any("Vase_0" in w and "no longer lists" in w for w in tasks.status.warnings)


def test_the_ui_build_shows_object_i_of_n_and_cancels(scene, spec, addon):
    """Not blocking, as from the panel: the timer polls, the status names the object."""
    _stop_worker()
    # A seed no other test used: Chair and Statue are generated (Vase has its own seed: reused).
    spec.write_text(SPEC.replace("[defaults]\n", "[defaults]\nseed = 77\n"), encoding="utf-8")
    assert bpy.ops.shape_e.build_scene(filepath=str(spec), blocking=False) == {"FINISHED"}
    assert tasks.busy() and tasks.status.kind == "scene"
    seen = set()
    while tasks.busy() and tasks.status.part < 2:
        tasks.tick(timeout=0.1)
        if tasks.status.parts:
            seen.add(tasks.status.progress_text().split(":")[0])
    assert "1/2 Chair" in seen
    assert tasks.cancel()
    done = drain()
    assert done is not None and done.cancelled
    assert not any(o.type == "MESH" for o in bpy.data.objects)  # a cancelled build imports nothing
    assert "building the spec again" in done.error.hint


@pytest.mark.main_blender
def test_a_spec_generated_by_two_workers_outside_blender_builds_without_generating(
    scene, spec, addon, tmp_path, worker_text_model
):
    jobs = tmp_path / "farm"
    spec.write_text(
        SPEC.replace("[defaults]\n", f'[defaults]\ntext_model = "{worker_text_model}"\n'),
        encoding="utf-8",
    )
    proc = run_child(
        WORKER_PYTHON, "-m", "shape_e_blender", "scene", str(spec), "--jobs-dir", str(jobs),
        "--workers", "2", "--device", "cpu", "--image-model", addon.image_model,
        "--no-download",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "3 generated, 0 reused, 0 failed" in proc.stdout
    _stop_worker()
    before, addon.jobs_dir = addon.jobs_dir, str(jobs)
    try:
        assert _build(spec) == {"FINISHED"}
    finally:
        addon.jobs_dir = before
    assert not _worker_started()
    assert {n: b["how"] for n, b in scenes.last_build.items()} == dict.fromkeys(
        ("Chair", "Statue", "Vase"), "reused"
    )
    assert all(str(jobs) in b["job_dir"] for b in scenes.last_build.values())
    assert sorted(o.name for o in bpy.data.objects) == ["Chair", "Statue", "Vase_0", "Vase_1"]


def test_the_progress_text_counts_the_objects_and_the_time_left_in_all():
    st = Status(state="running", kind="scene", stage="sampling", step=8, total=16)
    st.part, st.parts, st.part_label, st.overall_eta_s = 2, 4, "Lamp", 95.0
    assert st.progress_text() == "2/4 Lamp: Sampling 8/16, 1 min left in all"
    assert st.fraction == pytest.approx((1 + 0.5) / 4)
