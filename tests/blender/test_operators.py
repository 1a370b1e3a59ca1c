"""The operators end to end: real bpy, the real worker subprocess, tiny random Shap-E models."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import bpy
import numpy as np
import pytest

from shape_e_blender.blender import finish, history, prefs, tasks
from shape_e_blender.core import jobdir
from shape_e_blender.core.errors import NO_SURFACE, WORKER_EXITED, ShapEError
from shape_e_blender.core.mesh import MeshData
from shape_e_blender.core.params import SEED_MAX, GenerationParams
from shape_e_blender.core.protocol import GenerateRequest
from tests.blender.addon import drain, poll_until_stage
from tests.support import FAST, WORKER_PYTHON, frozen, kill_process, process_gone, run_child


def _pid() -> int | None:
    client = tasks.current_client()
    return client.pid if client is not None else None


def _job_folders(addon) -> set[str]:
    return {p.name for p in Path(addon.jobs_dir).iterdir() if p.is_dir()}


def test_text_to_mesh_imports_a_coloured_object_with_its_settings_and_one_undo_step(
    scene, text_model
):
    before = set(bpy.data.objects.keys())
    # Background mode: blocking by default, so the object is there when the call returns.
    assert bpy.ops.shape_e.text_to_mesh(prompt="a red chair", seed=7, **FAST) == {"FINISHED"}
    assert set(bpy.data.objects.keys()) - before == {"Red chair"}
    obj = bpy.data.objects["Red chair"]
    assert bpy.context.view_layer.objects.active == obj and obj.select_get()
    mesh = obj.data
    attr = mesh.color_attributes["Color"]
    assert (attr.data_type, attr.domain) == ("FLOAT_COLOR", "POINT")
    bsdf = mesh.materials[0].node_tree.nodes["Principled BSDF"]
    assert bsdf.inputs["Base Color"].links[0].from_node.bl_idname == "ShaderNodeVertexColor"
    settings = obj["shape_e"]
    assert settings["prompt"] == "a red chair" and settings["seed"] == 7
    assert (settings["steps"], settings["grid_size"]) == (FAST["steps"], FAST["grid_size"])
    assert settings["guidance_scale"] == 15.0 and settings["model"] == str(text_model)
    assert settings["device"] == "cpu" and "torch" in settings["versions"]
    job_dir = Path(settings["job_dir"])
    assert job_dir.parent == tasks.current_client().jobs_root
    assert settings["latent"] == str(job_dir / "0" / "latent.npy")  # what shape_e.remesh decodes
    on_disk = MeshData.load(job_dir / "0" / "mesh.npz")
    assert len(mesh.vertices) == on_disk.vertex_count and len(mesh.polygons) > 0
    assert tasks.status.state == "done" and tasks.status.objects == ["Red chair"]

    bpy.ops.ed.undo()
    assert "Red chair" not in bpy.data.objects
    bpy.ops.ed.redo()
    assert "Red chair" in bpy.data.objects


def test_image_to_mesh_with_variants_wraps_the_seed(scene, addon, worker_image_model, tmp_path):
    addon.image_model = str(worker_image_model)
    image = bpy.data.images.new("input", 64, 64, alpha=True)
    # An orange disc on transparency, written by Blender itself.
    pixels = []
    for y in range(64):
        for x in range(64):
            inside = (x - 32) ** 2 + (y - 32) ** 2 < 20**2
            pixels += [1.0, 0.5, 0.1, 1.0] if inside else [0.0, 0.0, 0.0, 0.0]
    image.pixels = pixels
    path = tmp_path / "orange_ball.png"
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    result = bpy.ops.shape_e.image_to_mesh(
        filepath=str(path), seed=SEED_MAX, variants=2, steps=2, grid_size=32
    )
    assert result == {"FINISHED"}
    objs = [bpy.data.objects["Orange ball_0"], bpy.data.objects["Orange ball_1"]]
    assert [o["shape_e"]["seed"] for o in objs] == [SEED_MAX, 0]  # seed + i wraps at 2^31
    assert objs[0]["shape_e"]["image"] == str(path)
    assert objs[0]["shape_e"]["guidance_scale"] == 3.0
    assert objs[0]["shape_e"]["model"] == str(worker_image_model)
    assert objs[1].location.x > objs[0].location.x  # side by side
    assert all(len(o.data.polygons) > 0 for o in objs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": "a cup", "steps": 0}, "steps"),
        ({"prompt": "a cup", "seed": -1}, "seed"),
        ({"prompt": "a cup", "grid_size": 16}, "grid_size"),
        ({"prompt": "   "}, "prompt"),
    ],
)
def test_invalid_parameters_are_reported_before_any_job(scene, addon, kwargs, field):
    folders = _job_folders(addon)
    # In background mode an operator's error report raises: a script sees it at once.
    with pytest.raises(RuntimeError) as info:
        bpy.ops.shape_e.text_to_mesh(**kwargs)
    assert field in str(info.value)
    assert tasks.status.state == "error" and tasks.status.error_field == field
    assert tasks.status.hint
    assert not tasks.busy() and _job_folders(addon) == folders


def test_missing_image_and_missing_camera_name_their_field(scene, tmp_path):
    with pytest.raises(RuntimeError, match="filepath"):
        bpy.ops.shape_e.image_to_mesh(filepath=str(tmp_path / "none.png"))
    assert tasks.status.error_field == "filepath"
    with pytest.raises(RuntimeError, match="no active camera"):
        bpy.ops.shape_e.camera_to_mesh()
    assert tasks.status.error_field == "camera"


def test_cancel_mid_job_from_the_ui_path_then_the_next_job_runs(scene, text_model):
    before = set(bpy.data.objects.keys())
    result = bpy.ops.shape_e.text_to_mesh(
        prompt="a tall lamp", steps=400, grid_size=32, blocking=False
    )
    assert result == {"FINISHED"} and tasks.busy()
    assert bpy.app.timers.is_registered(tasks.timer)  # the UI would poll through it
    poll_until_stage("sampling")
    assert 0 < tasks.status.fraction < 1
    with pytest.raises(RuntimeError, match="already running"):
        bpy.ops.shape_e.text_to_mesh(prompt="another", **FAST)
    pid = _pid()
    assert bpy.ops.shape_e.cancel() == {"FINISHED"}
    done = drain()
    assert done.cancelled and tasks.status.state == "cancelled"
    assert set(bpy.data.objects.keys()) == before
    assert bpy.ops.shape_e.text_to_mesh(prompt="a tall lamp", **FAST) == {"FINISHED"}
    assert "Tall lamp" in bpy.data.objects and _pid() == pid  # the same warm worker


@pytest.mark.main_blender
def test_killed_worker_mid_job_reports_with_a_hint_and_the_next_call_restarts(
    scene,
    text_model,
):
    bpy.ops.shape_e.text_to_mesh(prompt="a vase", steps=400, grid_size=32, blocking=False)
    poll_until_stage("sampling")
    first = _pid()
    kill_process(first)
    done = drain()
    assert done.error is not None and done.error.code == WORKER_EXITED
    assert tasks.status.state == "error" and "exited" in tasks.status.error
    assert "Generate" in tasks.status.hint
    assert "Vase" not in bpy.data.objects
    assert bpy.ops.shape_e.text_to_mesh(prompt="a vase", **FAST) == {"FINISHED"}
    assert "Vase" in bpy.data.objects and _pid() not in (None, first)


@pytest.fixture
def silence(addon):
    """Sets the silence_timeout preference for one test."""
    default = addon.silence_timeout
    yield lambda seconds: setattr(addon, "silence_timeout", seconds)
    addon.silence_timeout = default


def test_a_worker_that_never_answers_ends_a_blocking_operator_and_is_stopped(scene, addon, silence):
    """A worker that only slept kept a blocking operator waiting forever, then lived on."""
    silence(2)
    addon.worker_command = "sleep 600"
    try:
        with pytest.raises(RuntimeError, match="did not answer hello within 2 s"):
            bpy.ops.shape_e.text_to_mesh(prompt="a cup", **FAST)
        assert tasks.status.state == "error" and "silence_timeout" not in tasks.status.error
        assert "Cup" not in bpy.data.objects and not tasks.busy()
        sleeper = tasks.current_client()._old[-1].popen
        assert sleeper.args == ["sleep", "600"] and process_gone(sleeper, 10)
    finally:
        addon.worker_command = ""
        tasks.release(wait=True)
        tasks.tick()


@pytest.mark.main_blender
def test_a_worker_silent_mid_job_is_stopped_and_the_job_fails_with_its_log(
    scene, text_model, silence
):
    silence(0)
    assert bpy.ops.shape_e.text_to_mesh(prompt="a cup", **FAST) == {"FINISHED"}  # warm
    silence(3)
    bpy.ops.shape_e.text_to_mesh(prompt="a jug", steps=400, grid_size=32, blocking=False)
    poll_until_stage("sampling")
    popen = tasks.current_client()._worker.popen
    with frozen(popen):  # SIGSTOP: alive, and silent
        done = drain()
    assert done.error is not None and done.error.code == WORKER_EXITED
    assert tasks.status.state == "error" and "said nothing for" in tasks.status.error
    assert "silence_timeout" in tasks.status.hint and "Jug" not in bpy.data.objects
    assert process_gone(popen, 10)
    silence(0)
    assert bpy.ops.shape_e.text_to_mesh(prompt="a jug", **FAST) == {"FINISHED"}  # a new worker
    assert "Jug" in bpy.data.objects and _pid() not in (None, popen.pid)


def _collection(name: str) -> bpy.types.Collection:
    """A new collection under the scene's, made the active one."""
    c = bpy.data.collections.new(name)
    bpy.context.scene.collection.children.link(c)
    layer = bpy.context.view_layer.layer_collection.children[name]
    bpy.context.view_layer.active_layer_collection = layer
    return c


def test_the_object_lands_in_the_collection_active_at_the_start(scene, text_model):
    props = _collection("Props")
    bpy.ops.shape_e.text_to_mesh(prompt="a stool", steps=60, grid_size=32, blocking=False)
    _collection("Lights")  # the artist moves on while it runs
    done = drain()
    assert done.error is None and done.warnings == []
    assert [c.name for c in bpy.data.objects["Stool"].users_collection] == [props.name]


def test_a_collection_deleted_mid_job_sends_the_object_to_the_scene_collection(scene, text_model):
    props = _collection("Props")
    bpy.ops.shape_e.text_to_mesh(prompt="a stool", steps=400, grid_size=32, blocking=False)
    poll_until_stage("sampling")
    bpy.data.collections.remove(props)
    done = drain()
    assert done.error is None and "'Props' was deleted" in done.warnings[0]
    obj = bpy.data.objects["Stool"]
    assert list(obj.users_collection) == [bpy.context.scene.collection]
    assert tasks.status.state == "done" and tasks.status.objects == ["Stool"]


def test_a_file_opened_mid_job_keeps_the_result_on_disk_and_out_of_the_new_file(scene, text_model):
    """Opening a file cancelled the job: minutes of work lost, though nothing was wrong."""
    bpy.ops.shape_e.text_to_mesh(prompt="a lamp", steps=400, grid_size=32, blocking=False)
    poll_until_stage("sampling")
    folder = tasks.active().job_dir
    bpy.ops.wm.read_homefile(use_empty=True)  # File > New: load_post runs
    done = drain()
    assert done.error is None and done.objects == []
    assert "Lamp" not in bpy.data.objects  # not dropped into a file it was not made for
    assert tasks.status.state == "done" and tasks.status.message == "Kept in Recent Jobs"
    assert "Recent Jobs" in tasks.status.warnings[0]
    assert jobdir.read_job(folder).state == jobdir.DONE
    history.forget()
    _root, recent = history.recent(bpy.context)
    assert any(job.path == folder and job.importable for job in recent)


def test_timer_callback_finishes_the_job_like_the_ui(scene, text_model):
    assert bpy.ops.shape_e.text_to_mesh(prompt="a boat", blocking=False, **FAST) == {"FINISHED"}
    # Module mode never fires timers: call the registered function as Blender would.
    while (interval := tasks.timer()) is not None:
        assert interval > 0
        tasks.tick(timeout=0.25)  # wait for the worker instead of spinning
    assert tasks.status.state == "done" and "Boat" in bpy.data.objects
    assert bpy.data.objects["Boat"]["shape_e"]["prompt"] == "a boat"


def test_panel_generate_picks_the_seed_first_and_keep_alive_off_stops_the_worker(
    scene,
    addon,
    text_model,
):
    s = scene.shape_e
    s.prompt, s.steps, s.grid_size = "a small table", FAST["steps"], FAST["grid_size"]
    s.seed, s.random_seed = 0, True
    addon.keep_alive = False
    assert bpy.ops.shape_e.generate() == {"FINISHED"}
    obj = bpy.data.objects["Small table"]
    assert obj["shape_e"]["seed"] == s.seed  # the panel shows the seed that was used
    assert _pid() is None  # keep_alive off: the worker stopped after the job
    assert bpy.ops.shape_e.release_worker() == {"FINISHED"}  # nothing to release: no error


def test_release_worker_stops_the_process(scene, addon):
    client = prefs.client()
    client.hello()
    popen = client._worker.popen
    assert bpy.ops.shape_e.release_worker() == {"FINISHED"}
    assert popen.poll() is not None and client.pid is None


def test_invalid_device_override_is_reported(scene, text_model):
    with pytest.raises(TypeError):
        bpy.ops.shape_e.text_to_mesh(prompt="a cup", device="TPU")
    assert tasks.status.state != "running"
    # A valid override reaches the worker, which says the device is not here.
    with pytest.raises(RuntimeError, match="cuda"):
        bpy.ops.shape_e.text_to_mesh(prompt="a cup", device="CUDA", **FAST)
    assert tasks.status.state == "error"
    assert tasks.status.error_field == "device" and tasks.status.hint


def test_camera_to_mesh_renders_the_camera_and_imports(tmp_path, worker_image_model):
    # Rendering needs Mesa's EGL and may abort a process without it: a child runs it.
    proc = run_child(
        sys.executable,
        "-m",
        "tests.blender.children.camera_to_mesh_job",
        str(tmp_path / "jobs"),
        str(worker_image_model),
        WORKER_PYTHON,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    # Named after the camera ("Front Cam/2"), also when imported again from its job folder,
    # whose render carries the name (a file-name-safe spelling of it).
    assert result["objects"] == ["Front Cam 2 view"]
    assert result["from_folder"] == "Front Cam 2 view"
    assert result["polygons"] > 0
    image = Path(result["settings"]["image"])
    assert image.name == "Front Cam_2 view.png" and image.parent == Path(result["job_dir"])
    assert (image.parent / "0" / "mesh.npz").is_file()
    assert result["settings"]["guidance_scale"] == 3.0
    assert result["render_restored"], "the scene's render settings must come back"
    # The asset options: decimated, a 64-pixel base-colour texture, 0.5 m at its largest.
    assert result["settings"]["faces"] == 500 and result["settings"]["texture_size"] == 64
    assert 500 * 0.95 <= result["polygons"] <= 500 * 1.05
    assert result["texture_images"] == [[64, 64]]
    assert abs(result["largest_dimension"] - 0.5) < 1e-4


# A UI call that kills a worker sends a signal and returns; the reader threads reap it. This
# bounds such a call with a wide margin (signalling takes microseconds, waiting for a worker with
# a model loaded over a second); it is not a performance timing. Calls that ask a worker to stop
# are checked without any timing, with the worker frozen (tests.support.frozen).
UI_CALL_S = 0.5


def _threads_end(client, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while client.threads_alive():
        if time.monotonic() > deadline:
            return False
        client.join(0.1)
    return True


def _latent_result(scene, text_model, tmp_path) -> tuple[Path, dict]:
    """A real generation's latent saved beside an all-zero one (a constant field: no surface),
    decoded again by the worker: variant 0 fails, variant 1 has a mesh."""
    assert bpy.ops.shape_e.text_to_mesh(prompt="a bowl", seed=3, **FAST) == {"FINISHED"}
    latent = np.load(Path(bpy.data.objects["Bowl"]["shape_e"]["job_dir"]) / "0" / "latent.npy")
    path = tmp_path / "latents.npy"
    np.save(path, np.stack([np.zeros_like(latent), latent]))
    return path, latent


def test_a_variant_without_surface_is_skipped_and_the_others_imported(
    scene, addon, text_model, tmp_path
):
    path, _ = _latent_result(scene, text_model, tmp_path)
    params = GenerationParams.create(latent=str(path), model=str(text_model), grid_size=32)
    job_dir = jobdir.new_job_dir(Path(addon.jobs_dir), "bowl again")
    request = prefs.client().generate(GenerateRequest(params, job_dir=str(job_dir)))
    # What the operators do, with the worker's latent mode as the source.
    tasks.begin(tasks.Task("generate", [request], "Bowl again", finish=finish.generation))
    done = drain()
    entries = request.result["meshes"]
    assert [("error" in e, e["variant"]) for e in entries] == [(True, 0), (False, 1)]
    assert done.error is None, done.error
    assert [o.name for o in done.objects] == ["Bowl again_1"]
    obj = bpy.data.objects["Bowl again_1"]
    assert obj["shape_e"]["variant"] == 1 and obj["shape_e"]["job_dir"] == str(job_dir)
    assert obj["shape_e"]["latent"] == str(path)  # a latent job keeps its source file's path
    assert len(obj.data.vertices) == MeshData.load(entries[1]["path"]).vertex_count
    assert tasks.status.state == "done" and tasks.status.objects == ["Bowl again_1"]
    # The skipped variant is reported with the worker's own message and hint.
    failed = entries[0]["error"]
    (warning,) = tasks.status.warnings
    assert warning.startswith("skipped variant 0: ")
    assert failed["message"] in warning and failed["data"]["hint"] in warning
    assert "no surface" in failed["message"]
    bpy.ops.ed.undo()
    assert "Bowl again_1" not in bpy.data.objects


def test_a_result_where_every_variant_failed_is_an_error_naming_the_seed(
    scene, addon, text_model, tmp_path
):
    path, _ = _latent_result(scene, text_model, tmp_path)
    params = GenerationParams.create(latent=str(path), model=str(text_model), grid_size=32)
    request = prefs.client().generate(GenerateRequest(params, job_dir=str(tmp_path / "j")))
    tasks.begin(tasks.Task("generate", [request], "Bowl again", finish=finish.generation))
    drain()
    # The worker fails a job whose variants all failed; a result that still lists only failed
    # entries (here the real one, with its mesh entry dropped and a seed as text jobs carry it)
    # must be an error too, not an empty import.
    failed = dict(request.result["meshes"][0], seed=41)
    request.result = dict(request.result, meshes=[failed])
    before = set(bpy.data.objects.keys())
    with pytest.raises(ShapEError) as info:
        finish.generation(tasks.last(), bpy.context)
    assert info.value.code == NO_SURFACE
    assert info.value.message.startswith("variant 0 (seed 41): no surface")
    assert info.value.hint == failed["error"]["data"]["hint"]
    assert set(bpy.data.objects.keys()) == before


def test_keep_alive_off_stops_the_worker_without_blocking_the_ui(scene, addon, text_model):
    addon.keep_alive = False
    assert bpy.ops.shape_e.text_to_mesh(prompt="a mug", blocking=False, **FAST) == {"FINISHED"}
    client = tasks.current_client()
    popen = client._worker.popen
    client.wait(tasks.active().requests[0], 120)  # the model is loaded and the mesh is written
    with frozen(popen):
        done = tasks.tick(bpy.context)  # the timer's call: import, then stop the worker
        assert done is not None and done.error is None and "Mug" in bpy.data.objects
        assert client.pid is None
        # The call returned while the worker could not exit: the UI thread did not wait for it.
        assert popen.poll() is None
    assert process_gone(popen), "the worker did not exit after its shutdown request"
    assert popen.returncode == 0  # it exited by itself, as asked
    assert _threads_end(client)


def test_release_and_a_changed_worker_preference_do_not_block_the_ui(
    scene, addon, text_model, tmp_path
):
    assert bpy.ops.shape_e.text_to_mesh(prompt="a jar", **FAST) == {"FINISHED"}
    old = tasks.current_client()
    old_popen = old._worker.popen  # warm, with the model loaded
    jobs_dir = addon.jobs_dir
    addon.jobs_dir = str(tmp_path / "other-jobs")
    try:
        with frozen(old_popen):
            new = prefs.client()  # another jobs folder: another client, the old worker stops
            assert new is not old
            assert old_popen.poll() is None  # returned without waiting for the old worker
        assert process_gone(old_popen) and _threads_end(old)

        # Release while a job samples: the call returns at once, the job fails on the next tick.
        bpy.ops.shape_e.text_to_mesh(prompt="a jar", steps=400, grid_size=32, blocking=False)
        poll_until_stage("sampling")
        popen = new._worker.popen
        started = time.perf_counter()
        assert tasks.release()
        took = time.perf_counter() - started
        assert took < UI_CALL_S, f"waited {took:.2f} s"
        done = drain()
        assert done.error is not None and done.error.code == WORKER_EXITED
        assert "released" in done.error.message
        assert process_gone(popen) and _threads_end(new)
    finally:
        addon.jobs_dir = jobs_dir
