"""Child process for test_panel.py: draw the panel and the preferences in every state.

Module mode has no region drawing, so nothing calls a Panel's draw by itself. This takes a real
UILayout from a popup menu (WindowManager.popmenu_begin__internal) and calls the draw code with
it. The popups cannot be closed without a drawn window (module-mode Blender crashes), so they
leak a little memory, which Blender reports at exit: that is why this runs in its own process.

Blender reports a bad property in ``layout.prop`` on stderr instead of raising, so each state
writes a marker line to stderr first; the test reads the section after each marker. Usage:

    python -m tests.blender.children.panel_draw_job JOBS_DIR WORKER_PYTHON RECENT_DIR

RECENT_DIR holds a finished and a failed job written by the worker (test_panel.py makes them);
the Recent Jobs states add folders of other kinds next to them.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import bpy

from shape_e_blender.blender import compat, history, panel, prefs, preload, tasks
from shape_e_blender.client.handle import JobHandle
from shape_e_blender.core.protocol import Progress

from ..job_folders import foreign_folders

MARKER = "=== state: "


def layout() -> bpy.types.UILayout:
    return bpy.context.window_manager.popmenu_begin__internal("test", icon="NONE").layout


def state(name: str, draw) -> None:
    print(f"{MARKER}{name}", file=sys.stderr, flush=True)
    try:
        draw()
    except Exception:
        traceback.print_exc()
    sys.stderr.flush()


def draw_panel() -> None:
    panel.SHAPE_E_PT_panel.draw(SimpleNamespace(layout=layout()), bpy.context)


def draw_noting_box(name: str):
    """Draw the panel, then say on stdout whether the active object's box is drawn."""

    def draw() -> None:
        draw_panel()
        drawn = panel.draw_active_object(layout(), bpy.context)
        print(f"active box in {name}: {drawn}", flush=True)

    return draw


def draw_recent_noting(name: str):
    """Draw the Recent Jobs sub-panel, then say on stdout how many jobs it listed, and which."""

    def draw() -> None:
        history.forget()  # the folder changed since the last state: no cached list
        panel.SHAPE_E_PT_recent.draw(SimpleNamespace(layout=layout()), bpy.context)
        shown = panel.draw_recent(layout(), bpy.context)
        print(f"recent jobs in {name}: {shown}", flush=True)
        if shown:
            _, found = history.recent(bpy.context)
            for job in found[:shown]:
                print(f"recent job in {name}: {job.state} {job.label}", flush=True)

    return draw


def draw_recent_states(p: prefs.ShapEPreferences, jobs_dir: str, recent: Path) -> None:
    """Recent Jobs: empty, every kind of folder, many folders, and a jobs folder it cannot use."""
    p.jobs_dir = str(Path(jobs_dir) / "no-jobs-yet")
    state("recent-empty", draw_recent_noting("recent-empty"))
    p.jobs_dir = str(recent)
    done = next(f for f in recent.iterdir() if (f / "result.json").is_file())
    foreign_folders(recent)
    interrupted = recent / "20250101-000010-interrupted"
    interrupted.mkdir()
    shutil.copy(done / "request.json", interrupted / "request.json")
    # The add-on's own running job, before the worker wrote anything into its folder.
    running = recent / "20250101-000011-a-red-chair"
    running.mkdir()
    request = JobHandle(id=1, method="generate", params={"job_dir": str(running)}, generation=1)
    tasks._active = tasks.Task("generate", [request], "Red chair")
    state("recent-jobs", draw_recent_noting("recent-jobs"))
    tasks._active = None
    for i in range(25):
        folder = recent / f"20250101-{i:06d}-old"
        folder.mkdir()
        shutil.copy(done / "request.json", folder / "request.json")
    state("recent-many", draw_recent_noting("recent-many"))
    p.jobs_dir = "//relative-to-an-unsaved-file"
    state("recent-unusable-jobs-folder", draw_recent_noting("recent-unusable-jobs-folder"))
    p.jobs_dir = jobs_dir


def main() -> int:
    import addon_utils  # importable once bpy is

    jobs_dir, worker_python, recent_dir = sys.argv[1:4]
    bpy.ops.wm.read_homefile(use_empty=True)
    assert addon_utils.enable("shape_e_blender", default_set=True) is not None
    p = prefs.get()
    p.jobs_dir = jobs_dir
    scene = bpy.context.scene
    for source in ("TEXT", "IMAGE", "CAMERA"):
        scene.shape_e.source = source
        state(f"idle-{source}", draw_panel)
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    state("idle-CAMERA-with-camera", draw_panel)
    # Module mode is background mode: drawing never loaded the models in advance.
    print(f"worker after idle draws: {tasks.current_client()}", flush=True)
    scene.shape_e.source = "TEXT"

    tasks._active = tasks.Task("generate", [], "a red chair")
    tasks.status = tasks.Status(
        state="running", kind="generate", stage="sampling", step=12, total=127, eta_s=3.1
    )
    print(f"progress: {tasks.status.progress_text()}", flush=True)
    state("running", draw_panel)
    tasks.status.state = "cancelling"
    state("cancelling", draw_panel)
    # A scene build: object 2 of 3, and the time left for them all.
    tasks._active = tasks.Task("scene", [], "props.toml", each_alone=True, parts=["A", "B", "C"])
    tasks.status = tasks.Status(
        state="running", kind="scene", stage="sampling", step=3, total=10, part=2, parts=3,
        part_label="Lamp", overall_eta_s=130.0,
    )  # fmt: skip
    print(f"scene progress: {tasks.status.progress_text()}", flush=True)
    state("scene-running", draw_panel)
    tasks._active = None
    tasks.status = tasks.Status(state="done", message="Created a_red_chair", objects=["a"])
    state("done", draw_panel)
    tasks.status.warnings = [
        "skipped variant 0 (seed 41): no surface found: every grid point is inside the shape "
        "(the field is positive) (try another seed or another prompt)"
    ]
    state("done-with-skipped-variants", draw_panel)
    tasks.status.timings = {"start": 1.2, "import": 3.8, "load": 2.0, "sample": 4.1, "decode": 0.9}
    tasks.status.timings["write"] = 0.01  # under 0.05 s: not shown
    print(f"timings: {tasks.status.timings_text()}", flush=True)
    state("done-with-timings", draw_panel)
    tasks.status = tasks.Status(state="cancelled", message="Cancelled")
    state("cancelled", draw_panel)
    tasks.status = tasks.Status(
        state="error",
        error="the worker exited (status -9) before answering; the end of its log:\n" + "x" * 300,
        hint="press Generate to start a new worker, or check worker_python",
    )
    state("error", draw_panel)
    tasks.status = tasks.Status()
    tasks.warming = JobHandle(9, "load", {}, 1, progress=Progress(9, "loading", 0, 1))
    print(f"preloading: {preload.progress()}", flush=True)
    state("preloading", draw_panel)
    tasks.warming = None

    # The active object's box: a Shap-E object (text, then image with no seed), another object.
    tasks.status = tasks.Status()
    mesh = bpy.data.meshes.new("Red chair")
    chair = bpy.data.objects.new("Red chair", mesh)
    chair["shape_e"] = {
        "prompt": "a red chair with a very long description " + "and more words " * 8,
        "seed": 7,
        "grid_size": 32,
        "variant": 0,
        "job_dir": str(Path(jobs_dir) / "job"),
        "latent": str(Path(jobs_dir) / "job" / "0" / "latent.npy"),
    }
    scene.collection.objects.link(chair)
    bpy.context.view_layer.objects.active = chair
    scene.shape_e.remesh_grid_size = 64
    state("active-shap-e-object", draw_noting_box("active-shap-e-object"))
    tasks._active = tasks.Task("generate", [], "Red chair")
    tasks.status = tasks.Status(state="running", kind="generate", stage="decoding", step=0, total=1)
    state("active-shap-e-object-running", draw_noting_box("active-shap-e-object-running"))
    tasks._active = None
    tasks.status = tasks.Status()
    chair["shape_e"] = {"image": str(Path(jobs_dir) / "lamp.png"), "variant": 1}
    state("active-image-object-without-seed", draw_noting_box("active-image-object-without-seed"))
    other = bpy.data.objects.new("Other", bpy.data.meshes.new("Other"))
    scene.collection.objects.link(other)
    bpy.context.view_layer.objects.active = other
    state("active-other-object", draw_noting_box("active-other-object"))
    bpy.context.view_layer.objects.active = None

    def draw_prefs() -> None:
        prefs.draw_preferences(p, layout())

    tasks.status = tasks.Status()
    state("prefs-not-set-up", draw_prefs)
    # The environment setup mid-way, as its task shows it.
    tasks.status = tasks.Status(
        state="running",
        kind="setup",
        stage="installing",
        message="Collecting torch==2.13.0",
        fraction_override=0.6,
    )
    state("prefs-setting-up", draw_prefs)
    tasks.status = tasks.Status()
    p.worker_python = worker_python
    tasks.status = tasks.Status(state="running", kind="check", started=time.time())
    state("prefs-checking", draw_prefs)
    tasks.status = tasks.Status()
    bpy.ops.shape_e.check_worker()  # the real worker's hello: versions and devices
    print(f"versions: {sorted(tasks.worker_info().get('versions', {}))}", flush=True)
    state("prefs-worker-info", draw_prefs)
    tasks.status = tasks.Status(state="error", kind="download", error="no hub", hint="go online")
    state("prefs-download-error", draw_prefs)
    tasks.status = tasks.Status()
    p.worker_command = "ssh gpu-box ~/shape-e/bin/python -m shape_e_blender.worker"
    state("prefs-worker-command", draw_prefs)
    p.worker_command = ""
    tasks.status = tasks.Status()
    draw_too_old(p)
    draw_recent_states(p, jobs_dir, Path(recent_dir))
    print(MARKER + "end", file=sys.stderr, flush=True)
    addon_utils.disable("shape_e_blender", default_set=True)
    return 0


def draw_too_old(p: prefs.ShapEPreferences) -> None:
    """The panel and the preferences on a Blender older than the minimum (as if it were 4.1)."""
    real = compat.VERSION
    shown = []

    def draw() -> None:
        shown.append(compat.draw_too_old(layout()))
        panel.draw_panel(layout(), bpy.context)
        prefs.draw_preferences(p, layout())

    compat.VERSION = (4, 1, 0)
    try:
        state("too-old", draw)
    finally:
        compat.VERSION = real
    print(f"too old: {shown} {compat.too_old()!r}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
