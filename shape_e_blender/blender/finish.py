"""What a finished job does to the scene: a generation's new objects, a re-mesh's new mesh.

The worker's result is parsed once, here, into a JobResult (core/results.py). Each finish step is
exactly one undo step and changes nothing when it fails (importer.py removes what it made).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np

from ..core import jobdir
from ..core.errors import JOB_FAILED, ShapEError
from ..core.results import JobResult
from . import assets, importer
from .tasks import Task

REMESH_UNDO = "Shap-E re-mesh"
ASSET_FIELDS = ("faces", "texture_size")  # kept by a re-mesh unless it is given others
REMESH_FIELDS = ("grid_size", *ASSET_FIELDS)  # what a re-mesh may change


def object_settings(result: JobResult) -> dict[str, Any]:
    """What is stored on the objects: the resolved parameters and the worker's versions."""
    return {**result.params, "versions": dict(result.versions)}


def import_result(
    result: JobResult,
    context: bpy.types.Context,
    name: str,
    collection: bpy.types.Collection | None = None,
    size: float = 0.0,
    asset: assets.Asset | None = None,
    arrange: Callable[[list[bpy.types.Object]], None] | None = None,
) -> tuple[list[bpy.types.Object], list[str]]:
    """Load every mesh of ``result``, import them named ``name``, push one undo step.

    Returns the objects and the warnings: a variant the worker could not make (no surface; the
    others are imported, and only when every variant failed is it an error), one it made but
    not as asked (``MeshEntry.warnings``), an asset that could not be saved.
    """
    made = result.made
    skipped = [m.skipped_error() for m in result.skipped]
    if not made:
        if skipped:
            raise skipped[0]
        raise ShapEError(
            JOB_FAILED,
            "the worker's result lists no mesh",
            "generate again; the job folder holds the worker's log",
        )
    meshes = [m.load() for m in made]
    # With variants missing (no surface, or one imported alone from its job folder), names and
    # stored seeds follow each mesh's own variant number.
    objects = importer.import_meshes(
        context,
        meshes,
        name=name,
        settings=object_settings(result),
        job_dir=result.job_dir or None,
        variants=[m.variant for m in made] if result.partial else None,
        latents=[m.latent for m in made],
        collection=collection,
        size=size,
    )
    warnings = [f"skipped {err}" for err in skipped]
    # What the worker could not do as asked (a mesh with fewer faces than asked, kept whole).
    warnings += [f"{o.name}: {w}" for o, m in zip(objects, made, strict=True) for w in m.warnings]
    if arrange is not None:  # in the import's undo step, as the marking below
        arrange(objects)
    for obj in objects if asset is not None else ():
        try:  # in the import's undo step
            assets.mark(obj, importer.settings_of(obj) or {}, asset)  # type: ignore[arg-type]
        except ShapEError as err:
            warnings.append(f"{obj.name}: {err.message} ({err.hint})")
    importer.push_undo(f"Shap-E: {name}")
    return objects, warnings


@dataclass(frozen=True)
class Target:
    """The collection that was active when a generation started, found again when it lands:
    by session_uid (a Python reference to a deleted collection is a dangling pointer), or None
    for the scene's own collection."""

    uid: int | None
    name: str

    @classmethod
    def of(cls, context: bpy.types.Context) -> Target:
        c = context.collection
        if c is None or c == context.scene.collection:
            return cls(None, "")
        return cls(c.session_uid, c.name)

    def resolve(self, context: bpy.types.Context) -> tuple[bpy.types.Collection, list[str]]:
        """The collection, or the scene's with a warning when it is gone from this scene."""
        scene = context.scene
        if self.uid is None:
            return scene.collection, []
        found = next((c for c in bpy.data.collections if c.session_uid == self.uid), None)
        if found is not None and found in scene.collection.children_recursive:
            return found, []
        return scene.collection, [
            f"the collection {self.name!r} was deleted while the job ran: the object is in the "
            "scene's collection"
        ]


def generation(
    task: Task,
    context: bpy.types.Context,
    target: Target | None = None,
    size: float = 0.0,
    asset: assets.Asset | None = None,
) -> list[bpy.types.Object]:
    """The finish step of a generation task: its result into the scene, in ``target`` (the
    collection that was active when it started; default: the active one now), ``size`` metres
    large (0: native), marked as assets with ``asset``. An asset that cannot be saved into its
    library is a warning: the objects stay, marked in this file."""
    collection, moved = target.resolve(context) if target is not None else (None, [])
    objects, warnings = import_result(
        JobResult.from_dict(task.requests[0].result), context, task.label, collection, size, asset
    )
    task.warnings += moved + warnings
    return objects


Placement = tuple[tuple[float, ...], tuple[float, ...]]  # an object's location and scale


def blend(
    task: Task,
    context: bpy.types.Context,
    factors: list[float],
    ends: tuple[Placement, Placement],
) -> list[bpy.types.Object]:
    """The finish step of shape_e.blend_shapes: in-between i stands at factors[i] of the way
    from object A's location to object B's, and its scale is as far between theirs (a blend of
    two objects sized to 1 m and 2 m is about 1.5 m)."""
    (a, a_scale), (b, b_scale) = ((np.asarray(v, np.float64) for v in e) for e in ends)
    result = JobResult.from_dict(task.requests[0].result)

    def arrange(objects: list[bpy.types.Object]) -> None:
        for obj in objects:
            t = factors[int(obj[importer.PROPERTY_KEY]["variant"])]
            obj.location = tuple(a * (1 - t) + b * t)
            obj.scale = tuple(a_scale * (1 - t) + b_scale * t)

    objects, warnings = import_result(result, context, task.label, arrange=arrange)
    task.warnings += warnings
    return objects


def remesh(
    uid: int, name: str, latent: str, variant: int, task: Task, context: bpy.types.Context
) -> list[bpy.types.Object]:
    """The finish step of a re-mesh: swap the object's mesh for the new one, one undo step.

    The object is found again by its session_uid, which survives renames and undo (a Python
    reference would not survive undo). Every check runs before the object changes.
    """
    obj = next((o for o in bpy.data.objects if o.session_uid == uid), None)
    request = task.requests[0]
    where = request.job_dir
    if obj is None or importer.settings_of(obj) is None:
        raise ShapEError(
            JOB_FAILED,
            f"{name!r} was deleted while it was being re-meshed",
            f"the new mesh is in {where}; re-mesh the object again if you bring it back",
        )
    importer.check_editable(obj)
    result = JobResult.from_dict(request.result)
    # A latent file of several variants (a script's own) decodes them all: take this object's.
    entry = result.meshes[0] if len(result.meshes) == 1 else result.variant(variant)
    if entry is None:
        raise ShapEError(
            JOB_FAILED,
            f"the worker's result has no mesh for variant {variant}",
            f"the job folder {where} holds the worker's log",
        )
    if not entry.made:
        raise entry.skipped_error()
    folder = result.job_dir or where
    png = jobdir.texture_path(folder, entry.variant) if folder else None
    importer.replace_mesh(obj, entry.load(), png)
    task.warnings += [f"{obj.name}: {w}" for w in entry.warnings]
    settings = obj[importer.PROPERTY_KEY]
    for name in REMESH_FIELDS:
        settings[name] = int(request.params.get(name, 0))
    if importer.GENERATED_IN not in settings and settings.get("job_dir"):
        settings[importer.GENERATED_IN] = settings["job_dir"]  # its variants' job, for keep_variant
    settings["job_dir"] = str(result.job_dir or where or "")
    settings["latent"] = latent  # the re-mesh's job folder holds no latent of its own
    importer.push_undo(REMESH_UNDO)
    return [obj]
