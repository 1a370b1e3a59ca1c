"""Asset workflows on Shap-E objects: shape_e.mark_asset, shape_e.keep_variant and
shape_e.blend_shapes.

Like objects.py's operators they have no poll(): a script names its objects, and a wrong one is
answered with an error naming the field.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from bpy.props import FloatProperty, IntProperty, StringProperty

from ...core import jobdir
from ...core.errors import ShapEError, invalid
from ...core.names import object_name_for
from ...core.params import SETTINGS, GenerationParams
from ...core.protocol import GenerateRequest
from .. import assets, finish, importer, prefs
from ..props import SKIP_SAVE
from ..tasks import Task
from .base import TaskOperator
from .objects import _object_name, latent_path, target

BLEND_MAX = int(SETTINGS["variants"].range[1])  # type: ignore[index]  # it has one  # in-betweens of one blend: one worker request


class SHAPE_E_OT_mark_asset(bpy.types.Operator):
    """Mark a Shap-E object as an asset (prompt as description and tags, seed and model in its
    metadata, a preview); saved into the preferences' asset library folder when one is set"""

    bl_idname = "shape_e.mark_asset"
    bl_label = "Mark as Asset"
    bl_options = {"REGISTER"}  # pushes its own undo step, as keep_variant

    object_name: _object_name("mark as an asset")

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            obj, settings = target(context, self.object_name)
            importer.ensure_undo_baseline()
            saved = assets.mark(obj, settings, assets.Asset.of(prefs.get(context)))
            importer.push_undo(f"Shap-E: mark {obj.name} as an asset")
        except ShapEError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        where = f", saved to {saved}" if saved else ""
        self.report({"INFO"}, f"{obj.name} is an asset{where}")
        return {"FINISHED"}


def siblings(obj: bpy.types.Object, settings: dict[str, Any]) -> list[bpy.types.Object]:
    """The other objects of ``obj``'s job (the job folder that made them, re-meshed or not), in
    any scene of the file."""
    job = importer.generated_in(settings)
    if job is None:
        raise invalid(
            "object_name",
            f"{obj.name!r} records no job folder, so its job's other variants are unknown",
            "delete the other variants by hand",
        )
    return [
        o
        for o in bpy.data.objects
        if o != obj and importer.generated_in(importer.settings_of(o) or {}) == job
    ]


class SHAPE_E_OT_keep_variant(bpy.types.Operator):
    """Keep this variant and delete the other variants of its job, in one undo step"""

    bl_idname = "shape_e.keep_variant"
    bl_label = "Keep This Variant"
    bl_options = {"REGISTER"}  # pushes its own undo step: a script's call gets one too

    object_name: _object_name("keep")

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            obj, settings = target(context, self.object_name)
            others = siblings(obj, settings)
            locked = [o.name for o in others if o.library is not None]
            if locked:
                raise invalid(
                    "object_name",
                    f"{', '.join(locked)} are linked from another file",
                    "delete them in the file they come from",
                )
        except ShapEError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        importer.ensure_undo_baseline()
        for other in others:
            mesh = other.data
            bpy.data.objects.remove(other, do_unlink=True)
            if isinstance(mesh, bpy.types.Mesh) and mesh.users == 0:
                bpy.data.meshes.remove(mesh)
        importer.push_undo(f"Shap-E: keep {obj.name}")
        self.report({"INFO"}, f"Kept {obj.name}; deleted {len(others)} other variant(s)")
        return {"FINISHED"}


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of two latents (as flat vectors); linear where they are parallel.

    Shap-E's latents are sampled from a Gaussian prior: their norms concentrate, and a straight
    line between two of them passes through latents of smaller norm than any sample, which
    decode to washed-out shapes. The arc keeps the norm.
    """
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    cos = float(np.dot(a64, b64) / (na * nb)) if na > 0 and nb > 0 else 1.0
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:
        out = (1 - t) * a64 + t * b64
    else:
        out = (np.sin((1 - t) * omega) * a64 + np.sin(t * omega) * b64) / np.sin(omega)
    return out.reshape(a.shape).astype(np.float32)


def blend_factors(factor: float, count: int) -> list[float]:
    """``[factor]`` for one object; else ``count`` steps strictly between a (0) and b (1)."""
    if count == 1:
        return [factor]
    return [(k + 1) / (count + 1) for k in range(count)]


class SHAPE_E_OT_blend_shapes(TaskOperator, bpy.types.Operator):
    """Decode the spherical interpolation of two Shap-E objects' saved latents into new objects
    placed between them, scaled between theirs (both from the same model)"""

    bl_idname = "shape_e.blend_shapes"
    bl_label = "Blend Shapes"
    bl_options = {"REGISTER"}  # the import pushes its own undo step

    object_a: StringProperty(name="Object A", description="The first Shap-E object",
                             options=SKIP_SAVE)  # fmt: skip
    object_b: StringProperty(name="Object B", description="The second Shap-E object",
                             options=SKIP_SAVE)  # fmt: skip
    factor: FloatProperty(
        name="Factor",
        description="0 is object A, 1 is object B (with Count 1)",
        default=0.5,
        soft_min=0.0,
        soft_max=1.0,
        options=SKIP_SAVE,
    )
    count: IntProperty(
        name="Count",
        description="How many objects: more than 1 steps evenly from A to B (Factor unused)",
        default=1,
        soft_min=1,
        soft_max=BLEND_MAX,
        options=SKIP_SAVE,
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            ends = self._ends(context)
        except ShapEError as err:
            return self.fail(err, "Blend")
        (a, sa, la), (b, _, lb) = ends
        factors = blend_factors(self.factor, self.count)
        label = object_name_for(f"{a.name} to {b.name}")

        def task() -> Task:
            p = prefs.get(context)
            job_dir = jobdir.new_job_dir(prefs.jobs_root(p), label)
            latents = np.stack([slerp(la, lb, t) for t in factors])
            for i, latent in enumerate(latents):  # each object's own, for a later re-mesh
                jobdir.latent_path(job_dir, i).parent.mkdir(parents=True, exist_ok=True)
                jobdir.save_latent(jobdir.latent_path(job_dir, i), latent)
            stacked = job_dir / jobdir.BLEND_LATENTS
            jobdir.save_latent(stacked, latents)
            params = GenerationParams.create(
                latent=str(stacked),
                model=sa.get("model") or None,
                **{n: sa[n] for n in ("grid_size", "faces", "texture_size") if n in sa},
                device=p.device.lower(),
                precision=p.precision.lower(),
            )
            request = prefs.client(context).generate(GenerateRequest(params, job_dir=str(job_dir)))
            where = ((tuple(a.location), tuple(a.scale)), (tuple(b.location), tuple(b.scale)))
            step = functools.partial(finish.blend, factors=factors, ends=where)
            return Task("generate", [request], label, finish=step, keep_alive=p.keep_alive)

        return self.run(context, task, f"Shap-E: blending {a.name!r} and {b.name!r}", label)

    def _ends(self, context: bpy.types.Context) -> list[tuple[Any, dict[str, Any], np.ndarray]]:
        if not 1 <= self.count <= BLEND_MAX:
            raise invalid("count", f"{self.count} is outside 1..{BLEND_MAX}", "blend 1 to 16")
        if self.count == 1 and not 0.0 <= self.factor <= 1.0:
            raise invalid("factor", f"{self.factor:g} is outside 0..1", "0 is A, 1 is B")
        ends = []
        for field, name in (("object_a", self.object_a), ("object_b", self.object_b)):
            if not name.strip():
                raise invalid(field, "is empty", "name a Shap-E object")
            try:
                obj, settings = target(context, name)
                path = latent_path(obj.name, settings)
            except ShapEError as err:  # the same checks, under this operator's field names
                raise ShapEError(err.code, err.message.replace("object_name", field), err.hint,
                                 field) from None  # fmt: skip
            ends.append((obj, settings, _load(path, field)))
        (a, sa, la), (b, sb, lb) = ends
        if a == b:
            raise invalid("object_b", f"is {a.name!r} again", "name two different objects")
        if sa.get("model") != sb.get("model") or la.shape != lb.shape:
            raise invalid(
                "object_b",
                f"{b.name!r} comes from {sb.get('model')!r}, {a.name!r} from {sa.get('model')!r}",
                "blend two objects made by the same model",
            )
        return ends


def _load(path: Path, field: str) -> np.ndarray:
    try:
        latent = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise invalid(field, f"cannot read its latent {path}: {exc}", "generate it again") from None
    return latent[0] if latent.ndim == 3 and len(latent) == 1 else latent


CLASSES = (SHAPE_E_OT_mark_asset, SHAPE_E_OT_keep_variant, SHAPE_E_OT_blend_shapes)
