"""shape_e.build_scene: every object of a scene spec (TOML, docs/scenes.md) into this file."""

from __future__ import annotations

import bpy
from bpy.props import StringProperty

from ...core.errors import invalid
from .. import assets, prefs, scenes
from ..props import SKIP_SAVE
from ..tasks import Task
from .base import PicksFile, TaskOperator


class SHAPE_E_OT_build_scene(PicksFile, TaskOperator, bpy.types.Operator):
    """Build the objects of a scene spec (a TOML file) into this file: objects already built stay,
    finished jobs are reused, and only what changed is generated"""

    bl_idname = "shape_e.build_scene"
    bl_label = "Build Scene from Spec"
    # The import pushes its own undo step when it lands.
    bl_options = {"REGISTER"}

    kind = "scene"

    filepath: StringProperty(name="Scene Spec", subtype="FILE_PATH", options=SKIP_SAVE)
    filter_glob: StringProperty(default="*.toml", options={"HIDDEN", "SKIP_SAVE"})
    text_model: StringProperty(
        name="Text Model",
        description="The model of text objects that name none (empty: the spec's, then the "
        "preferences')",
        options=SKIP_SAVE,
    )
    image_model: StringProperty(
        name="Image Model",
        description="The model of image objects that name none (empty: the spec's, then the "
        "preferences')",
        options=SKIP_SAVE,
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        return self.run(context, lambda: self.task(context), f"Shap-E: building {self.filepath}")

    def task(self, context: bpy.types.Context) -> Task:
        if not self.filepath.strip():
            raise invalid("filepath", "no scene spec given", "pick a .toml scene spec")
        p = prefs.get(context)
        spec = scenes.read(bpy.path.abspath(self.filepath), p, self.text_model, self.image_model)
        if any(o.placement.mark_asset for o in spec.objects):  # refused before any generation
            assets.Asset.of(p).checked()
        root = prefs.jobs_root(p)
        planned = scenes.plan(spec, root)
        todo = [i for i in planned if i.how == scenes.GENERATE]
        # Nothing to generate: no worker is started at all.
        requests = scenes.start(planned, prefs.client(context), root) if todo else []
        return Task(
            self.kind,
            requests,
            spec.path.name,
            finish=lambda task, ctx: scenes.finish_build(spec, planned, task, ctx),
            keep_alive=p.keep_alive,
            each_alone=True,
            parts=[i.obj.name for i in todo],
        )


CLASSES = (SHAPE_E_OT_build_scene,)
