"""Variant labels in the 3D viewport: under each object of a job that made several variants, its
number and seed ("2 · seed 43"), so that an artist can tell a row of variants apart, keep one and
make it again.

They are an overlay (a draw handler with blf), not text objects: nothing is added to the scene, so
nothing is rendered, exported, listed by scripts or left behind when a variant is deleted, and
files saved before show them too. The viewport's Overlays toggle hides them with the others.
"""

from __future__ import annotations

from typing import Any

import blf
import bpy
from bpy_extras.view3d_utils import location_3d_to_region_2d
from mathutils import Vector

from . import importer

FONT = 0  # Blender's default font
SIZE_PX = 12  # at a resolution scale of 1
_handle: Any = None


def label_text(settings: dict[str, Any]) -> str:
    """A variant's label, or "" for an object that is not one of several variants."""
    count, variant = settings.get("variants"), settings.get("variant")
    if not isinstance(count, int) or count < 2 or not isinstance(variant, int):
        return ""
    seed = settings.get("seed")
    return f"{variant} · seed {seed}" if seed is not None else str(variant)


def labels(context: bpy.types.Context) -> list[tuple[str, Vector]]:
    """Each visible variant's label and where it goes: the middle of its front bottom edge (the
    variants stand in a row along X, the view looks at their fronts from -Y)."""
    out = []
    for obj in context.view_layer.objects:
        settings = importer.settings_of(obj)
        text = label_text(settings) if settings is not None and obj.visible_get() else ""
        if not text:
            continue
        corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
        xs, ys, zs = ([c[i] for c in corners] for i in range(3))
        out.append((text, Vector(((min(xs) + max(xs)) / 2, min(ys), min(zs)))))
    return out


def draw() -> None:
    """The draw handler (POST_PIXEL in each 3D viewport's main region)."""
    context = bpy.context
    region, view = context.region, context.region_data
    space = context.space_data
    overlay = getattr(space, "overlay", None)
    if region is None or view is None or (overlay is not None and not overlay.show_overlays):
        return
    blf.size(FONT, SIZE_PX * context.preferences.system.ui_scale)
    for text, anchor in labels(context):
        xy = location_3d_to_region_2d(region, view, anchor)
        if xy is None:  # behind the view
            continue
        # 4.2's stubs say dimensions() returns None; it returns (width, height).
        size: tuple[float, float] = blf.dimensions(FONT, text)  # type: ignore[func-returns-value, assignment, unused-ignore]
        width, height = size
        blf.position(FONT, xy.x - width / 2, xy.y - height - 6, 0)
        blf.draw(FONT, text)


def register() -> None:
    global _handle
    if _handle is None:
        _handle = bpy.types.SpaceView3D.draw_handler_add(draw, (), "WINDOW", "POST_PIXEL")


def unregister() -> None:
    global _handle
    if _handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handle, "WINDOW")
        _handle = None
