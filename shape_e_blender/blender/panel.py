"""The 3D viewport sidebar panel (tab "Shap-E"), its Generate button, and the Recent Jobs list."""

from __future__ import annotations

import random
import sys
import textwrap
import time
import traceback
from pathlib import PurePath
from typing import Any, ClassVar

import bpy

from ..core.errors import ShapEError
from ..core.params import SEED_MAX
from . import history, importer, jobs, operators

RECENT_SHOWN = 8  # jobs listed in the panel; the jobs folder holds the rest
STATE_ICONS = {
    history.DONE: "CHECKMARK",
    history.FAILED: "ERROR",
    history.CANCELLED: "CANCEL",
    history.RUNNING: "TIME",
    history.INTERRUPTED: "QUESTION",
}
_draw_failures: set[str] = set()  # errors reading the list, printed once each


class SHAPE_E_OT_generate(bpy.types.Operator):
    """Generate from the panel's settings (picks a new seed first when Random Seed is on)"""

    bl_idname = "shape_e.generate"
    bl_label = "Generate"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        s = context.scene.shape_e
        if jobs.busy():
            self.report({"ERROR"}, jobs.BUSY_MESSAGE)
            return {"CANCELLED"}
        if s.random_seed:
            # Chosen here, before the operator runs, and kept in the panel so it can be reused.
            s.seed = random.randint(0, SEED_MAX)
        common = {"seed": s.seed, "steps": s.steps, "grid_size": s.grid_size}
        common["variants"] = s.variants
        if s.source == "TEXT":
            return bpy.ops.shape_e.text_to_mesh(
                prompt=s.prompt, guidance_scale=s.text_guidance_scale, **common
            )
        if s.source == "IMAGE":
            return bpy.ops.shape_e.image_to_mesh(
                "EXEC_DEFAULT",
                filepath=s.image_path,
                guidance_scale=s.image_guidance_scale,
                **common,
            )
        return bpy.ops.shape_e.camera_to_mesh(
            selected_only=s.selected_only and bool(context.selected_objects),
            guidance_scale=s.image_guidance_scale,
            **common,
        )


class SHAPE_E_OT_use_settings(bpy.types.Operator):
    """Put a Shap-E object's prompt or image, seed and settings into the panel, with Random Seed
    off: Generate then makes that object again, or a variation once something is changed"""

    bl_idname = "shape_e.use_settings"
    bl_label = "Use These Settings"
    bl_options: ClassVar[set[str]] = {"REGISTER", "UNDO"}  # the panel's settings live in the file

    object_name: bpy.props.StringProperty(
        name="Object",
        description="The Shap-E object to take the settings from; empty: the active object",
        default="",
        options={"SKIP_SAVE"},
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        name = self.object_name.strip()
        obj = bpy.data.objects.get(name) if name else context.active_object
        settings = importer.settings_of(obj)
        if settings is None:
            which = repr(name) if name else "the active object"
            self.report({"ERROR"}, f"object_name: {which} was not made by Shap-E")
            return {"CANCELLED"}
        s = context.scene.shape_e
        prompt, image = settings.get("prompt"), settings.get("image")
        guidance = settings.get("guidance_scale")
        if isinstance(prompt, str) and prompt:
            s.source, s.prompt = "TEXT", prompt
            if isinstance(guidance, (int, float)):
                s.text_guidance_scale = guidance
        elif isinstance(image, str) and image:
            # A camera job's render is kept in its job folder: generating from it repeats the job.
            s.source, s.image_path = "IMAGE", image
            if isinstance(guidance, (int, float)):
                s.image_guidance_scale = guidance
        else:
            self.report(
                {"ERROR"},
                f"{obj.name!r} was made from a latent file, not a prompt or an image: there is "
                "nothing to generate from (Re-mesh decodes its latent again)",
            )
            return {"CANCELLED"}
        for key in ("seed", "steps", "grid_size"):
            value = settings.get(key)
            if isinstance(value, int):
                setattr(s, key, value)
        # The object's seed is its own variant's (seed + i): one variant remakes exactly it.
        s.variants = 1
        s.random_seed = False
        self.report({"INFO"}, f"Settings of {obj.name} are in the panel (Random Seed off)")
        return {"FINISHED"}


class SHAPE_E_PT_panel(bpy.types.Panel):
    bl_idname = "SHAPE_E_PT_panel"
    bl_label = "Shap-E"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Shap-E"

    def draw(self, context: bpy.types.Context) -> None:
        draw_panel(self.layout, context)


def draw_panel(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    s = context.scene.shape_e
    st = jobs.status
    running = jobs.busy()

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
    col.prop(s, "text_guidance_scale" if s.source == "TEXT" else "image_guidance_scale")
    col.prop(s, "steps")
    col.prop(s, "variants")
    col.prop(s, "grid_size")

    row = layout.row(align=True)
    row.scale_y = 1.4
    sub = row.row(align=True)
    sub.enabled = not running
    sub.operator(SHAPE_E_OT_generate.bl_idname, icon="SHADERFX")
    sub = row.row(align=True)
    sub.enabled = running and st.kind in ("generate", "download")
    sub.operator(operators.SHAPE_E_OT_cancel.bl_idname, text="", icon="CANCEL")

    if st.state in ("running", "cancelling"):
        layout.progress(factor=st.fraction, type="BAR", text=st.progress_text())
    elif st.state == "done":
        layout.label(text=st.message[:200], icon="CHECKMARK")
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
    details = ([f"Seed {seed}"] if seed is not None else []) + (
        [f"Grid {grid}"] if grid is not None else []
    )
    if details:
        col.label(text=", ".join(details))
    row = box.row(align=True)
    row.enabled = not jobs.busy()
    row.prop(context.scene.shape_e, "remesh_grid_size", text="Grid")
    op = row.operator(operators.SHAPE_E_OT_remesh.bl_idname, icon="MOD_REMESH")
    op.grid_size = context.scene.shape_e.remesh_grid_size
    op.object_name = obj.name
    row = box.row()
    row.enabled = not jobs.busy()
    op = row.operator(SHAPE_E_OT_use_settings.bl_idname, icon="PASTEDOWN")
    op.object_name = obj.name
    return True


def source_text(settings: dict[str, Any]) -> str:
    """What an object was generated from, in a few words."""
    for key, label in (("prompt", "Prompt"), ("image", "Image"), ("latent", "Latent")):
        value = settings.get(key)
        if isinstance(value, str) and value:
            shown = value if key == "prompt" else PurePath(value.replace("\\", "/")).name
            return f"{label}: {shown}"
    return "Source: unknown"


class SHAPE_E_PT_recent(bpy.types.Panel):
    """The last jobs in the jobs folder: import a finished one again, or open its folder."""

    bl_idname = "SHAPE_E_PT_recent"
    bl_label = "Recent Jobs"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Shap-E"
    bl_parent_id = SHAPE_E_PT_panel.bl_idname
    bl_options: ClassVar[set[str]] = {"DEFAULT_CLOSED"}  # closed, it costs no folder scan

    def draw(self, context: bpy.types.Context) -> None:
        draw_recent(self.layout, context)


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
            op = row.operator(operators.SHAPE_E_OT_import_job.bl_idname, text="", icon="IMPORT")
            op.job_dir = str(job.path)
        row.operator("wm.path_open", text="", icon="FILE_FOLDER").filepath = str(job.path)
        details = job.details()
        when = f"{job.state.capitalize()}, {history.age_text(job.started, now)}"
        col.label(text=f"{when}: {details}" if details else when)
        if job.message:
            _wrapped(col, job.message, "BLANK1", width, max_lines=3)
    row = layout.row()
    if len(found) > RECENT_SHOWN:
        row.label(text="Older jobs:")
    row.operator("wm.path_open", text="Open Jobs Folder", icon="FILE_FOLDER").filepath = str(root)
    return min(len(found), RECENT_SHOWN)


def _wrapped(layout: bpy.types.UILayout, text: str, icon: str, width: int, max_lines: int) -> None:
    lines = [w for part in text.splitlines() for w in textwrap.wrap(part, width) or [""]]
    for i, line in enumerate(lines[:max_lines]):
        layout.label(text=line, icon=icon if i == 0 else "BLANK1")


CLASSES = (SHAPE_E_OT_generate, SHAPE_E_OT_use_settings, SHAPE_E_PT_panel, SHAPE_E_PT_recent)
