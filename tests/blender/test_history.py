"""Recent jobs and shape_e.import_job: results come back from their job folders.

Real bpy, the real worker subprocess and its CLI, tiny random Shap-E models. The job folders are
written by the worker itself: behind the add-on, behind a Blender that crashed mid-job, by the
worker's CLI, by a failed, a cancelled and a killed run. Hand-written folders appear only as
what they stand for: folders that are not jobs.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import time
from pathlib import Path

import bpy
import numpy as np
import pytest

from shape_e_blender.blender import finish, history, prefs, tasks
from shape_e_blender.core import jobdir
from shape_e_blender.core.errors import WORKER_EXITED
from shape_e_blender.core.mesh import MeshData
from shape_e_blender.core.params import GenerationParams
from shape_e_blender.core.protocol import WORKER_LOG_FILE, GenerateRequest
from tests.blender.addon import drain, poll_until_stage
from tests.support import FAST, RESULT_PREFIX, WORKER_PYTHON, kill_process, run_child

from .children.crash_job import BOUND_S as CRASH_BOUND_S
from .children.crash_job import CRASH, CRASH_STATUS, MID_JOB
from .children.crash_job import SETTINGS as CRASH_SETTINGS
from .job_folders import TINY, finished_job, foreign_folders

# A job still busy for seconds once sampling starts, so a cancel or a kill lands mid-job.
LONG = {key: CRASH_SETTINGS[key] for key in ("steps", "grid_size", "variants")}


@pytest.fixture(scope="module")
def cli_job(tmp_path_factory, worker_text_model) -> Path:
    """A finished two-variant job written by the worker's CLI, with no Blender involved."""
    root = tmp_path_factory.mktemp("cli-jobs")
    job = root / "20250102-030405-a-green-teapot-1a2b3c"
    return finished_job(
        job,
        worker_text_model,
        "--prompt",
        "a green teapot",
        "--seed",
        "5",
        "--variants",
        "2",
        *TINY,
    )


def _positions(mesh: bpy.types.Mesh) -> np.ndarray:
    out = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def _colors(mesh: bpy.types.Mesh) -> np.ndarray:
    attr = mesh.color_attributes["Color"]
    assert (attr.data_type, attr.domain) == ("FLOAT_COLOR", "POINT")
    out = np.empty(len(attr.data) * 4, np.float32)
    attr.data.foreach_get("color", out)
    return out.reshape(-1, 4)[:, :3]


def _scene_data() -> tuple:
    """What a refused import must leave exactly as it was."""
    return (
        sorted(bpy.data.objects.keys()),
        sorted(bpy.data.meshes.keys()),
        sorted(bpy.data.materials.keys()),
    )


def _new_folder(root: Path, before: set[str]) -> Path:
    (name,) = {p.name for p in root.iterdir() if p.is_dir()} - before
    return root / name


def _refused(job_dir: str, *expected: str, **kwargs) -> str:
    """import_job's error text (background mode raises it); nothing may have been imported."""
    before = _scene_data()
    with pytest.raises(RuntimeError) as info:
        bpy.ops.shape_e.import_job(job_dir=job_dir, **kwargs)
    text = str(info.value)
    for part in expected:
        assert part in text, text
    assert _scene_data() == before
    return text


def test_a_generation_deleted_with_its_file_comes_back_the_same_in_one_undo_step(
    scene, addon, text_model
):
    assert bpy.ops.shape_e.text_to_mesh(prompt="a red chair", seed=7, **FAST) == {"FINISHED"}
    made = bpy.data.objects["Red chair"]
    settings = made["shape_e"].to_dict()
    positions, colors = _positions(made.data), _colors(made.data)
    polygons, location = len(made.data.polygons), tuple(made.location)
    job_dir = Path(settings["job_dir"])
    # The panel's list shows it at once (a job that ended re-reads the folder).
    root, found = history.recent(bpy.context)
    assert root == Path(addon.jobs_dir) and found[0].path == job_dir
    assert (found[0].state, found[0].label, found[0].seed) == ("done", "a red chair", 7)
    assert found[0].meshes == (0,) and found[0].importable

    bpy.ops.wm.read_homefile(use_empty=True)  # the file is closed without saving
    assert "Red chair" not in bpy.data.objects
    assert bpy.ops.shape_e.import_job(job_dir=str(job_dir)) == {"FINISHED"}

    obj = bpy.data.objects["Red chair"]
    assert bpy.context.view_layer.objects.active == obj and obj.select_get()
    on_disk = MeshData.load(job_dir / "0" / "mesh.npz")
    assert len(obj.data.vertices) == on_disk.vertex_count == len(positions)
    assert len(obj.data.polygons) == polygons > 0
    assert np.array_equal(_positions(obj.data), positions)
    assert np.allclose(_colors(obj.data), on_disk.colors) and np.array_equal(
        _colors(obj.data), colors
    )
    assert tuple(obj.location) == location
    bsdf = obj.data.materials[0].node_tree.nodes["Principled BSDF"]
    assert bsdf.inputs["Base Color"].links[0].from_node.bl_idname == "ShaderNodeVertexColor"
    # Every stored setting, as the generation stored it: prompt, seed, grid, model, versions,
    # the job folder and the latent that shape_e.remesh decodes.
    assert obj["shape_e"].to_dict() == settings
    assert settings["prompt"] == "a red chair" and settings["seed"] == 7

    bpy.ops.ed.undo()
    assert "Red chair" not in bpy.data.objects
    bpy.ops.ed.redo()
    assert "Red chair" in bpy.data.objects


def test_a_cli_job_imports_one_variant_or_all_of_them(scene, cli_job):
    (found,) = history.scan(cli_job.parent)
    assert (found.path, found.state, found.label) == (cli_job, "done", "a green teapot")
    assert (found.seed, found.grid_size, found.variants, found.meshes) == (5, 32, 2, (0, 1))

    assert bpy.ops.shape_e.import_job(job_dir=str(cli_job), variant=1) == {"FINISHED"}
    assert [o.name for o in bpy.context.scene.objects] == ["Green teapot_1"]
    one = bpy.data.objects["Green teapot_1"]["shape_e"]
    assert (one["seed"], one["variant"], one["job_dir"]) == (6, 1, str(cli_job))
    assert one["latent"] == str(cli_job / "1" / "latent.npy")
    assert one["prompt"] == "a green teapot" and one["grid_size"] == 32
    vertices = MeshData.load(cli_job / "1" / "mesh.npz").vertex_count
    assert len(bpy.data.objects["Green teapot_1"].data.vertices) == vertices
    bpy.ops.ed.undo()
    assert "Green teapot_1" not in bpy.data.objects

    _refused(str(cli_job), "variant", "has no variant 2 (it has 0, 1)", variant=2)
    _refused(str(cli_job), "variant", "-2 is not a variant", variant=-2)
    assert bpy.ops.shape_e.import_job(job_dir=str(cli_job)) == {"FINISHED"}
    objs = [bpy.data.objects["Green teapot_0"], bpy.data.objects["Green teapot_1"]]
    assert [o["shape_e"]["seed"] for o in objs] == [5, 6]
    assert objs[1].location.x > objs[0].location.x  # side by side, like a fresh generation
    assert set(bpy.context.selected_objects) == set(objs)


def test_a_moved_job_folder_imports_from_where_it_is_now_and_a_missing_mesh_is_refused(
    scene, cli_job, tmp_path
):
    moved = tmp_path / "elsewhere" / cli_job.name
    shutil.copytree(cli_job, moved)
    assert bpy.ops.shape_e.import_job(job_dir=str(moved), variant=0) == {"FINISHED"}
    settings = bpy.data.objects["Green teapot_0"]["shape_e"]
    assert settings["job_dir"] == str(moved)
    assert settings["latent"] == str(moved / "0" / "latent.npy")

    (moved / "1" / "mesh.npz").unlink()
    (found,) = history.scan(moved.parent)
    assert (found.state, found.meshes, found.missing) == ("done", (0,), (1,))
    assert "1 missing" in history.details(found)
    _refused(str(moved), "job_dir", str(moved / "1" / "mesh.npz"), "missing")
    assert bpy.ops.shape_e.import_job(job_dir=str(moved), variant=0) == {"FINISHED"}


@pytest.mark.parametrize("kept", [0, 3, 0.5, -1])
def test_a_mesh_file_cut_short_is_refused_naming_it_and_nothing_is_imported(
    scene, cli_job, tmp_path, kept
):
    """Variant 1's mesh.npz cut to ``kept`` bytes (a fraction of it, or all but the last)."""
    job = tmp_path / cli_job.name
    shutil.copytree(cli_job, job)
    mesh = jobdir.mesh_path(job, 1)
    data = mesh.read_bytes()
    mesh.write_bytes(data[: int(len(data) * kept) if isinstance(kept, float) else kept])
    text = _refused(str(job), str(mesh), "cut short or damaged", "generate again")
    assert "Traceback" not in text and "bug" not in text
    assert bpy.context.scene.objects[:] == []  # not variant 0 alone either
    _refused(str(job), str(mesh), "cut short or damaged", variant=1)
    assert bpy.ops.shape_e.import_job(job_dir=str(job), variant=0) == {"FINISHED"}


NEEDS_SIGSTOP = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="freezes the worker")


@pytest.mark.main_blender
@pytest.mark.parametrize("how", [pytest.param("crash", marks=NEEDS_SIGSTOP), "quit"])
def test_a_job_that_finished_after_blender_ended_is_listed_done_and_imports(
    scene, worker_text_model, tmp_path, how
):
    """``quit``: File > Quit mid-job killed the worker (unregister stopped it), and the job
    was lost; now the worker is left to finish it, holding none of Blender's pipes. ``crash``:
    Blender froze the worker mid-job before it died, so the job cannot have ended first; it
    goes on here, once Blender is gone."""
    jobs_dir = tmp_path / "jobs"
    proc = run_child(
        sys.executable,
        "-m",
        "tests.blender.children.crash_job",
        str(jobs_dir),
        WORKER_PYTHON,
        str(worker_text_model),
        how,
        timeout=2 * CRASH_BOUND_S,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    status, asked = (CRASH_STATUS, CRASH) if how == "crash" else (0, CRASH_SETTINGS)
    assert proc.returncode == status and lines, proc.stderr[-4000:]
    crash = json.loads(lines[-1][len(RESULT_PREFIX) :])
    job_dir, pid = Path(crash["job_dir"]), crash["worker_pid"]
    assert crash["stage"] in MID_JOB and not crash["result_at_crash"]  # Blender died first
    if how == "crash":  # frozen by Blender before it died: still mid-job, with no result
        assert _state(pid) == "T" and not (job_dir / "result.json").exists(), _state(pid)
    # The worker outlived Blender and finishes on its own (bounded wait, then it exits).
    assert _ended(pid, go_on=how == "crash", timeout=CRASH_BOUND_S), (job_dir, pid)
    assert (job_dir / "result.json").is_file()

    if how == "quit":
        assert "detached from the client" in (jobs_dir / WORKER_LOG_FILE).read_text()
    (found,) = history.scan(jobs_dir)
    assert (found.path, found.state, found.label) == (job_dir, "done", "a blue vase")
    assert found.meshes == (0, 1, 2) and found.seed == asked["seed"]
    assert bpy.ops.shape_e.import_job(job_dir=str(job_dir)) == {"FINISHED"}
    for i in range(3):
        obj = bpy.data.objects[f"Blue vase_{i}"]
        assert len(obj.data.vertices) == MeshData.load(job_dir / str(i) / "mesh.npz").vertex_count
        assert obj["shape_e"]["seed"] == asked["seed"] + i
        assert obj["shape_e"]["grid_size"] == asked["grid_size"]


def _ended(pid: int, *, go_on: bool, timeout: float) -> bool:
    """Whether ``pid`` (not ours to wait for: Blender, its parent, is gone) ends within
    ``timeout``; ``go_on``: it is frozen, and is let go on (SIGCONT) first. Where Linux gives a
    pidfd, it names this very process and tells of its end: no polling, and no pid that another
    process took meanwhile is waited for."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, or it has ended already
        pidfd = None
    try:
        if go_on:
            os.kill(pid, signal.SIGCONT)
        if pidfd is not None:
            return bool(select.select([pidfd], [], [], timeout)[0])
        deadline = time.monotonic() + timeout
        while _state(pid) not in ("", "Z"):  # polled: nothing else tells of its end here
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _state(pid: int) -> str:
    """``pid``'s state letter (R, S, T: stopped, Z: exited, not yet reaped); "" once gone."""
    if os.name == "nt":
        return ""  # os.kill would terminate it there; result.json is written last anyway
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return "R"  # no /proc (macOS): it runs


def test_a_failed_job_shows_the_workers_message_and_import_job_refuses_with_it(
    scene, addon, text_model
):
    assert bpy.ops.shape_e.text_to_mesh(prompt="a red chair", seed=3, **FAST) == {"FINISHED"}
    latent = Path(bpy.context.active_object["shape_e"]["latent"])
    latent.write_bytes(b"not a numpy file")  # the saved latent is damaged
    root = Path(addon.jobs_dir)
    before = {p.name for p in root.iterdir() if p.is_dir()}
    with pytest.raises(RuntimeError) as info:
        bpy.ops.shape_e.remesh(grid_size=64)
    failed = _new_folder(root, before)
    assert "cannot read" in str(info.value)

    job = jobdir.read_job(failed)
    assert job.state == "failed" and not job.importable
    assert job.label == "Re-mesh of a red chair"
    assert f"cannot read {latent} as a .npy array" in job.message
    assert job.message.split(" (")[0] in str(info.value)  # the message the operator showed
    assert any(j.path == failed and j.state == "failed" for j in history.scan(root))
    _refused(str(failed), "job_dir", "failed", f"cannot read {latent} as a .npy array")


def test_a_running_job_is_listed_running_then_interrupted_once_its_worker_was_killed(
    scene, addon, text_model
):
    root = Path(addon.jobs_dir)
    bpy.ops.shape_e.text_to_mesh(prompt="a tall lamp", seed=9, blocking=False, **LONG)
    poll_until_stage("sampling")
    job_dir, _ = history.active_job()
    history.forget()
    _, found = history.recent(bpy.context)
    assert (found[0].path, found[0].state, found[0].label) == (job_dir, "running", "a tall lamp")
    _refused(str(job_dir), "job_dir", "has not finished yet")

    kill_process(tasks.current_client().pid)
    done = drain()
    assert done.error is not None and done.error.code == WORKER_EXITED
    job = next(j for j in history.scan(root) if j.path == job_dir)
    assert (job.state, job.seed, job.grid_size, job.variants) == ("interrupted", 9, 128, 3)
    assert "3 variants" in history.details(job)
    _refused(str(job_dir), "job_dir", "has no result", "with seed 9")


def test_a_cancelled_job_is_listed_cancelled(scene, addon, text_model):
    bpy.ops.shape_e.text_to_mesh(prompt="a short lamp", blocking=False, **LONG)
    poll_until_stage("sampling")
    job_dir, _ = history.active_job()
    assert bpy.ops.shape_e.cancel() == {"FINISHED"}
    assert drain().cancelled
    job = jobdir.read_job(job_dir)
    assert (job.state, job.label) == ("cancelled", "a short lamp")
    assert job.message.startswith("cancelled")
    _refused(str(job_dir), "job_dir", "was cancelled")


def test_a_variant_without_surface_is_listed_and_the_rest_imports_with_a_warning(
    scene, addon, text_model, tmp_path
):
    assert bpy.ops.shape_e.text_to_mesh(prompt="a bowl", seed=4, **FAST) == {"FINISHED"}
    source = Path(bpy.context.active_object["shape_e"]["job_dir"])
    latent = np.load(source / "0" / "latent.npy")
    # An all-zero latent gives the tiny model no surface: the worker skips that variant.
    both = tmp_path / "latents.npy"
    np.save(both, np.stack([np.zeros_like(latent), latent]))
    root = Path(addon.jobs_dir)
    before = {p.name for p in root.iterdir() if p.is_dir()}
    # A script's own latent file decoded through the add-on's worker (what re-mesh sends).
    params = GenerationParams.create(latent=str(both), model=str(text_model), grid_size=32)
    job_dir = jobdir.new_job_dir(root, "latents")
    request = prefs.client().generate(GenerateRequest(params, job_dir=str(job_dir)))
    tasks.begin(tasks.Task("generate", [request], "Latents", finish=finish.generation))
    drain()
    assert _new_folder(root, before) == job_dir
    bpy.ops.wm.read_homefile(use_empty=True)

    job = jobdir.read_job(job_dir)
    assert (job.state, job.meshes, job.skipped, job.label) == (
        "done",
        (1,),
        (0,),
        "Latent latents.npy",
    )
    assert "1 without surface" in history.details(job)
    assert bpy.ops.shape_e.import_job(job_dir=str(job_dir)) == {"FINISHED"}
    assert [o.name for o in bpy.context.scene.objects] == ["Latents_1"]
    _refused(str(job_dir), "no surface", variant=0)


def test_foreign_and_damaged_folders_are_skipped_once_and_never_imported(
    scene, cli_job, tmp_path, capsys
):
    root = tmp_path / "jobs"
    foreign = foreign_folders(root)
    shutil.copytree(cli_job, root / "20250101-000000-teapot")
    interrupted = root / "20250101-000009-request-only"
    interrupted.mkdir()
    shutil.copy(cli_job / "request.json", interrupted / "request.json")
    found = history.scan(root)
    # Newest first by the folders' time stamps; the foreign ones are left out.
    assert [(j.path.name, j.state) for j in found] == [
        ("20250101-000009-request-only", "interrupted"),
        ("20250101-000000-teapot", "done"),
    ]
    assert found[0].label == "a green teapot" and found[0].seed == 5
    skipped = [ln for ln in capsys.readouterr().err.splitlines() if "skipped" in ln]
    assert (
        sorted(Path(ln.split("skipped ", 1)[1].split(": ", 1)[0]).name for ln in skipped) == foreign
    )
    assert history.scan(root, limit=1) == found[:1]
    assert "skipped" not in capsys.readouterr().err  # reported once, not on every redraw

    for name in foreign:
        _refused(str(root / name), "job_dir")
    _refused(str(root / "20250101-000003-garbage-result"), "result.json cannot be read")
    _refused(str(root / "20250101-000001-empty"), "not a Shap-E job folder")
    _refused(str(root / "missing"), "job_dir", "there is no folder")
    _refused("", "job_dir", "no job folder given")
    _refused(str(interrupted), "job_dir", "has no result", "with seed 5")
    assert history.scan(tmp_path / "no-such-root") == []


def test_age_text():
    now = 1_000_000.0
    assert history.age_text(now + 30, now) == "just now"  # a clock that moved back
    assert history.age_text(now - 59, now) == "just now"
    assert history.age_text(now - 600, now) == "10 min ago"
    assert history.age_text(now - 3 * 3600, now) == "3 h ago"
    assert history.age_text(now - 5 * 86400, now) == "5 days ago"
