"""Where Blender's API differs between the versions this add-on supports (4.2 LTS to 5.3).

Every version check of the add-on is here, each with the versions it concerns; nothing else
compares ``bpy.app.version``. The tests run on 4.2 LTS, 4.5 LTS, 5.2 LTS and the newest release.
"""

from __future__ import annotations

from typing import Any

import bpy

MIN_VERSION = (4, 2, 0)  # blender_manifest.toml's blender_version_min
_MAJOR, _MINOR, _PATCH = bpy.app.version
VERSION = (_MAJOR, _MINOR, _PATCH)

# EEVEE's engine id: BLENDER_EEVEE_NEXT in 4.2 to 4.5, BLENDER_EEVEE again from 5.0.
EEVEE = "BLENDER_EEVEE_NEXT" if VERSION < (5, 0, 0) else "BLENDER_EEVEE"
# 5.0 split the output format into a media type (image, multilayer, video) and a file format.
HAS_MEDIA_TYPE = VERSION >= (5, 0, 0)
# A path property that may hold "//" (relative to the .blend) says so from 4.5 on, which warns
# when one is set without it; 4.2 does not know the option.
BLEND_RELATIVE_PATH: set[str] = {"PATH_SUPPORTS_BLEND_RELATIVE"} if VERSION >= (4, 5, 0) else set()


def draw_too_old(layout: Any) -> bool:
    """Say in the panel or the preferences when this Blender is older than the minimum."""
    why = too_old()
    if why:
        layout.label(text=why, icon="ERROR")
    return bool(why)


def too_old() -> str:
    """Why this Blender cannot run the add-on, or "" when it can."""
    if VERSION >= MIN_VERSION:
        return ""
    have = ".".join(map(str, VERSION))
    need = ".".join(map(str, MIN_VERSION))
    return f"Shap-E needs Blender {need} or newer; this is Blender {have}"


def can_run(op: Any) -> bool:
    """``op.poll()`` for a ``bpy.ops`` operator: whether it can run in this context.

    Typed Any because fake-bpy-module's 4.2 stubs make poll's optional context argument required
    (5.2's do not), so each call would need its own ignore.
    """
    return bool(op.poll())


def use_nodes(id_block: Any) -> None:
    """Give a material or world a node tree: 5.0 always has one (and warns on use_nodes)."""
    if VERSION < (5, 0, 0):
        id_block.use_nodes = True


def image_output_settings() -> tuple[str, ...]:
    """The ImageFormatSettings fields that say what a render is saved as."""
    fields = ("file_format", "color_mode", "color_depth", "color_management")
    return ("media_type", *fields) if HAS_MEDIA_TYPE else fields
