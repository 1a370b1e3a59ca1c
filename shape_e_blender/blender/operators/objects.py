"""Operators on what Shap-E already made: shape_e.remesh, shape_e.use_settings and
shape_e.import_job.

None of them has a poll(): a pipeline names its target (object_name, job_dir) whatever is active,
or with nothing active, and execute() answers a wrong target with an error naming the field.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import bpy
from bpy.props import IntProperty, StringProperty

from ...core import jobdir
from ...core.errors import ShapEError, invalid
from ...core.files import is_file
from ...core.names import object_name_for
from ...core.params import SETTINGS, GenerationParams
from ...core.protocol import GenerateRequest
from .. import finish, history, importer, prefs
from ..props import PANEL_SETTINGS, REMESH_GRID, SKIP_SAVE, guidance_name, prop
from ..tasks import Task
from .base import TaskOperator


def _object_name(what: str) -> Any:
    return StringProperty(
        name="Object",
        description=f"The Shap-E object to {what}; empty: the active object",
        default="",
        options=SKIP_SAVE,
    )


def target(context: bpy.types.Context, name: str) -> tuple[bpy.types.Object, dict[str, Any]]:
    """The Shap-E object ``name`` (the active one if empty) and its stored settings."""
    name = name.strip()
    obj = bpy.data.objects.get(name) if name else context.active_object
    if obj is None:
        raise invalid(
            "object_name",
            f"there is no object {name!r}" if name else "there is no active object",
            "check the name" if name else "select an object Shap-E made",
        )
    settings = importer.settings_of(obj)
    if settings is None:
        raise invalid(
            "object_name",
            f"{obj.name!r} was not made by Shap-E (it carries no Shap-E settings)",
            "name or select an object that Generate made",
        )
    return obj, settings


def latent_path(name: str, settings: dict[str, Any]) -> Path:
    """The saved latent a Shap-E object was decoded from; raises when it is not on disk.

    New objects store it as ``latent``. Objects imported before that was stored have only their
    job folder and variant: the worker wrote the latent to ``job_dir/<variant>/latent.npy``.
    """
    stored = settings.get("latent")
    job_dir = settings.get("job_dir")
    if isinstance(stored, str) and stored:
        path = Path(stored)
    elif isinstance(job_dir, str) and job_dir:
        path = jobdir.latent_path(job_dir, int(settings.get("variant", 0)))
    else:
        raise invalid(
            "object_name",
            f"{name!r} records no job folder, so its saved latent cannot be found",
            "re-meshing decodes the saved latent: generate the object again with its seed",
        )
    if not is_file(path):
        seed = settings.get("seed")
        again = f" (seed {seed})" if seed is not None else ""
        raise invalid(
            "object_name",
            f"the latent file of {name!r} is missing: {path} (its job folder was moved or deleted)",
            f"re-meshing decodes that saved latent: generate the object again{again}, "
            "or put the job folder back",
        )
    return path


class SHAPE_E_OT_remesh(TaskOperator, bpy.types.Operator):
    """Extract a Shap-E object's mesh again at another resolution from its saved latent, without
    sampling again (the object, its transform, modifiers and material stay); decimated and
    textured as it was, or as Faces and Texture Size say"""

    bl_idname = "shape_e.remesh"
    bl_label = "Re-mesh"
    bl_options = {"REGISTER"}  # the finish step pushes its own undo step

    object_name: _object_name("re-mesh")
    grid_size: prop("grid_size", default=REMESH_GRID)
    # Unset: the object's own, so a decimated or textured object is decimated and textured again.
    faces: prop("faces", description=SETTINGS["faces"].description + "; unset: the object's own")
    texture_size: prop(
        "texture_size",
        description=SETTINGS["texture_size"].description + "; unset: the object's own",
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            obj, settings = target(context, self.object_name)
            importer.check_editable(obj)
            latent = latent_path(obj.name, settings)
        except ShapEError as err:
            return self.fail(err, "Re-mesh")

        def task() -> Task:
            p = prefs.get(context)
            default_model = p.image_model if "image" in settings else p.text_model
            stored_model = settings.get("model")
            model = stored_model if isinstance(stored_model, str) and stored_model else None
            asset = {n: settings[n] for n in finish.ASSET_FIELDS if n in settings}
            asset |= {
                n: getattr(self, n)
                for n in finish.ASSET_FIELDS
                if self.properties.is_property_set(n)
            }
            params = GenerationParams.create(
                # 4.2's stubs say as_keywords() returns None.
                **self.as_keywords(ignore=("blocking", "object_name", *finish.ASSET_FIELDS)),  # type: ignore[func-returns-value, arg-type, unused-ignore]
                latent=str(latent),
                **asset,
                model=model or default_model.strip() or None,
                device=p.device.lower(),
                precision=p.precision.lower(),
            )
            client = prefs.client(context)
            job_dir = jobdir.new_job_dir(prefs.jobs_root(p), f"Re-mesh {obj.name}")
            request = client.generate(GenerateRequest(params, job_dir=str(job_dir)))
            variant = int(settings.get("variant", 0))
            step = functools.partial(finish.remesh, obj.session_uid, obj.name, str(latent), variant)
            return Task(
                "generate",
                [request],
                obj.name,
                finish=step,
                keep_alive=p.keep_alive,
                verb="Re-meshed",
            )

        started = f"Shap-E: re-meshing {obj.name!r} at grid {self.grid_size}"
        return self.run(context, task, started, f"Re-mesh {obj.name}")


class SHAPE_E_OT_use_settings(bpy.types.Operator):
    """Put a Shap-E object's prompt or image, seed and settings into the panel, with Random Seed
    off: Generate then makes that object again, or a variation once something is changed"""

    bl_idname = "shape_e.use_settings"
    bl_label = "Use These Settings"
    bl_options = {"REGISTER", "UNDO"}  # the panel's settings live in the file

    object_name: _object_name("take the settings from")

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
        if isinstance(prompt, str) and prompt:
            s.source, s.prompt = "TEXT", prompt
        elif isinstance(image, str) and image:
            # A camera job's render is kept in its job folder: generating from it repeats the job.
            s.source, s.image_path = "IMAGE", image
        else:
            self.report(
                {"ERROR"},
                f"{obj.name!r} was made from a latent file, not a prompt or an image: there is "
                "nothing to generate from (Re-mesh decodes its latent again)",
            )
            return {"CANCELLED"}
        stored = {**settings, guidance_name(s): settings.get("guidance_scale")}
        for name in (*PANEL_SETTINGS, guidance_name(s)):
            kind = SETTINGS[name].kind if name in SETTINGS else float
            value = stored.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(s, name, kind(value))
        # The object's seed is its own variant's (seed + i): one variant remakes exactly it.
        s.variants = 1
        s.random_seed = False
        self.report({"INFO"}, f"Settings of {obj.name} are in the panel (Random Seed off)")
        return {"FINISHED"}


class SHAPE_E_OT_import_job(bpy.types.Operator):
    """Import a finished job's meshes from its job folder, as the generation itself would have
    (after a crash, a file closed unsaved, an undo past the import, or a job that ended later)"""

    bl_idname = "shape_e.import_job"
    bl_label = "Import Job"
    bl_options = {"REGISTER"}  # import_result pushes its own undo step

    job_dir: StringProperty(
        name="Job Folder",
        description="The job's folder (under the jobs folder: request.json, result.json, 0/...)",
        default="",
        subtype="DIR_PATH",
        options=SKIP_SAVE,
    )
    variant: IntProperty(
        name="Variant",
        description="Which variant to import; -1: all of them",
        default=-1,
        soft_min=-1,
        soft_max=SETTINGS["variants"].range[1] - 1,
        options=SKIP_SAVE,
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        text = self.job_dir.strip()
        try:
            active, _ = history.active_job()
            record, result = jobdir.load_result(
                bpy.path.abspath(text) if text else "", self.variant, active=active
            )
            label = object_name_for(record.name_source)
            # The same finish step as a fresh generation: the same names, placement and settings.
            objects, warnings = finish.import_result(result, context, label)
        except ShapEError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        for warning in warnings:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"Imported {', '.join(o.name for o in objects)}")
        return {"FINISHED"}


CLASSES = (SHAPE_E_OT_remesh, SHAPE_E_OT_use_settings, SHAPE_E_OT_import_job)
