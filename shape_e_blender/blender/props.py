"""The panel's settings, stored on the scene (``scene.shape_e``) and saved with the file."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from ..core.params import (
    DEFAULT_GRID,
    DEFAULT_STEPS,
    GRID_RANGE,
    GUIDANCE_RANGE,
    IMAGE_GUIDANCE,
    SEED_MAX,
    STEPS_RANGE,
    TEXT_GUIDANCE,
    VARIANTS_RANGE,
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


class ShapESettings(bpy.types.PropertyGroup):
    source: EnumProperty(name="Source", items=SOURCE_ITEMS, default="TEXT")
    prompt: StringProperty(name="Prompt", description="What to generate", default="")
    image_path: StringProperty(
        name="Image", description="Image of one object on a plain background", subtype="FILE_PATH"
    )
    selected_only: BoolProperty(
        name="Selected Objects Only",
        description=(
            "When something is selected, render only the selected objects, so that floors and "
            "walls stay out of the generated shape"
        ),
        default=True,
    )
    seed: IntProperty(name="Seed", min=0, max=SEED_MAX, default=0)
    random_seed: BoolProperty(
        name="Random Seed",
        description="Pick a new seed for each generation (the seed used is kept above)",
        default=True,
    )
    text_guidance_scale: FloatProperty(
        name="Guidance Scale",
        description="How closely to follow the prompt (15 suits text)",
        min=GUIDANCE_RANGE[0],
        max=GUIDANCE_RANGE[1],
        default=TEXT_GUIDANCE,
    )
    image_guidance_scale: FloatProperty(
        name="Guidance Scale",
        description="How closely to follow the image (3 suits images)",
        min=GUIDANCE_RANGE[0],
        max=GUIDANCE_RANGE[1],
        default=IMAGE_GUIDANCE,
    )
    steps: IntProperty(
        name="Steps",
        description="Sampling steps (64 is the paper's setting; fewer is faster)",
        min=STEPS_RANGE[0],
        max=STEPS_RANGE[1],
        soft_max=128,
        default=DEFAULT_STEPS,
    )
    variants: IntProperty(
        name="Variants",
        description="How many meshes to generate, side by side",
        min=VARIANTS_RANGE[0],
        max=VARIANTS_RANGE[1],
        default=1,
    )
    grid_size: IntProperty(
        name="Mesh Resolution",
        description="Grid size per axis for mesh extraction; 128 is the usual",
        min=GRID_RANGE[0],
        max=GRID_RANGE[1],
        soft_max=256,
        default=DEFAULT_GRID,
    )
    remesh_grid_size: IntProperty(
        name="Re-mesh Resolution",
        description=(
            "Grid size per axis when re-meshing the active Shap-E object from its saved latent "
            "(no sampling: generate at a low resolution, refine the one you like)"
        ),
        min=GRID_RANGE[0],
        max=GRID_RANGE[1],
        default=2 * DEFAULT_GRID,
    )


CLASSES = (ShapESettings,)


def attach() -> None:
    bpy.types.Scene.shape_e = bpy.props.PointerProperty(type=ShapESettings)


def detach() -> None:
    if hasattr(bpy.types.Scene, "shape_e"):
        del bpy.types.Scene.shape_e
