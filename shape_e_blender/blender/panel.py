"""The 3D viewport sidebar panel (tab "Shap-E") and its Generate button."""

from __future__ import annotations

import random
import textwrap
from pathlib import PurePath
from typing import Any, ClassVar

import bpy

from ..core.params import SEED_MAX
from . import importer, jobs, operators


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
    return True


def source_text(settings: dict[str, Any]) -> str:
    """What an object was generated from, in a few words."""
    for key, label in (("prompt", "Prompt"), ("image", "Image"), ("latent", "Latent")):
        value = settings.get(key)
        if isinstance(value, str) and value:
            shown = value if key == "prompt" else PurePath(value.replace("\\", "/")).name
            return f"{label}: {shown}"
    return "Source: unknown"


def _wrapped(layout: bpy.types.UILayout, text: str, icon: str, width: int, max_lines: int) -> None:
    lines = [w for part in text.splitlines() for w in textwrap.wrap(part, width) or [""]]
    for i, line in enumerate(lines[:max_lines]):
        layout.label(text=line, icon=icon if i == 0 else "BLANK1")


CLASSES = (SHAPE_E_OT_generate, SHAPE_E_PT_panel)
