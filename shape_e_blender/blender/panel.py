"""The 3D viewport sidebar panel (tab "Shap-E") and its Recent Jobs list: drawing only (the
operators behind the buttons are in operators/)."""

from __future__ import annotations

import sys
import textwrap
import time
import traceback
from typing import TYPE_CHECKING, Any

import bpy

from ..core import jobdir
from ..core.errors import ShapEError
from . import compat, history, importer, preload, tasks
from .props import guidance_name

if TYPE_CHECKING:  # fake-bpy-module's literal types, for `python build.py lint`
    from bpy.stub_internal.rna_enums import IconItems

RECENT_SHOWN = 8  # jobs listed in the panel; the jobs folder holds the rest
STATE_ICONS: dict[str, IconItems] = {
    jobdir.DONE: "CHECKMARK",
    jobdir.FAILED: "ERROR",
    jobdir.CANCELLED: "CANCEL",
    jobdir.RUNNING: "TIME",
    jobdir.INTERRUPTED: "QUESTION",
}
_draw_failures: set[str] = set()  # errors reading the list, printed once each


class _Sidebar:
    """Where the add-on's panels live: the 3D viewport's sidebar (N), tab "Shap-E"."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Shap-E"


class SHAPE_E_PT_panel(_Sidebar, bpy.types.Panel):
    bl_idname = "SHAPE_E_PT_panel"
    bl_label = "Shap-E"

    def draw(self, context: bpy.types.Context) -> None:
        draw_panel(self.layout, context)  # type: ignore[arg-type]  # set while it draws


def draw_panel(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    compat.draw_too_old(layout)
    preload.maybe_start(context)
    s = context.scene.shape_e
    st = tasks.status
    running = tasks.busy()

    col = layout.column()
    col.enabled = not running
    col.prop(s, "source", text="")
    if s.source == "TEXT":
        col.prop(s, "prompt", text="")
    elif s.source == "IMAGE":
        col.prop(s, "image_path", text="")
    else:
        cam = context.scene.camera
        col.label(
            text=f"Camera: {cam.name}" if cam else "No active camera",
            icon="CAMERA_DATA" if cam else "ERROR",
        )
        col.prop(s, "selected_only")

    row = col.row(align=True)
    sub = row.row(align=True)
    sub.enabled = not s.random_seed
    sub.prop(s, "seed")
    row.prop(s, "random_seed", text="", icon="FILE_REFRESH")
    col.prop(s, guidance_name(s))
    col.prop(s, "steps")
    col.prop(s, "variants")
    col.prop(s, "grid_size")
    col.prop(s, "faces")
    col.prop(s, "texture_size")
    col.prop(s, "size")
    col.prop(s, "mark_asset")

    row = layout.row(align=True)
    row.scale_y = 1.4
    sub = row.row(align=True)
    sub.enabled = not running
    sub.operator("shape_e.generate", icon="SHADERFX")
    sub = row.row(align=True)
    sub.enabled = running and st.kind in ("generate", "download", "scene")
    sub.operator("shape_e.cancel", text="", icon="CANCEL")
    row = layout.row()
    row.enabled = not running
    row.operator("shape_e.build_scene", icon="SCENE_DATA")

    if st.state in ("running", "cancelling"):
        layout.progress(factor=st.fraction, type="BAR", text=st.progress_text())
    elif st.state == "done":
        layout.label(text=st.message[:200], icon="CHECKMARK")
        if st.timings:
            layout.label(text=st.timings_text()[:200], icon="TIME")
        if st.warnings:
            col = layout.box().column(align=True)
            width = max(24, int(context.region.width / 7)) if context.region else 48
            for warning in st.warnings[:4]:
                _wrapped(col, warning, "ERROR", width, max_lines=4)
    elif st.state == "cancelled":
        layout.label(text="Cancelled", icon="CANCEL")
    elif st.state == "error":
        col = layout.box().column(align=True)
        # Labels do not wrap; about 7 pixels per character keeps lines inside the sidebar.
        width = max(24, int(context.region.width / 7)) if context.region else 48
        _wrapped(col, st.error, "ERROR", width, max_lines=8)
        if st.hint:
            _wrapped(col, st.hint, "INFO", width, max_lines=4)

    if warming := preload.progress():
        layout.label(text=warming, icon="TIME")

    draw_active_object(layout, context)


def draw_active_object(layout: bpy.types.UILayout, context: bpy.types.Context) -> bool:
    """The active Shap-E object's settings and its Re-mesh button; False when there is none."""
    obj = context.active_object
    settings = importer.settings_of(obj)
    if settings is None:
        return False
    box = layout.box()
    col = box.column(align=True)
    col.label(text=f"Active object: {obj.name}", icon="OBJECT_DATA")
    col.label(text=source_text(settings)[:60])
    seed, grid = settings.get("seed"), settings.get("grid_size")
    faces, texture = settings.get("faces"), settings.get("texture_size")
    details = ([f"Seed {seed}"] if seed is not None else []) + (
        [f"Grid {grid}"] if grid is not None else []
    )
    details += [f"{faces} faces"] if faces else []
    details += [f"Texture {texture}"] if texture else []
    if details:
        col.label(text=", ".join(details))
    row = box.row(align=True)
    row.enabled = not tasks.busy()
    row.prop(context.scene.shape_e, "remesh_grid_size", text="Grid")
    op = row.operator("shape_e.remesh", icon="MOD_REMESH")
    op.grid_size = context.scene.shape_e.remesh_grid_size
    op.object_name = obj.name
    row = box.row()
    row.enabled = not tasks.busy()
    op = row.operator("shape_e.use_settings", icon="PASTEDOWN")
    op.object_name = obj.name
    row = box.row(align=True)
    row.enabled = not tasks.busy()
    row.operator("shape_e.keep_variant", icon="CHECKMARK").object_name = obj.name
    row.operator("shape_e.mark_asset", icon="ASSET_MANAGER").object_name = obj.name
    other = next(
        (o for o in context.selected_objects if o != obj and importer.settings_of(o)), None
    )
    if other is not None:  # two Shap-E objects selected: blend them
        row = box.row(align=True)
        row.enabled = not tasks.busy()
        op = row.operator("shape_e.blend_shapes", icon="MOD_SMOOTH")
        op.object_a, op.object_b = obj.name, other.name
    return True


def source_text(settings: dict[str, Any]) -> str:
    """What an object was generated from, in a few words."""
    for key, label in (("prompt", "Prompt"), ("image", "Image"), ("latent", "Latent")):
        value = settings.get(key)
        if isinstance(value, str) and value:
            shown = value if key == "prompt" else jobdir.file_name(value)
            return f"{label}: {shown}"
    return "Source: unknown"


class SHAPE_E_PT_recent(_Sidebar, bpy.types.Panel):
    """The last jobs in the jobs folder: import a finished one again, or open its folder."""

    bl_idname = "SHAPE_E_PT_recent"
    bl_label = "Recent Jobs"
    bl_parent_id = SHAPE_E_PT_panel.bl_idname
    bl_options = {"DEFAULT_CLOSED"}  # closed, it costs no folder scan

    def draw(self, context: bpy.types.Context) -> None:
        draw_recent(self.layout, context)  # type: ignore[arg-type]  # set while it draws


def draw_recent(layout: bpy.types.UILayout, context: bpy.types.Context) -> int:
    """The recent jobs list; returns how many jobs it shows. Reading the folder never raises
    here: an unexpected error is printed (once) and shown as a line, not a half-drawn sidebar."""
    width = max(24, int(context.region.width / 7)) if context.region else 48
    try:
        root, found = history.recent(context)
    except ShapEError as err:  # the jobs folder preference cannot be used
        _wrapped(layout.column(align=True), str(err), "ERROR", width, max_lines=6)
        return 0
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if text not in _draw_failures:
            _draw_failures.add(text)
            print("shape_e: reading the recent jobs failed:", file=sys.stderr)
            traceback.print_exc()
        _wrapped(layout.column(align=True), text, "ERROR", width, max_lines=4)
        return 0
    if not found:
        layout.label(text="No jobs yet", icon="INFO")
    now = time.time()
    for job in found[:RECENT_SHOWN]:
        col = layout.box().column(align=True)
        row = col.row(align=True)
        row.label(text=job.label[:60] or job.path.name, icon=STATE_ICONS.get(job.state, "DOT"))
        if job.importable:
            op = row.operator("shape_e.import_job", text="", icon="IMPORT")
            op.job_dir = str(job.path)
        row.operator("wm.path_open", text="", icon="FILE_FOLDER").filepath = str(job.path)
        details = history.details(job)
        when = f"{job.state.capitalize()}, {history.age_text(job.started, now)}"
        col.label(text=f"{when}: {details}" if details else when)
        if job.message:
            _wrapped(col, job.message, "BLANK1", width, max_lines=3)
    row = layout.row()
    if len(found) > RECENT_SHOWN:
        row.label(text="Older jobs:")
    row.operator("wm.path_open", text="Open Jobs Folder", icon="FILE_FOLDER").filepath = str(root)
    return min(len(found), RECENT_SHOWN)


def _wrapped(
    layout: bpy.types.UILayout, text: str, icon: IconItems, width: int, max_lines: int
) -> None:
    lines = [w for part in text.splitlines() for w in textwrap.wrap(part, width) or [""]]
    for i, line in enumerate(lines[:max_lines]):
        layout.label(text=line, icon=icon if i == 0 else "BLANK1")


CLASSES = (SHAPE_E_PT_panel, SHAPE_E_PT_recent)
