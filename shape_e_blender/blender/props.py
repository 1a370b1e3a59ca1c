"""Blender properties built from core's table of generation fields, and the panel's settings.

``prop(name)`` turns a ``core.params.Setting`` into a ``bpy.props`` property with the table's
label, description, default, range and enum values, so a field is declared once for the protocol,
the CLIs and Blender. Operators take their generation fields with ``generation_properties``.

The panel's settings are stored on the scene (``scene.shape_e``) and saved with the file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from ..core.mesh import SIZE_HELP, SIZE_MAX
from ..core.params import SETTINGS, Setting

if TYPE_CHECKING:  # fake-bpy-module's literal types, for `python build.py lint`
    from bpy.stub_internal.rna_enums import PropertyFlagItems

SKIP_SAVE: set[PropertyFlagItems] = {"SKIP_SAVE"}
SKIP_SAVE_HIDDEN: set[PropertyFlagItems] = {"SKIP_SAVE", "HIDDEN"}
_KINDS: dict[type, Callable[..., Any]] = {
    int: IntProperty,
    float: FloatProperty,
    str: StringProperty,
}


def enum_items(setting: Setting) -> list[tuple[str, str, str]]:
    """A setting's choices as EnumProperty items: upper-case identifiers (AUTO, CUDA, ...)."""
    return [(c.identifier, c.label, c.description) for c in setting.choices]


def prop(setting: str, /, *, panel: bool = False, mode: str = "", **overrides: Any) -> Any:
    """The ``bpy.props`` property for the setting named ``setting``.

    ``panel``: hard limits from the table's range, for a stored setting. Otherwise (an operator's
    property) soft limits only: Blender would clamp a bad value silently, while
    GenerationParams.create refuses it with the field named, and the value is not remembered
    between calls (a script gets exactly what it passes). ``mode`` picks a mode's default
    (guidance: 15 for text, 3 for images). ``overrides`` go to the property as they are.
    """
    s = SETTINGS[setting]
    kwargs: dict[str, Any] = {"name": s.label, "description": s.description}
    default = s.default_for(mode)
    if s.choices:
        factory: Callable[..., Any] = EnumProperty
        kwargs["items"] = enum_items(s)
        kwargs["default"] = str(default).upper()
    else:
        factory = _KINDS[s.kind]
        if default is not None:
            kwargs["default"] = s.kind(default)
        if s.range is not None:
            lo, hi = s.range
            kwargs.update({"min": lo, "max": hi} if panel else {"soft_min": lo, "soft_max": hi})
            if panel and s.soft_max is not None:
                kwargs["soft_max"] = s.soft_max
    if not panel:
        kwargs["options"] = SKIP_SAVE
    kwargs.update(overrides)
    return factory(**kwargs)


def generation_properties(names: Iterable[str], **per_name: Mapping[str, Any]) -> Callable:
    """A class decorator that adds the operator properties of these settings.

    ``per_name`` gives a setting's prop() arguments, e.g. ``guidance_scale={"mode": "text"}``.
    Properties the class declares itself win.
    """

    def add(cls: type) -> type:
        own = inspect.get_annotations(cls)  # the class's own, not its bases'

        cls.__annotations__ = {n: prop(n, **per_name.get(n, {})) for n in names} | own
        return cls

    return add


def size_property(*, panel: bool = False) -> Any:
    """``size``: metres of the largest dimension, applied as the object's scale (not in the job
    key: resizing regenerates nothing)."""
    # An operator's is checked by core.mesh.check_size, which names it: Blender would clamp a
    # negative size to 0 silently.
    kwargs: dict[str, Any] = {"min": 0.0, "max": SIZE_MAX} if panel else {"options": SKIP_SAVE}
    return FloatProperty(
        name="Size",
        description=f"Scale each object to this largest dimension, in {SIZE_HELP}",
        default=0.0,
        soft_min=0.0,
        soft_max=10.0,
        subtype="DISTANCE",
        unit="LENGTH",
        **kwargs,
    )


def mark_asset_property(*, panel: bool = False) -> Any:
    kwargs: dict[str, Any] = {} if panel else {"options": SKIP_SAVE}
    return BoolProperty(
        name="Mark as Asset",
        description="Mark each new object as an asset: the prompt as its description and tags, "
        "the seed and model in its metadata, a preview; saved into the preferences' asset "
        "library folder when one is set",
        default=False,
        **kwargs,
    )


SOURCE_ITEMS = [
    ("TEXT", "Text", "Generate from a text prompt", "FONT_DATA", 0),
    (
        "CAMERA",
        "Active Camera",
        "Render the active camera's view and generate from it",
        "CAMERA_DATA",
        1,
    ),
    (
        "IMAGE",
        "Image File",
        "Generate from an image of one object on a plain background",
        "IMAGE_DATA",
        2,
    ),
]
# What the panel's Generate passes on to the operators, under the same names (guidance_scale is
# per source: text_guidance_scale, image_guidance_scale).
PANEL_SETTINGS = ("seed", "steps", "grid_size", "variants", "faces", "texture_size")
REMESH_GRID = 256  # re-meshing is for refining a shape made at a lower resolution


class ShapESettings(bpy.types.PropertyGroup):
    source: EnumProperty(name="Source", items=SOURCE_ITEMS, default="TEXT")
    prompt: prop("prompt", panel=True)
    image_path: prop("image", panel=True, subtype="FILE_PATH")
    selected_only: BoolProperty(
        name="Selected Objects Only",
        description=(
            "When something is selected, render only the selected objects, so that floors and "
            "walls stay out of the generated shape"
        ),
        default=True,
    )
    seed: prop("seed", panel=True)
    random_seed: BoolProperty(
        name="Random Seed",
        description="Pick a new seed for each generation (the seed used is kept above)",
        default=True,
    )
    text_guidance_scale: prop("guidance_scale", panel=True, mode="text")
    image_guidance_scale: prop("guidance_scale", panel=True, mode="image")
    steps: prop("steps", panel=True)
    variants: prop("variants", panel=True)
    grid_size: prop("grid_size", panel=True)
    faces: prop("faces", panel=True)
    texture_size: prop("texture_size", panel=True)
    size: size_property(panel=True)
    mark_asset: mark_asset_property(panel=True)
    remesh_grid_size: prop(
        "grid_size",
        panel=True,
        name="Re-mesh Resolution",
        description=(
            "Grid size per axis when re-meshing the active Shap-E object from its saved latent "
            "(no sampling: generate at a low resolution, refine the one you like)"
        ),
        default=REMESH_GRID,
    )


def guidance_name(settings: ShapESettings) -> str:
    """The panel's guidance property for its current source.

    A function, not a method: a PropertyGroup with a method of its own crashed Blender 4.2 at
    exit (measured with bpy 4.2.0).
    """
    return "text_guidance_scale" if settings.source == "TEXT" else "image_guidance_scale"


CLASSES = (ShapESettings,)


def attach() -> None:
    # The stubs know not our attribute, and 4.2's that PointerProperty returns its definition.
    bpy.types.Scene.shape_e = bpy.props.PointerProperty(type=ShapESettings)  # type: ignore[attr-defined, func-returns-value, unused-ignore]


def detach() -> None:
    if hasattr(bpy.types.Scene, "shape_e"):
        del bpy.types.Scene.shape_e
