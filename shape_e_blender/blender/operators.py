"""The public operators: shape_e.text_to_mesh, camera_to_mesh, image_to_mesh, remesh, import_job
and cancel.

Their generation parameters carry the protocol's names. No hard min/max on them: Blender would
clamp a bad value silently, while GenerationParams.create names the field and says what to do.
Every parameter skips "last used" memory, so a script gets exactly what it passes plus defaults.

In the UI an operator starts the job and returns at once; a timer polls the worker and imports
the result. With ``blocking`` (the default in background mode) it polls in a loop and returns
once the objects are in the scene (selected, the first one active).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from ..core.errors import CANCELLED, JOB_FAILED, ShapEError, invalid
from ..core.mesh import MeshData
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
    GenerationParams,
)
from ..core.protocol import GenerateRequest
from . import jobs, prefs
from .client import Job as WorkerJob

_SKIP = {"SKIP_SAVE"}
REMESH_GRID = 2 * DEFAULT_GRID  # re-meshing is for refining a shape made at a lower resolution
REMESH_UNDO = "Shap-E re-mesh"
IMAGE_GLOB = "*.png;*.jpg;*.jpeg;*.webp;*.bmp;*.tif;*.tiff;*.exr"


def _guidance(default: float, what: str) -> Any:
    """The guidance_scale property of a generation operator; ``what`` it follows, and how."""
    return FloatProperty(
        name="Guidance Scale",
        description=f"How closely to follow {what}",
        default=default,
        soft_min=GUIDANCE_RANGE[0],
        soft_max=GUIDANCE_RANGE[1],
        options=_SKIP,
    )


class _Blocking:
    """The ``blocking`` property every job operator shares (see run_job below)."""

    blocking: BoolProperty(
        name="Blocking",
        description=(
            "Wait for the result before returning (default: on in background mode, off in the UI)"
        ),
        default=False,
        options=_SKIP | {"HIDDEN"},
    )


class _Generation(_Blocking):
    """Properties shared by the generation operators (the protocol's parameter names)."""

    seed: IntProperty(
        name="Seed",
        description="Variant i uses seed + i; the same seed gives the same shape",
        default=0,
        soft_min=0,
        soft_max=SEED_MAX,
        options=_SKIP,
    )
    steps: IntProperty(
        name="Steps",
        description="Sampling steps (64 is the paper's setting; fewer is faster)",
        default=DEFAULT_STEPS,
        soft_min=STEPS_RANGE[0],
        soft_max=STEPS_RANGE[1],
        options=_SKIP,
    )
    grid_size: IntProperty(
        name="Mesh Resolution",
        description="Grid size per axis for mesh extraction (32..512)",
        default=DEFAULT_GRID,
        soft_min=GRID_RANGE[0],
        soft_max=GRID_RANGE[1],
        options=_SKIP,
    )
    variants: IntProperty(
        name="Variants",
        description="How many meshes to generate (1..16), side by side",
        default=1,
        soft_min=VARIANTS_RANGE[0],
        soft_max=VARIANTS_RANGE[1],
        options=_SKIP,
    )
    model: StringProperty(
        name="Model",
        description="Hub repo id or folder; empty: the one in the add-on's preferences",
        default="",
        options=_SKIP,
    )
    device: EnumProperty(
        name="Device",
        description="Overrides the preference when given",
        items=prefs.DEVICE_ITEMS,
        default="AUTO",
        options=_SKIP,
    )
    precision: EnumProperty(
        name="Precision",
        description="Overrides the preference when given",
        items=prefs.PRECISION_ITEMS,
        default="AUTO",
        options=_SKIP,
    )
    allow_download: BoolProperty(
        name="Allow Download",
        description="Fetch missing model weights from the hub (needs Blender's online access)",
        default=False,
        options=_SKIP | {"HIDDEN"},
    )

    def start(
        self,
        context: bpy.types.Context,
        source: dict[str, str],
        label: str,
        prepare: Callable[[GenerationParams, Path], GenerationParams] | None = None,
    ) -> set[str]:
        """Validate, start the job, and either return at once or wait for the import."""
        if jobs.busy():
            self.report({"ERROR"}, jobs.BUSY_MESSAGE)
            return {"CANCELLED"}
        try:
            p = prefs.get(context)
            params = self.params(p, source)
            if self.allow_download and not bpy.app.online_access:
                raise invalid(
                    "allow_download",
                    "online access is off, so Blender may not download",
                    "allow it in Preferences > System, or use the Download Models button",
                )
            client = prefs.client(context)
            job_dir = jobs.new_job_dir(prefs.jobs_root(p), label)
            if prepare is not None:
                params = prepare(params, job_dir)
            request = client.generate(
                GenerateRequest(params, job_dir=str(job_dir), allow_download=self.allow_download)
            )
        except ShapEError as err:
            jobs.show_error(err, "generate", label)
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        job = jobs.Active(
            "generate", [request], label, finish=import_result, keep_alive=p.keep_alive
        )
        return run_job(self, context, job, f"Shap-E: generating {label!r}")

    def params(self, p: prefs.ShapEPreferences, source: dict[str, str]) -> GenerationParams:
        is_set = self.properties.is_property_set
        default_model = p.text_model if "prompt" in source else p.image_model
        return GenerationParams.create(
            **source,
            model=self.model.strip() or default_model.strip() or None,
            seed=self.seed,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            grid_size=self.grid_size,
            variants=self.variants,
            device=(self.device if is_set("device") else p.device).lower(),
            precision=(self.precision if is_set("precision") else p.precision).lower(),
        )


def run_job(
    op: bpy.types.Operator, context: bpy.types.Context, job: jobs.Active, started: str
) -> set[str]:
    """Begin ``job``; in the UI return at once (a timer polls), else wait and report the end.

    ``op.blocking`` decides when the caller set it; otherwise background mode blocks.
    """
    jobs.begin(job)
    explicit = op.properties.is_property_set("blocking")
    if not (op.blocking if explicit else bpy.app.background):
        jobs.ensure_timer()
        op.report({"INFO"}, started)
        return {"FINISHED"}
    done = jobs.run_blocking(context)
    if done.error is not None:
        level = "WARNING" if done.error.code == CANCELLED else "ERROR"
        op.report({level}, str(done.error))
        return {"CANCELLED"}
    for warning in done.warnings:
        op.report({"WARNING"}, warning)
    op.report({"INFO"}, jobs.status.message)
    return {"FINISHED"}


def load_mesh(entry: dict[str, Any]) -> MeshData:
    """One mesh of a result: inline when the worker sent it inline, else from its file."""
    try:
        if entry.get("npz_b64"):
            return MeshData.from_base64(entry["npz_b64"])
        return MeshData.load(entry["path"])
    except (OSError, ValueError, KeyError) as exc:
        raise ShapEError(
            JOB_FAILED,
            f"could not read the generated mesh {entry.get('path')!r}: {exc}",
            "the job folder may have been moved or deleted; generate again",
        ) from exc


def object_settings(result: dict[str, Any]) -> dict[str, Any]:
    """What is stored on the objects: the resolved parameters and the worker's versions."""
    settings = dict(result.get("params") or {})
    settings["versions"] = dict(result.get("versions") or {})
    return settings


def skipped_variant(entry: dict[str, Any]) -> ShapEError:
    """The error of a variant the worker could not make (``error`` instead of ``path``)."""
    err = ShapEError.from_json(entry.get("error"))
    seed = entry.get("seed")
    which = f"variant {entry.get('variant', '?')}" + (f" (seed {seed})" if seed is not None else "")
    return ShapEError(err.code, f"{which}: {err.message}", err.hint, err.field)


def import_result(job: jobs.Active, context: bpy.types.Context) -> list[bpy.types.Object]:
    """Finish step of a generation: load every mesh, import them, one undo step.

    A variant with no surface comes back as an entry with ``error``: the others are imported
    and the skipped ones go to ``job.warnings``. Only when every variant failed is it an error.
    """
    from . import importer

    result = job.requests[0].result
    if not isinstance(result, dict) or not isinstance(result.get("meshes"), list):
        raise ShapEError(
            JOB_FAILED,
            f"the worker's result has no mesh list: {str(result)[:200]}",
            "update the worker environment so that it matches the add-on",
        )
    entries = [m for m in result["meshes"] if isinstance(m, dict)]
    made = [m for m in entries if "error" not in m]
    skipped = [skipped_variant(m) for m in entries if "error" in m]
    if not made:
        if skipped:
            raise skipped[0]
        raise ShapEError(
            JOB_FAILED,
            "the worker's result lists no mesh",
            "generate again; the job folder holds the worker's log",
        )
    meshes = [load_mesh(m) for m in made]
    # With variants missing (no surface, or one imported alone from its job folder), names and
    # stored seeds follow each mesh's own variant number.
    asked = (result.get("params") or {}).get("variants")
    partial = bool(skipped) or (isinstance(asked, int) and len(made) < asked)
    variants = [int(m.get("variant", i)) for i, m in enumerate(made)] if partial else None
    objects = importer.import_meshes(
        context,
        meshes,
        name=job.label,
        settings=object_settings(result),
        job_dir=result.get("job_dir"),
        variants=variants,
        latents=[m.get("latent") for m in made],
    )
    importer.push_undo(f"Shap-E: {job.label}")
    job.warnings += [f"skipped {err}" for err in skipped]
    return objects


class SHAPE_E_OT_text_to_mesh(_Generation, bpy.types.Operator):
    """Generate a vertex-coloured mesh from a text prompt"""

    bl_idname = "shape_e.text_to_mesh"
    bl_label = "Text to Mesh"
    bl_options: ClassVar[set[str]] = {
        "REGISTER"
    }  # the import pushes its own undo step when it lands

    prompt: StringProperty(name="Prompt", description="What to generate", options=_SKIP)
    guidance_scale: _guidance(TEXT_GUIDANCE, "the prompt (15 suits text)")

    def execute(self, context: bpy.types.Context) -> set[str]:
        from . import importer

        label = importer.object_name_for(" ".join(self.prompt.split()) or "Shap-E")
        return self.start(context, {"prompt": self.prompt}, label)


class SHAPE_E_OT_image_to_mesh(_Generation, bpy.types.Operator):
    """Generate a vertex-coloured mesh from an image of one object on a plain background"""

    bl_idname = "shape_e.image_to_mesh"
    bl_label = "Image to Mesh"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    filepath: StringProperty(name="Image", subtype="FILE_PATH", options=_SKIP)
    filter_glob: StringProperty(default=IMAGE_GLOB, options={"HIDDEN", "SKIP_SAVE"})
    guidance_scale: _guidance(IMAGE_GUIDANCE, "the image (3 suits images)")

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if self.filepath:
            return self.execute(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        from . import importer

        path = Path(bpy.path.abspath(self.filepath)) if self.filepath else None
        if path is None or not path.is_file():
            err = invalid(
                "filepath",
                f"no image file at {str(path) if path else '(empty)'!r}",
                "choose a PNG or JPEG of one object on a plain background",
            )
            jobs.show_error(err)
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        label = importer.object_name_for(str(path))
        return self.start(context, {"image": str(path)}, label)


class SHAPE_E_OT_camera_to_mesh(_Generation, bpy.types.Operator):
    """Render the active camera's view and generate a mesh from it"""

    bl_idname = "shape_e.camera_to_mesh"
    bl_label = "Camera to Mesh"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    selected_only: BoolProperty(
        name="Selected Objects Only",
        description="Render only the selected objects, so that floors and walls stay out",
        default=False,
        options=_SKIP,
    )
    guidance_scale: _guidance(IMAGE_GUIDANCE, "the image (3 suits images)")

    def execute(self, context: bpy.types.Context) -> set[str]:
        from . import camera, importer

        cam = context.scene.camera
        if cam is None:
            err = invalid("camera", "the scene has no active camera", "add a camera or set one")
            jobs.show_error(err)
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        # The render is named after the camera, so that the job folder alone names the objects
        # the same way (Recent Jobs names them after the image file).
        render_name = camera.render_file_name(cam.name)
        label = importer.object_name_for(render_name)
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


def latent_path(name: str, settings: dict[str, Any]) -> Path:
    """The saved latent a Shap-E object was decoded from; raises when it is not on disk.

    New objects store it as ``latent``. Objects imported before that was stored have only their
    job folder and variant: the worker wrote the latent to ``job_dir/<variant>/latent.npy``.
    """
    from . import importer

    stored = settings.get("latent")
    job_dir = settings.get("job_dir")
    if isinstance(stored, str) and stored:
        path = Path(stored)
    elif isinstance(job_dir, str) and job_dir:
        path = Path(job_dir) / str(settings.get("variant", 0)) / importer.LATENT_FILE
    else:
        raise invalid(
            "object_name",
            f"{name!r} records no job folder, so its saved latent cannot be found",
            "re-meshing decodes the saved latent: generate the object again with its seed",
        )
    if not path.is_file():
        seed = settings.get("seed")
        again = f" (seed {seed})" if seed is not None else ""
        raise invalid(
            "object_name",
            f"the latent file of {name!r} is missing: {path} (its job folder was moved or deleted)",
            f"re-meshing decodes that saved latent: generate the object again{again}, "
            "or put the job folder back",
        )
    return path


class SHAPE_E_OT_remesh(_Blocking, bpy.types.Operator):
    """Extract a Shap-E object's mesh again at another resolution from its saved latent, without
    sampling again (the object, its transform, modifiers and material stay)"""

    bl_idname = "shape_e.remesh"
    bl_label = "Re-mesh"
    bl_options: ClassVar[set[str]] = {"REGISTER"}  # the finish step pushes its own undo step

    object_name: StringProperty(
        name="Object",
        description="The Shap-E object to re-mesh; empty: the active object",
        default="",
        options=_SKIP,
    )
    grid_size: IntProperty(
        name="Mesh Resolution",
        description="Grid size per axis for the new mesh (32..512)",
        default=REMESH_GRID,
        soft_min=GRID_RANGE[0],
        soft_max=GRID_RANGE[1],
        options=_SKIP,
    )

    # No poll(): a pipeline names its object with object_name whatever is active (or with nothing
    # active), and execute() answers a wrong target with an error naming the field. The panel
    # shows the button only for a Shap-E object.

    def execute(self, context: bpy.types.Context) -> set[str]:
        if jobs.busy():
            self.report({"ERROR"}, jobs.BUSY_MESSAGE)
            return {"CANCELLED"}
        label = "Re-mesh"
        try:
            obj, settings = self.target(context)
            label = f"Re-mesh {obj.name}"
            latent = latent_path(obj.name, settings)
            p = prefs.get(context)
            default_model = p.image_model if "image" in settings else p.text_model
            stored_model = settings.get("model")
            model = stored_model if isinstance(stored_model, str) and stored_model else None
            params = GenerationParams.create(
                latent=str(latent),
                model=model or default_model.strip() or None,
                grid_size=self.grid_size,
                device=p.device.lower(),
                precision=p.precision.lower(),
            )
            client = prefs.client(context)
            job_dir = jobs.new_job_dir(prefs.jobs_root(p), label)
            request = client.generate(GenerateRequest(params, job_dir=str(job_dir)))
        except ShapEError as err:
            jobs.show_error(err, "generate", label)
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        finish = functools.partial(
            remesh_result,
            obj.session_uid,
            obj.name,
            str(latent),
            int(settings.get("variant", 0)),
        )
        job = jobs.Active(
            "generate",
            [request],
            obj.name,
            finish=finish,
            keep_alive=p.keep_alive,
            verb="Re-meshed",
        )
        return run_job(
            self, context, job, f"Shap-E: re-meshing {obj.name!r} at grid {self.grid_size}"
        )

    def target(self, context: bpy.types.Context) -> tuple[bpy.types.Object, dict[str, Any]]:
        """The object to re-mesh and its stored settings; raises when it cannot be re-meshed."""
        from . import importer

        name = self.object_name.strip()
        if name:
            obj = bpy.data.objects.get(name)
            if obj is None:
                raise invalid("object_name", f"there is no object {name!r}", "check the name")
        else:
            obj = context.active_object
            if obj is None:
                raise invalid(
                    "object_name", "there is no active object", "select an object Shap-E made"
                )
        settings = importer.settings_of(obj)
        if settings is None:
            raise invalid(
                "object_name",
                f"{obj.name!r} was not made by Shap-E (it carries no Shap-E settings)",
                "select an object that Generate made, then re-mesh it",
            )
        _check_editable(obj)
        return obj, settings


def _check_editable(obj: bpy.types.Object) -> None:
    if obj.library is not None or obj.data.library is not None:
        raise invalid(
            "object_name",
            f"{obj.name!r} is linked from another file, so its mesh cannot be replaced",
            "re-mesh it in the file it comes from, or make it local first",
        )
    if obj.mode == "EDIT":
        raise invalid(
            "object_name",
            f"{obj.name!r} is in Edit Mode",
            "switch to Object Mode, then re-mesh",
        )


def remesh_result(
    uid: int,
    name: str,
    latent: str,
    variant: int,
    job: jobs.Active,
    context: bpy.types.Context,
) -> list[bpy.types.Object]:
    """Finish step of a re-mesh: swap the object's mesh for the new one, one undo step.

    The object is found again by its session_uid, which survives renames and undo (a Python
    reference would not survive undo). Every check runs before the object changes.
    """
    from . import importer

    obj = next((o for o in bpy.data.objects if o.session_uid == uid), None)
    result = job.requests[0].result
    where = result.get("job_dir") if isinstance(result, dict) else None
    if obj is None or importer.settings_of(obj) is None:
        raise ShapEError(
            JOB_FAILED,
            f"{name!r} was deleted while it was being re-meshed",
            f"the new mesh is in {where}; re-mesh the object again if you bring it back",
        )
    _check_editable(obj)
    if not isinstance(result, dict) or not isinstance(result.get("meshes"), list):
        raise ShapEError(
            JOB_FAILED,
            f"the worker's result has no mesh list: {str(result)[:200]}",
            "update the worker environment so that it matches the add-on",
        )
    entries = [m for m in result["meshes"] if isinstance(m, dict)]
    # A latent file of several variants (a script's own) decodes them all: take this object's.
    if len(entries) > 1:
        entries = [m for m in entries if m.get("variant") == variant]
    if not entries:
        raise ShapEError(
            JOB_FAILED,
            f"the worker's result has no mesh for variant {variant}",
            f"the job folder {where} holds the worker's log",
        )
    if "error" in entries[0]:
        raise skipped_variant(entries[0])
    data = load_mesh(entries[0])
    importer.replace_mesh(obj, data)
    asked = job.requests[0].params
    settings = obj[importer.PROPERTY_KEY]
    settings["grid_size"] = int(asked["grid_size"])
    settings["job_dir"] = str(where or asked.get("job_dir", ""))
    settings["latent"] = latent  # the re-mesh's job folder holds no latent of its own
    importer.push_undo(REMESH_UNDO)
    return [obj]


class SHAPE_E_OT_import_job(bpy.types.Operator):
    """Import a finished job's meshes from its job folder, as the generation itself would have
    (after a crash, a file closed unsaved, an undo past the import, or a job that ended later)"""

    bl_idname = "shape_e.import_job"
    bl_label = "Import Job"
    bl_options: ClassVar[set[str]] = {"REGISTER"}  # import_result pushes its own undo step

    job_dir: StringProperty(
        name="Job Folder",
        description="The job's folder (under the jobs folder: request.json, result.json, 0/...)",
        default="",
        subtype="DIR_PATH",
        options=_SKIP,
    )
    variant: IntProperty(
        name="Variant",
        description="Which variant to import; -1: all of them",
        default=-1,
        soft_min=-1,
        soft_max=VARIANTS_RANGE[1] - 1,
        options=_SKIP,
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        from . import history, importer

        text = self.job_dir.strip()
        try:
            active, _ = history.active_job()
            record, result = history.load_result(
                bpy.path.abspath(text) if text else "", self.variant, active=active
            )
            label = importer.object_name_for(record.name_source)
            # The job as its folder recorded it: the same finish step as a fresh generation.
            done = WorkerJob(
                id=0,
                method="generate",
                params={"job_dir": str(record.path)},
                generation=0,
                result=result,
                done=True,
            )
            job = jobs.Active("generate", [done], label)
            objects = import_result(job, context)
        except ShapEError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        for warning in job.warnings:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"Imported {', '.join(o.name for o in objects)}")
        return {"FINISHED"}


class SHAPE_E_OT_cancel(bpy.types.Operator):
    """Cancel the running Shap-E job"""

    bl_idname = "shape_e.cancel"
    bl_label = "Cancel"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not jobs.cancel():
            self.report({"WARNING"}, "no Shap-E job is running")
            return {"CANCELLED"}
        self.report({"INFO"}, "Shap-E: cancelling")
        return {"FINISHED"}


def _status_text(context: bpy.types.Context, text: str | None) -> None:
    """Status bar message, drawn before the render blocks (the UI only)."""
    workspace = context.workspace
    if bpy.app.background or workspace is None:
        return
    workspace.status_text_set(text)
    if text is not None and bpy.ops.wm.redraw_timer.poll():
        # Blender would only draw the message after the render; draw once now.
        bpy.ops.wm.redraw_timer(type="DRAW_WIN_SWAP", iterations=1)


CLASSES = (
    SHAPE_E_OT_text_to_mesh,
    SHAPE_E_OT_image_to_mesh,
    SHAPE_E_OT_camera_to_mesh,
    SHAPE_E_OT_remesh,
    SHAPE_E_OT_import_job,
    SHAPE_E_OT_cancel,
)
