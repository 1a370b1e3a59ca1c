"""The generation operators: shape_e.text_to_mesh, image_to_mesh, camera_to_mesh, and the panel's
shape_e.generate.

Their generation properties come from core's table (props.generation_properties), under the
protocol's names, and reach GenerationParams through ``as_keywords()``: no field is mapped by
hand. ``model``, ``device`` and ``precision`` left unset take the add-on's preferences.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, StringProperty

from ...core import jobdir
from ...core.errors import invalid
from ...core.files import is_file
from ...core.mesh import check_size
from ...core.names import object_name_for
from ...core.params import SEED_MAX, SETTINGS, GenerationParams
from ...core.protocol import GenerateRequest
from .. import assets, camera, compat, finish, prefs
from ..props import (
    PANEL_SETTINGS,
    SKIP_SAVE,
    SKIP_SAVE_HIDDEN,
    generation_properties,
    guidance_name,
    mark_asset_property,
    size_property,
)
from ..tasks import Task
from .base import PicksFile, TaskOperator, require_online

GENERATION = (
    "seed",
    "steps",
    "grid_size",
    "faces",
    "texture_size",
    "variants",
    "model",
    "device",
    "precision",
)
# Properties that are not generation parameters (as_keywords() leaves them out).
_NOT_PARAMS = (
    "blocking",
    "allow_download",
    "filepath",
    "filter_glob",
    "selected_only",
    "size",
    "mark_asset",
)
IMAGE_GLOB = "*.png;*.jpg;*.jpeg;*.webp;*.bmp;*.tif;*.tiff;*.exr"

Prepare = Callable[[GenerationParams, Path], GenerationParams]


@generation_properties(
    GENERATION,
    model={"description": "Hub repo id or local folder; empty: the add-on's preference"},
)
class _Generation(TaskOperator):
    """What the three generation operators share: the generation properties and start()."""

    allow_download: BoolProperty(
        name="Allow Download",
        description="Fetch missing model weights from the hub (needs Blender's online access)",
        default=False,
        options=SKIP_SAVE_HIDDEN,
    )
    size: size_property()
    mark_asset: mark_asset_property()

    def params(self, p: prefs.ShapEPreferences, source: dict[str, str]) -> GenerationParams:
        """The validated parameters: the operator's properties, the preferences for the unset
        ``model``, ``device`` and ``precision``, and ``source`` (prompt or image)."""
        values: dict[str, Any] = self.as_keywords(ignore=_NOT_PARAMS) | source
        fallback = {
            "model": (p.image_model if "image" in source else p.text_model).strip(),
            "device": p.device,
            "precision": p.precision,
        }
        for name, preferred in fallback.items():
            given = values.get(name)
            if not self.properties.is_property_set(name) or not str(given).strip():
                values[name] = preferred
        values = {
            n: SETTINGS[n].from_identifier(v) if n in SETTINGS else v for n, v in values.items()
        }
        return GenerationParams.create(**values)

    def start(
        self,
        context: bpy.types.Context,
        source: dict[str, str],
        label: str,
        prepare: Prepare | None = None,
    ) -> set[str]:
        """Validate, send the request, and either return at once or wait for the import."""

        size, mark_asset = self.size, self.mark_asset

        def task() -> Task:
            p = prefs.get(context)
            params = self.params(p, source)
            check_size(size)
            # Before minutes of sampling: an asset that could not be saved is refused now.
            asset = assets.Asset.of(p).checked() if mark_asset else None
            if self.allow_download:
                require_online("allow_download", "use the Download Models button")
            client = prefs.client(context)
            job_dir = jobdir.new_job_dir(prefs.jobs_root(p), label)
            if prepare is not None:
                params = prepare(params, job_dir)
            request = client.generate(
                GenerateRequest(params, job_dir=str(job_dir), allow_download=self.allow_download)
            )
            return Task(
                "generate",
                [request],
                label,
                finish=functools.partial(
                    finish.generation,
                    target=finish.Target.of(context),
                    size=size,
                    asset=asset,
                ),
                keep_alive=p.keep_alive,
            )

        return self.run(context, task, f"Shap-E: generating {label!r}", label)


@generation_properties(("prompt", "guidance_scale"), guidance_scale={"mode": "text"})
class SHAPE_E_OT_text_to_mesh(_Generation, bpy.types.Operator):
    """Generate a vertex-coloured mesh from a text prompt"""

    bl_idname = "shape_e.text_to_mesh"
    bl_label = "Text to Mesh"
    # The import pushes its own undo step when it lands.
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        label = object_name_for(" ".join(self.prompt.split()) or "Shap-E")
        return self.start(context, {}, label)


@generation_properties(("guidance_scale",), guidance_scale={"mode": "image"})
class SHAPE_E_OT_image_to_mesh(PicksFile, _Generation, bpy.types.Operator):
    """Generate a vertex-coloured mesh from an image of one object on a plain background"""

    bl_idname = "shape_e.image_to_mesh"
    bl_label = "Image to Mesh"
    bl_options = {"REGISTER"}

    filepath: StringProperty(name="Image", subtype="FILE_PATH", options=SKIP_SAVE)
    filter_glob: StringProperty(default=IMAGE_GLOB, options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        path = Path(bpy.path.abspath(self.filepath)) if self.filepath else None
        if path is None or not is_file(path):
            return self.fail(
                invalid(
                    "filepath",
                    f"no image file at {str(path) if path else '(empty)'!r}",
                    SETTINGS["image"].hint,
                )
            )
        label = object_name_for(str(path))
        return self.start(context, {"image": str(path)}, label)


@generation_properties(("guidance_scale",), guidance_scale={"mode": "image"})
class SHAPE_E_OT_camera_to_mesh(_Generation, bpy.types.Operator):
    """Render the active camera's view and generate a mesh from it"""

    bl_idname = "shape_e.camera_to_mesh"
    bl_label = "Camera to Mesh"
    bl_options = {"REGISTER"}

    selected_only: BoolProperty(
        name="Selected Objects Only",
        description="Render only the selected objects, so that floors and walls stay out",
        default=False,
        options=SKIP_SAVE,
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        cam = context.scene.camera
        if cam is None:
            return self.fail(
                invalid("camera", "the scene has no active camera", "add a camera or set one")
            )
        # The render is named after the camera, so that the job folder alone names the objects
        # the same way (Recent Jobs names them after the image file).
        render_name = camera.render_file_name(cam.name)
        label = object_name_for(render_name)
        selected_only = self.selected_only

        def render(params: GenerationParams, job_dir: Path) -> GenerationParams:
            _status_text(context, "Shap-E: rendering the camera view (Blender pauses briefly)")
            try:
                path = camera.render_camera_image(
                    context, job_dir / render_name, selected_only=selected_only
                )
            finally:
                _status_text(context, None)
            return dataclasses.replace(params, image=str(path))

        # The source is the render; it does not exist yet, so validate with its future name.
        return self.start(context, {"image": render_name}, label, prepare=render)


class SHAPE_E_OT_generate(bpy.types.Operator):
    """Generate from the panel's settings (picks a new seed first when Random Seed is on)"""

    bl_idname = "shape_e.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        s = context.scene.shape_e
        if s.random_seed:
            # Chosen here, before the operator runs, and kept in the panel so it can be reused.
            s.seed = random.randint(0, SEED_MAX)
        common = {name: getattr(s, name) for name in (*PANEL_SETTINGS, "size", "mark_asset")}
        common["guidance_scale"] = getattr(s, guidance_name(s))
        ops = bpy.ops.shape_e  # type: ignore[attr-defined]  # ours: the stubs list Blender's only
        if s.source == "TEXT":
            return ops.text_to_mesh(prompt=s.prompt, **common)
        if s.source == "IMAGE":
            return ops.image_to_mesh("EXEC_DEFAULT", filepath=s.image_path, **common)
        return ops.camera_to_mesh(
            selected_only=s.selected_only and bool(context.selected_objects), **common
        )


def _status_text(context: bpy.types.Context, text: str | None) -> None:
    """Status bar message, drawn before the render blocks (the UI only)."""
    workspace = context.workspace
    if bpy.app.background or workspace is None:
        return
    workspace.status_text_set(text)
    if text is not None and compat.can_run(bpy.ops.wm.redraw_timer):
        # Blender would only draw the message after the render; draw once now.
        bpy.ops.wm.redraw_timer(type="DRAW_WIN_SWAP", iterations=1)


CLASSES = (
    SHAPE_E_OT_text_to_mesh,
    SHAPE_E_OT_image_to_mesh,
    SHAPE_E_OT_camera_to_mesh,
    SHAPE_E_OT_generate,
)
