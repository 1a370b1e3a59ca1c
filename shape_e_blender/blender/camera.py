"""The active camera's view as an RGBA PNG, the input of the image model.

The render uses Cycles with few samples: it shows the user's own materials and lights (Workbench
ignores material nodes), needs no GPU, and starts at once, where EEVEE first compiles its shaders
(measured here on software OpenGL: 3.7 s for Cycles at 512 px and 16 samples, 25 s for EEVEE).
Every render setting it changes is put back afterwards, also when the render fails.

Main thread only. The render blocks Blender for a moment: the caller says so in the status bar.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import bpy

from ..core.errors import INVALID_PARAMS, ShapEError
from . import compat

RESOLUTION_RANGE = (16, 4096)
SAMPLES = 16
# The first one this Blender has wins (Cycles is an add-on that can be disabled).
ENGINES = ("CYCLES", compat.EEVEE, "BLENDER_WORKBENCH")
# Object types that never show up as pixels but light the scene: they stay in the render.
_KEEP_TYPES = {"LIGHT", "LIGHT_PROBE", "LIGHTPROBE", "CAMERA", "SPEAKER"}


class _Settings:
    """Remembers properties before they change, and puts them back in the order they were saved.

    All originals are read before anything changes: switching the file format first would
    otherwise already have altered the colour depth that is saved next.
    """

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def save(self, owner: Any, *attrs: str) -> None:
        self._saved.extend((owner, attr, getattr(owner, attr)) for attr in attrs)

    def restore(self) -> None:
        for owner, attr, value in self._saved:
            setattr(owner, attr, value)


def render_file_name(camera_name: str) -> str:
    """The render's file name in the job folder: "<camera> view.png", safe on every system.

    Characters that Windows, macOS or Linux refuse in a file name become "_" (which the object
    name reads as a space).
    """
    safe = re.sub(r'[<>:"/\\|?*\x00-\x1f]', "_", camera_name).strip(" .")[:60] or "Camera"
    return f"{safe} view.png"


def render_camera_image(
    context: bpy.types.Context, path: str | Path, *, selected_only: bool, resolution: int = 512
) -> Path:
    """Render ``scene.camera`` to ``path`` (PNG, RGBA, 8 bit, transparent film).

    ``resolution`` is the long side in pixels; the camera's frame keeps its aspect. With
    ``selected_only`` every unselected object (lights excepted) is hidden from the render, so that
    floors and walls don't become part of the object.
    """
    scene = context.scene
    if scene.camera is None:
        raise ShapEError(
            INVALID_PARAMS,
            "the scene has no active camera",
            "add a camera or set one active (Scene properties > Camera)",
            "camera",
        )
    if not RESOLUTION_RANGE[0] <= resolution <= RESOLUTION_RANGE[1]:
        raise ShapEError(
            INVALID_PARAMS,
            f"resolution {resolution} is outside {RESOLUTION_RANGE[0]}..{RESOLUTION_RANGE[1]}",
            "512 px is plenty: the image model looks at 224 px",
            "resolution",
        )
    view_layer = context.view_layer
    hidden: list[bpy.types.Object] = []
    if selected_only:
        if not any(o.select_get(view_layer=view_layer) for o in scene.objects):
            raise ShapEError(
                INVALID_PARAMS,
                "nothing is selected, so nothing would be rendered",
                "select the object to capture, or turn off 'Selected only'",
                "selected_only",
            )
        hidden = [
            o
            for o in scene.objects
            if o.type not in _KEEP_TYPES
            and not o.select_get(view_layer=view_layer)
            and not o.hide_render
        ]

    render = scene.render
    image = render.image_settings
    settings = _Settings()
    settings.save(render, "engine")
    if hasattr(scene, "cycles"):  # absent when the Cycles add-on is disabled
        settings.save(scene.cycles, "samples", "use_denoising")
    settings.save(scene.eevee, "taa_render_samples")
    settings.save(
        render,
        "resolution_x",
        "resolution_y",
        "resolution_percentage",
        "pixel_aspect_x",
        "pixel_aspect_y",
        "film_transparent",
        "use_border",
        "use_compositing",
        "use_sequencer",
    )
    settings.save(scene.view_settings, "view_transform", "look")
    settings.save(image, *compat.image_output_settings())
    for obj in hidden:
        settings.save(obj, "hide_render")

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _use_first_engine(render)
        if hasattr(scene, "cycles"):
            scene.cycles.samples = SAMPLES
            scene.cycles.use_denoising = False
        scene.eevee.taa_render_samples = SAMPLES
        width, height = _frame_size(render, resolution)
        render.resolution_x, render.resolution_y = width, height
        render.resolution_percentage = 100
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
        render.film_transparent = True
        render.use_border = False
        # The compositor and the sequencer could put anything over the camera's view.
        render.use_compositing = False
        render.use_sequencer = False
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        if compat.HAS_MEDIA_TYPE:
            image.media_type = "IMAGE"
        # save_render writes in the scene's output format: a JPEG setting gave 3 channels.
        image.file_format = "PNG"
        image.color_mode = "RGBA"
        image.color_depth = "8"
        image.color_management = "FOLLOW_SCENE"
        for obj in hidden:
            obj.hide_render = True
        _render_still(context)
        result = next(i for i in bpy.data.images if i.type == "RENDER_RESULT")
        result.save_render(filepath=str(out), scene=scene)
    finally:
        settings.restore()
    return out


def _render_still(context: bpy.types.Context) -> None:
    if compat.can_run(bpy.ops.render.render):
        bpy.ops.render.render(write_still=False)
        return
    # A timer callback has no window in its context, where render.render refuses to run.
    window = context.window_manager.windows[0]
    with context.temp_override(window=window, screen=window.screen):  # type: ignore[attr-defined, unused-ignore]  # 4.2's stubs: not a context manager
        bpy.ops.render.render(write_still=False)


def _use_first_engine(render: bpy.types.RenderSettings) -> None:
    # The engine list is dynamic (add-ons register engines), so try them in turn.
    for engine in ENGINES:
        try:
            # The ids differ between versions (compat.EEVEE); the stubs know one version's.
            render.engine = engine  # type: ignore[assignment]
        except TypeError:
            continue
        return


def _frame_size(render: bpy.types.RenderSettings, long_side: int) -> tuple[int, int]:
    """Pixel size with square pixels and the camera frame's aspect (pixel aspect included)."""
    width = render.resolution_x * render.pixel_aspect_x
    height = render.resolution_y * render.pixel_aspect_y
    if width >= height:
        return long_side, max(1, round(long_side * height / width))
    return max(1, round(long_side * width / height)), long_side
