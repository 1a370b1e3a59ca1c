"""Add-on preferences: which worker, which models, which device; and the buttons that manage them.

``bl_idname`` must be the extension's ROOT package (``bl_ext.<repo>.shape_e_blender`` once
installed); a submodule's ``__package__`` is refused by Blender. register() sets it.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty

from ..client.client import WorkerClient
from ..client.process import venv_python
from ..client.watchdog import SILENCE_TIMEOUT_S
from ..core.errors import JOB_FAILED, ShapEError
from ..core.files import is_file
from ..core.params import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL
from . import compat, paths, tasks
from .props import prop

_root = "shape_e_blender"
_added_entry = False  # register() added the preferences entry itself (no addon_utils.enable)


def root_package() -> str:
    return _root


def set_root(root_package: str) -> None:
    global _root
    _root = root_package
    ShapEPreferences.bl_idname = root_package


def ensure_entry() -> None:
    """Make sure preferences.addons has our entry (Blender adds it when it enables the add-on;
    a script that calls register() itself gets one here)."""
    global _added_entry
    addons = bpy.context.preferences.addons
    if addons.get(_root) is None:
        addons.new().module = _root
        _added_entry = True


def remove_entry() -> None:
    global _added_entry
    if _added_entry:
        addons = bpy.context.preferences.addons
        entry = addons.get(_root)
        if entry is not None:
            addons.remove(entry)
        _added_entry = False


def get(context: bpy.types.Context | None = None) -> ShapEPreferences:
    context = context or bpy.context
    entry = context.preferences.addons.get(_root)
    if entry is None:
        raise ShapEError(
            JOB_FAILED,
            f"the add-on {_root!r} is not enabled",
            "enable Shap-E in Preferences > Add-ons",
        )
    return entry.preferences


def _abspath(text: str) -> Path:
    return Path(bpy.path.abspath(text.strip())).expanduser()


def env_dir(p: ShapEPreferences) -> Path:
    """Where the managed worker environment lives."""
    if p.env_dir.strip():
        return _abspath(p.env_dir)
    return paths.user_dir(_root, "worker-env", create=False)


def worker_python(p: ShapEPreferences) -> Path:
    """The interpreter the worker runs with: the user's, or the managed environment's."""
    if p.worker_python.strip():
        return _abspath(p.worker_python)
    return venv_python(env_dir(p))


def jobs_root(p: ShapEPreferences) -> Path:
    return paths.jobs_dir(_root, override=p.jobs_dir)


def client(context: bpy.types.Context | None = None) -> WorkerClient:
    p = get(context)
    return tasks.client_for(
        worker_python(p), jobs_root(p), p.worker_command, float(p.silence_timeout)
    )


class ShapEPreferences(bpy.types.AddonPreferences):
    bl_idname = _root

    worker_python: StringProperty(
        name="Worker Python",
        description=(
            "Python interpreter that runs the worker (needs torch and diffusers). Empty: the "
            "managed worker environment that the Set Up button creates"
        ),
        subtype="FILE_PATH",
        default="",
    )
    worker_command: StringProperty(
        name="Worker Command",
        description=(
            "A command that runs the worker elsewhere, speaking the protocol on its stdin and "
            "stdout, e.g. ssh gpu-box ~/shape-e/bin/python -m shape_e_blender.worker. Results "
            "come back through it and are kept in the local jobs folder (Re-mesh needs the "
            "local worker). "
            "Empty: the local worker"
        ),
        default="",
    )
    env_dir: StringProperty(
        name="Environment Folder",
        description=(
            "Where the managed worker environment goes. Empty: the extension's user folder, "
            "which Blender deletes when the extension is uninstalled"
        ),
        subtype="DIR_PATH",
        default="",
    )
    text_model: prop(
        "model",
        panel=True,
        name="Text Model",
        description="Hugging Face repo id or local folder of the text-to-3D pipeline",
        default=DEFAULT_TEXT_MODEL,
    )
    image_model: prop(
        "model",
        panel=True,
        name="Image Model",
        description="Hugging Face repo id or local folder of the image-to-3D pipeline",
        default=DEFAULT_IMAGE_MODEL,
    )
    device: prop("device", panel=True)
    precision: prop("precision", panel=True)
    keep_alive: BoolProperty(
        name="Keep Worker Running",
        description=(
            "Keep the worker and its models loaded between generations (fast). Off: stop it "
            "after each job, freeing its memory"
        ),
        default=True,
    )
    preload: BoolProperty(
        name="Load Models in Advance",
        description=(
            "When the Shap-E panel is first drawn, start the worker and load the model that "
            "Generate will use, in the background, so that the first Generate does not wait for "
            "them. Only models already on disk; never in background mode"
        ),
        default=True,
    )
    silence_timeout: IntProperty(
        name="Silence Timeout (s)",
        description=(
            "Stop the worker when it has said nothing for this many seconds while a job runs "
            "(every stage reports progress far more often), and report the job as failed with "
            "the end of the worker's log. 0: wait forever"
        ),
        default=int(SILENCE_TIMEOUT_S),
        min=0,
        soft_max=3600,
    )
    jobs_dir: StringProperty(
        name="Jobs Folder",
        description=(
            "Where job folders (requests, meshes, logs) go. Empty: the extension's user "
            "folder, which Blender deletes when the extension is uninstalled"
        ),
        subtype="DIR_PATH",
        default="",
    )
    asset_library: StringProperty(
        name="Asset Library",
        description=(
            "Mark as Asset also saves each asset here, as its own .blend: add this folder in "
            "Preferences > File Paths > Asset Libraries to see them in every file. Empty: the "
            "assets stay in the current file"
        ),
        subtype="DIR_PATH",
        options=compat.BLEND_RELATIVE_PATH,
        default="",
    )
    asset_catalog: StringProperty(
        name="Asset Catalog",
        description="The catalog saved assets go into, e.g. Shap-E/Props (empty: none)",
        default="Shap-E",
    )

    def draw(self, context: bpy.types.Context) -> None:
        draw_preferences(self, self.layout)


def draw_preferences(p: ShapEPreferences, layout: bpy.types.UILayout) -> None:
    compat.draw_too_old(layout)
    online = bpy.app.online_access

    box = layout.box()
    box.label(text="Worker", icon="CONSOLE")
    box.prop(p, "worker_command")
    if not p.worker_command.strip():  # else the command is the worker: no local environment
        box.prop(p, "worker_python")
    if not p.worker_command.strip() and not p.worker_python.strip():
        _draw_managed_env(box, p, online)
    else:
        box.operator("shape_e.check_worker", icon="CHECKMARK")
    _draw_worker_info(box, p)
    row = box.row()
    row.prop(p, "keep_alive")
    row.prop(p, "preload")
    row.operator("shape_e.release_worker", icon="X")
    box.prop(p, "silence_timeout")

    box = layout.box()
    box.label(text="Models", icon="FILE_3D")
    box.prop(p, "text_model")
    box.prop(p, "image_model")
    row = box.row()
    row.enabled = online and not tasks.busy()
    row.operator("shape_e.download_models", icon="IMPORT")
    if not online:
        box.label(text="Online access is off (Preferences > System)", icon="INFO")
    st = tasks.status
    if st.kind == "download" and st.state in ("running", "cancelling"):
        box.progress(factor=st.fraction, text=st.progress_text())
    elif st.kind == "download" and st.state == "error":
        box.label(text=st.error.splitlines()[0][:200], icon="ERROR")
        if st.hint:
            box.label(text=st.hint[:200])

    box = layout.box()
    box.label(text="Generation", icon="SETTINGS")
    row = box.row()
    row.prop(p, "device")
    row.prop(p, "precision")
    box.prop(p, "jobs_dir")
    box.prop(p, "asset_library")
    box.prop(p, "asset_catalog")


def _draw_managed_env(layout: bpy.types.UILayout, p: ShapEPreferences, online: bool) -> None:
    layout.prop(p, "env_dir")
    try:
        python = worker_python(p)
    except ShapEError as err:  # e.g. the extension's user folder cannot be resolved
        layout.label(text=err.message, icon="ERROR")
        return
    st = tasks.status
    if st.kind == "setup" and st.state in ("running", "cancelling"):
        layout.progress(factor=st.fraction, text=st.progress_text())
        if st.message:
            layout.label(text=st.message[:120])
        layout.operator("shape_e.cancel_worker_env", icon="CANCEL")
        return
    if st.kind == "setup" and st.state == "error":
        layout.label(text=st.error.splitlines()[0][:160], icon="ERROR")
        layout.label(text=st.hint[:160])
    present = is_file(python)
    layout.label(
        text=f"{'Ready' if present else 'Not set up'}: {python}",
        icon="CHECKMARK" if present else "INFO",
    )
    row = layout.row()
    row.enabled = online
    row.operator(
        "shape_e.setup_worker_env",
        text="Update Worker Environment" if present else "Set Up Worker Environment",
        icon="FILE_REFRESH",
    )
    if present:
        layout.operator("shape_e.check_worker", icon="CHECKMARK")
    if not online:
        layout.label(text="Online access is off (Preferences > System)", icon="INFO")


def _draw_worker_info(layout: bpy.types.UILayout, p: ShapEPreferences) -> None:
    info = tasks.worker_info()
    st = tasks.status
    if st.kind == "check" and st.state == "running":
        layout.label(text="Starting the worker...", icon="TIME")
    elif st.kind == "check" and st.state == "error":
        layout.label(text=st.error.splitlines()[0][:160], icon="ERROR")
        layout.label(text=st.hint[:160])
    if not info:
        return
    versions = info.get("versions", {})
    if isinstance(versions, dict):
        text = ", ".join(f"{k} {v}" for k, v in versions.items())
        layout.label(text=f"Worker: {text}"[:200], icon="INFO")
    for dev in info.get("devices", []) or []:
        if isinstance(dev, dict):
            mem = dev.get("memory_total")
            size = f", {mem / 2**30:.0f} GiB" if isinstance(mem, (int, float)) else ""
            layout.label(text=f"{dev.get('name')}: {dev.get('label', '')}{size}", icon="MEMORY")


CLASSES = (ShapEPreferences,)
