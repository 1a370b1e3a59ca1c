"""Building a scene spec (core/spec.py) into the open .blend file.

plan() decides, per spec object, before the worker is asked for anything:

- unchanged: the file already holds this object's objects, made from the same job key: only
  their placement is set again (moving an object regenerates nothing);
- reused: a finished job folder with the key is in the jobs root: its meshes are imported;
- generate: a new job folder (its key written first) and a generate request, all through the
  add-on's one warm worker, so the models load once per build.

finish() then imports and places every object in one undo step. Each object's settings carry
its spec (``spec``: the spec file's path, ``spec_object``: its name there, ``spec_key``: its job
key), so a later build updates the objects it made, in place, and leaves all else alone. A
failed object does not stop the others: they are imported, and the failures are the task's
error, listed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import bpy
import numpy as np

from ..client.client import WorkerClient
from ..client.handle import JobHandle
from ..core import jobdir, jobkey
from ..core.errors import CANCELLED, JOB_FAILED, ShapEError
from ..core.mesh import size_factor
from ..core.params import SETTINGS
from ..core.protocol import GenerateRequest
from ..core.results import JobResult
from ..core.spec import SceneSpec, SpecObject, load_spec
from . import assets, finish, importer, prefs
from .tasks import Task

SPEC, SPEC_OBJECT, SPEC_KEY = "spec", "spec_object", "spec_key"  # keys in obj["shape_e"]
UNCHANGED, REUSED, GENERATE = "unchanged", "reused", "generate"
SPACING = 0.25  # metres between the variants of one object, as the generation operators lay them

# The last build, for scripts and the CLI, by spec object name: how its meshes were got
# (``how``), its job ``key`` and ``job_dir``, its ``objects``' names, or its ``error``.
last_build: dict[str, dict[str, Any]] = {}


@dataclass
class Planned:
    """One spec object and how its meshes are got."""

    obj: SpecObject
    key: jobkey.JobKey
    how: str  # UNCHANGED | REUSED | GENERATE
    job_dir: Path | None = None
    request: JobHandle | None = None


def read(
    path: str, p: prefs.ShapEPreferences, text_model: str = "", image_model: str = ""
) -> SceneSpec:
    """The spec, validated, with the preferences' models, device and precision where it names
    none (an operator's ``text_model`` / ``image_model`` take the place of its [defaults]')."""
    common = {n: SETTINGS[n].from_identifier(getattr(p, n)) for n in ("device", "precision")}
    spec = load_spec(
        path,
        text_model=text_model.strip() or None,
        image_model=image_model.strip() or None,
        common=common,
    )
    fallback = {"text": p.text_model.strip(), "image": p.image_model.strip()}

    def with_model(o: SpecObject) -> SpecObject:
        if o.params.model:
            return o
        return replace(o, params=replace(o.params, model=fallback[o.params.mode] or None))

    return replace(spec, objects=tuple(with_model(o) for o in spec.objects))


def plan(spec: SceneSpec, jobs_root: Path) -> list[Planned]:
    """How each object is got; makes no job folder (start() does, for what it sends)."""
    last_build.clear()
    built = built_objects(spec)
    planned = []
    for o in spec.objects:
        key = jobkey.job_key(o.params)
        existing = built.get(o.name, {})
        keys = {_settings(x).get(SPEC_KEY) for x in existing.values()}
        if keys == {key.key} and set(existing) == set(range(o.params.variants)):
            planned.append(Planned(o, key, UNCHANGED))
            continue
        done = jobkey.find_done(jobs_root, key.key, o.params.device, o.params.precision)
        planned.append(Planned(o, key, REUSED if done else GENERATE, done))
    return planned


def start(planned: list[Planned], client: WorkerClient, jobs_root: Path) -> list[JobHandle]:
    """Send a generate request for every object that needs one (in spec order)."""
    requests = []
    for item in planned:
        if item.how != GENERATE:
            continue
        item.job_dir = jobkey.new_keyed_dir(jobs_root, item.key, item.obj.name)
        item.request = client.generate(GenerateRequest(item.obj.params, job_dir=str(item.job_dir)))
        requests.append(item.request)
    return requests


def built_objects(spec: SceneSpec) -> dict[str, dict[int, bpy.types.Object]]:
    """This file's objects made from ``spec``: by spec object name, then variant. One pass over
    the file's objects serves a whole build (a per-object scan would read every object's
    settings once per spec object)."""
    found: dict[str, dict[int, bpy.types.Object]] = {}
    for obj in bpy.data.objects:
        s = importer.settings_of(obj) or {}
        if obj.library is None and s.get(SPEC) == str(spec.path):
            variant = s.get("variant")
            by_variant = found.setdefault(str(s.get(SPEC_OBJECT)), {})
            by_variant[variant if isinstance(variant, int) else 0] = obj
    return found


def _settings(obj: bpy.types.Object) -> dict[str, Any]:
    return importer.settings_of(obj) or {}


def finish_build(
    spec: SceneSpec, planned: list[Planned], task: Task, context: bpy.types.Context
) -> list[bpy.types.Object]:
    """Import and place every object that could be got; one undo step. Failures go to
    ``task.error``, listed by object; a cancelled build imports nothing."""
    errors = [i.request.error for i in planned if i.request is not None and i.request.error]
    if any(err.code == CANCELLED for err in errors):
        raise ShapEError(
            CANCELLED,
            "cancelled: nothing was imported",
            "the objects that finished are kept in their job folders: building the spec again "
            "imports them without generating them again",
        )
    built = built_objects(spec)  # before the imports: what the file held from this spec
    made: list[bpy.types.Object] = []
    failures: list[str] = []
    for item in planned:
        got: list[bpy.types.Object] = []
        error = None
        try:
            got = _get(spec, item, built.get(item.obj.name, {}), context)
        except ShapEError as err:
            error = str(err)
            failures.append(f"{item.obj.label}: {err}")
        made += got
        last_build[item.obj.name] = {
            "how": item.how,
            "key": item.key.key,
            "job_dir": str(item.job_dir) if item.job_dir else _job_dir_of(got),
            "objects": [o.name for o in got],
            "error": error,
        }
    listed = {o.name for o in spec.objects}
    for name, left in built.items():
        if name in listed:
            continue
        for obj in left.values():
            task.warnings.append(
                f"{obj.name} was made for {name!r}, which the spec no longer lists: it was "
                "left in the file (delete it if it is not wanted)"
            )
    importer.push_undo(f"Shap-E: build {spec.path.name}")
    counts = {how: sum(i.how == how for i in planned) for how in (UNCHANGED, REUSED, GENERATE)}
    task.verb = (
        f"Built {spec.path.name} ({counts[GENERATE]} generated, {counts[REUSED]} reused, "
        f"{counts[UNCHANGED]} unchanged):"
    )
    if failures:
        task.error = ShapEError(
            JOB_FAILED,
            f"{len(failures)} of {len(planned)} objects of {spec.path.name} failed:\n"
            + "\n".join(f"- {f}" for f in failures),
            "the other objects are in the scene; fix these and build again (finished objects "
            "are reused)",
            "filepath",
        )
    return made


def _get(
    spec: SceneSpec,
    item: Planned,
    existing: dict[int, bpy.types.Object],
    context: bpy.types.Context,
) -> list[bpy.types.Object]:
    """The spec object's objects, imported or updated from its job where needed, and placed;
    ``existing`` are the ones the file already held for it, by variant."""
    if item.how == UNCHANGED:
        objects = [existing[v] for v in sorted(existing)]
    else:
        if item.request is not None and item.request.error is not None:
            raise item.request.error
        assert item.job_dir is not None
        _, result = jobdir.load_result(item.job_dir)
        objects = _update(spec, item, result, existing, context)
    place(objects, item.obj, context)
    return objects


def _update(
    spec: SceneSpec,
    item: Planned,
    result: JobResult,
    existing: dict[int, bpy.types.Object],
    context: bpy.types.Context,
) -> list[bpy.types.Object]:
    """The entry's objects with the job's meshes: replaced in place where they exist, imported
    where not; variants the job no longer has are removed (they were made for this entry)."""
    made = result.made
    if not made:
        raise (
            result.skipped[0].skipped_error()
            if result.skipped
            else ShapEError(JOB_FAILED, "the job made no mesh", "generate again")
        )
    settings = finish.object_settings(result)
    ours = {SPEC: str(spec.path), SPEC_OBJECT: item.obj.name, SPEC_KEY: item.key.key}
    numbered = len(made) > 1 or item.obj.params.variants > 1
    new = [m for m in made if m.variant not in existing]
    objects = importer.import_meshes(
        context,
        [m.load() for m in new],
        name=item.obj.name,
        settings=settings,
        job_dir=result.job_dir,
        variants=[m.variant for m in new] if numbered else None,
        latents=[m.latent for m in new],
    ) if new else []  # fmt: skip
    for obj in objects:
        obj[importer.PROPERTY_KEY].update(ours)
    for m in made:
        old = existing.get(m.variant)
        if old is None:
            continue
        importer.check_editable(old)
        importer.replace_mesh(old, m.load())
        old[importer.PROPERTY_KEY] = (
            importer.variant_properties(settings, m.variant, result.job_dir, m.latent) | ours
        )
        objects.append(old)
    kept = {m.variant for m in made}
    for variant, gone in existing.items():
        if variant not in kept:
            bpy.data.objects.remove(gone, do_unlink=True)
    return sorted(objects, key=lambda o: _settings(o).get("variant", 0))


def place(objects: list[bpy.types.Object], o: SpecObject, context: bpy.types.Context) -> None:
    """Location, rotation, scale or size, and collection, as the spec says; the variants of one
    object stand side by side along +X from its location."""
    p = o.placement
    target = collection_for(cast(bpy.types.Scene, context.scene), p.collection_path)
    x = p.location[0]
    prev_half: float | None = None
    for obj in objects:
        lo, hi = _bounds(obj)
        obj.scale = (size_factor(np.stack([lo, hi]), p.size),) * 3 if p.size > 0 else p.scale
        obj.rotation_mode = "XYZ"
        obj.rotation_euler = tuple(math.radians(a) for a in p.rotation)
        half = float(hi[0] - lo[0]) * obj.scale[0] / 2
        if prev_half is not None:
            x += prev_half + SPACING + half
        prev_half = half
        obj.location = (x, p.location[1], p.location[2])
        _move_to(obj, target)
        if p.mark_asset:
            assets.mark(obj, _settings(obj), assets.Asset.of(prefs.get(context)))


def collection_for(scene: bpy.types.Scene, path: Iterable[str]) -> bpy.types.Collection:
    """The collection at ``path`` under the scene's, made (and linked) where missing."""
    parent = scene.collection
    for name in path:
        child = parent.children.get(name)
        if child is None:
            child = bpy.data.collections.get(name)
            if child is None or child.library is not None:
                child = bpy.data.collections.new(name)
            parent.children.link(child)
        parent = child
    return parent


def _move_to(obj: bpy.types.Object, target: bpy.types.Collection) -> None:
    if target not in obj.users_collection:
        target.objects.link(obj)
    for c in list(obj.users_collection):
        if c != target:
            c.objects.unlink(obj)


def _bounds(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    """The mesh's own bounding box (before the object's scale)."""
    n = len(obj.data.vertices)
    co = np.empty(n * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3) if n else np.zeros((1, 3), np.float32)
    return co.min(axis=0), co.max(axis=0)


def _job_dir_of(objects: list[bpy.types.Object]) -> str | None:
    folder = _settings(objects[0]).get("job_dir") if objects else None
    return folder if isinstance(folder, str) else None
