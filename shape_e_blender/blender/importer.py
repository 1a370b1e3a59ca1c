"""MeshData -> a vertex-coloured Blender object standing on the 3D cursor.

Everything here touches bpy data, so it must run on Blender's main thread: from an operator, a
``bpy.app.timers`` callback or a script, never from the worker client's reader threads.

The mesh is written through the attribute API (``position``, ``.corner_vert``, ``loop_start``)
with ``foreach_set``: measured 7x to 10x faster than ``from_pydata`` and 2x to 6x faster than
Blender's own PLY and glTF importers (see docs/performance.md, "Blender import").
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import bpy
import numpy as np

from ..core import jobdir
from ..core.errors import INTERNAL_ERROR, INVALID_PARAMS, ShapEError, invalid
from ..core.mesh import MeshData, size_factor
from ..core.names import DEFAULT_NAME
from ..core.params import variant_seed
from . import compat
from .materials import (
    COLOR_ATTRIBUTE,
    UV_MAP,
    texture_image,
    texture_material,
    texture_node,
    vertex_color_material,
)

PROPERTY_KEY = "shape_e"  # obj["shape_e"] holds the generation settings as an ID-property group
# In obj["shape_e"], once re-meshed: the job folder that made it (job_dir is then the re-mesh's).
GENERATED_IN = "generated_in"
_INT32 = (-(2**31), 2**31 - 1)


def push_undo(message: str) -> bool:
    """Add one undo step (after an import done outside an operator, e.g. from a timer).

    Not needed after an import inside an operator registered with ``{'UNDO'}``: Blender pushes
    that operator's step itself, and a second one would split it in two.
    A timer callback runs with no window in its context, where ``ed.undo_push`` refuses to run:
    then the step is pushed with the first window as context. Returns False when no window could
    take it (nothing else goes wrong: the import itself stays).
    """
    if compat.can_run(bpy.ops.ed.undo_push):
        bpy.ops.ed.undo_push(message=message)
        return True
    for window in bpy.context.window_manager.windows:
        with bpy.context.temp_override(window=window, screen=window.screen):  # type: ignore[attr-defined, unused-ignore]  # 4.2's stubs: not a context manager
            if compat.can_run(bpy.ops.ed.undo_push):
                bpy.ops.ed.undo_push(message=message)
                return True
    return False


def ensure_undo_baseline() -> None:
    """Give background Blender an undo step to return to, before the scene changes.

    With ``blender -b`` or bpy as a module the undo stack does not exist until the first
    ``ed.undo_push`` (and loading a file clears it again). The step pushed after an import would
    then be the first one, and undo would have nothing to go back to. The UI always has a stack.
    ``ed.undo_history`` polls true only once the stack exists.
    """
    if bpy.app.background and not compat.can_run(bpy.ops.ed.undo_history):
        push_undo("Before Shap-E import")


def import_meshes(
    context: bpy.types.Context,
    meshes: Sequence[MeshData],
    *,
    name: str,
    settings: Mapping[str, object],
    job_dir: str | None = None,
    location: tuple[float, float, float] | None = None,
    spacing: float = 0.25,
    variants: Sequence[int] | None = None,
    latents: Sequence[str | None] | None = None,
    collection: bpy.types.Collection | None = None,
    size: float = 0.0,
) -> list[bpy.types.Object]:
    """Add one object per mesh, side by side along +X, selected, the first one active.

    Each object stands with its bottom centre at ``location`` (default: the 3D cursor), goes into
    ``collection`` (default: the active collection), and carries ``settings`` plus ``job_dir``
    and ``variant`` (its index) in the ID-property group ``obj["shape_e"]``; ``seed`` there is
    the variant's own seed. Values
    ID properties cannot hold exactly (ints beyond 32 bits, other objects) are stored as text.
    Objects are named ``name``, or ``name_0``, ``name_1``... for several variants. ``variants``
    gives each mesh's own variant number where some are missing (a variant with no surface): the
    objects are then always numbered, and each stores its number's seed. ``latents`` gives each
    mesh's saved latent file, stored as ``latent`` (what shape_e.remesh decodes again). All of
    them share one material that shows the vertex colours; a textured mesh gets a UV map and a
    material of its own on its texture (the job folder's texture.png). ``size`` scales each object
    so that its largest dimension is that many metres (0: the model's native size). On any error
    every datablock made so far is removed and the error is raised again: a failed import leaves
    the file as it was.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ShapEError(
            INTERNAL_ERROR,
            "the mesh import ran outside Blender's main thread",
            "import from an operator or a bpy.app.timers callback, never from a worker thread",
        )
    if not meshes:
        raise ShapEError(INVALID_PARAMS, "there is no mesh to import", "generate at least one")
    if variants is not None and len(variants) != len(meshes):
        raise ShapEError(
            INTERNAL_ERROR,
            f"{len(variants)} variant numbers for {len(meshes)} meshes",
            "pass one variant number per mesh",
        )
    if latents is not None and len(latents) != len(meshes):
        raise ShapEError(
            INTERNAL_ERROR,
            f"{len(latents)} latent paths for {len(meshes)} meshes",
            "pass one latent path (or None) per mesh",
        )
    latent_paths = list(latents) if latents is not None else [None] * len(meshes)
    numbered = variants is not None or len(meshes) > 1
    indices = list(variants) if variants is not None else list(range(len(meshes)))
    name = name.strip() or DEFAULT_NAME
    ensure_undo_baseline()
    scene = context.scene
    view_layer = context.view_layer
    collection = collection or context.collection or scene.collection
    origin = np.array(location if location is not None else scene.cursor.location, np.float64)

    created_objects: list[bpy.types.Object] = []
    created_meshes: list[bpy.types.Mesh] = []
    materials: list[bpy.types.Material] = []
    images: list[bpy.types.Image] = []
    shared: bpy.types.Material | None = None
    try:
        x = origin[0]
        prev_half_width: float | None = None
        for index, data, latent in zip(indices, meshes, latent_paths, strict=True):
            obj_name = f"{name}_{index}" if numbered else name
            vertices, half_width = _bottom_centred(data)
            factor = size_factor(data.vertices, size)
            half_width *= factor
            mesh = bpy.data.meshes.new(obj_name)
            created_meshes.append(mesh)
            _fill_mesh(mesh, vertices, data)
            if data.textured:
                png = jobdir.texture_path(job_dir, index) if job_dir else None
                images.append(texture_image(obj_name, data, png))
                materials.append(texture_material(obj_name, images[-1]))
                mesh.materials.append(materials[-1])
            else:
                if shared is None:
                    shared = vertex_color_material(name)
                    materials.append(shared)
                mesh.materials.append(shared)
            obj = bpy.data.objects.new(obj_name, mesh)
            created_objects.append(obj)
            obj.scale = (factor,) * 3
            if prev_half_width is not None:
                x += prev_half_width + spacing + half_width
            prev_half_width = half_width
            obj.location = (x, origin[1], origin[2])
            obj[PROPERTY_KEY] = variant_properties(settings, index, job_dir, latent)
            collection.objects.link(obj)

        # A freshly loaded file does not refresh view_layer.objects on link: without this the new
        # objects are not found there and end up neither selected nor active.
        view_layer.update()
        for obj in list(view_layer.objects.selected):
            obj.select_set(False)
        for obj in created_objects:
            # An excluded collection keeps the object out of the view layer: nothing to select.
            if view_layer.objects.get(obj.name) is not None:
                obj.select_set(True)
        if view_layer.objects.get(created_objects[0].name) is not None:
            view_layer.objects.active = created_objects[0]
    except BaseException:
        for obj in created_objects:
            bpy.data.objects.remove(obj, do_unlink=True)
        for mesh in created_meshes:
            bpy.data.meshes.remove(mesh)
        for material in materials:
            bpy.data.materials.remove(material)
        for image in images:
            bpy.data.images.remove(image)
        raise
    return created_objects


def settings_of(obj: bpy.types.ID | None) -> dict[str, Any] | None:
    """The generation settings stored on a mesh object this add-on made, else None."""
    if obj is None or getattr(obj, "type", None) != "MESH":
        return None
    group = obj.get(PROPERTY_KEY)  # type: ignore[func-returns-value, unused-ignore]  # 4.2's stubs: get() -> None
    # An ID-property group reads back with to_dict(); anything else under the key is not ours.
    to_dict = getattr(group, "to_dict", None)
    return to_dict() if callable(to_dict) else None


def generated_in(settings: Mapping[str, Any]) -> str | None:
    """The job folder whose variants an object is one of: kept across re-meshes."""
    job = settings.get(GENERATED_IN) or settings.get("job_dir")
    return job if isinstance(job, str) and job else None


def check_editable(obj: bpy.types.Object) -> None:
    """Raise (field ``object_name``) when ``obj``'s mesh cannot be replaced."""
    if obj.library is not None or obj.data.library is not None:
        raise invalid(
            "object_name",
            f"{obj.name!r} is linked from another file, so its mesh cannot be replaced",
            "re-mesh it in the file it comes from, or make it local first",
        )
    if obj.mode == "EDIT":
        raise invalid(
            "object_name", f"{obj.name!r} is in Edit Mode", "switch to Object Mode, then re-mesh"
        )


def replace_mesh(obj: bpy.types.Object, data: MeshData, png: Path | None = None) -> bpy.types.Mesh:
    """Give ``obj`` a new mesh built from ``data``, in place, and return it.

    The object itself (name, transform, parent, collections, modifiers, custom properties) is
    not touched. The new mesh stands on the object's origin like an imported one (bottom centre
    at the origin), takes over the old mesh's materials and, once the old mesh has no other user
    and is removed, its name. A textured mesh's new texture (``png``, or its own pixels) goes
    into the old texture material's Image Texture node, or into a new texture material where
    the object had none; an untextured mesh replacing a textured one gets a vertex-colour
    material. Everything is built before the object is switched to it: on any
    error the new mesh is removed and the object keeps its old one. No undo step is pushed here.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ShapEError(
            INTERNAL_ERROR,
            "the mesh replacement ran outside Blender's main thread",
            "call it from an operator or a bpy.app.timers callback, never from a worker thread",
        )
    if obj.type != "MESH":
        raise ShapEError(
            INVALID_PARAMS, f"{obj.name!r} is not a mesh object", "pick a Shap-E mesh object"
        )
    vertices, _ = _bottom_centred(data)
    old = cast(bpy.types.Mesh, obj.data)  # a Shap-E object's data is a mesh (checked above)
    ensure_undo_baseline()
    mesh = bpy.data.meshes.new(old.name)
    image = None
    made: list[bpy.types.Material] = []
    try:
        _fill_mesh(mesh, vertices, data)
        materials = list(old.materials)
        if data.textured:
            image = texture_image(obj.name, data, png)
            nodes = [texture_node(m) for m in materials]
            if any(n is not None for n in nodes):
                for node in nodes:
                    if node is not None:
                        node.image = image
            else:
                made.append(texture_material(obj.name, image))
        elif any(texture_node(m) is not None for m in materials):
            # Re-meshed without a texture: its texture material has no UV map to read.
            made.append(vertex_color_material(obj.name))
        for material in made or materials:
            mesh.materials.append(material)
        obj.data = mesh
    except BaseException:
        if obj.data == mesh:  # bpy wraps each access anew: compare with ==, not "is"
            obj.data = old
        bpy.data.meshes.remove(mesh)
        for material in made:
            bpy.data.materials.remove(material)
        if image is not None:
            bpy.data.images.remove(image)
        raise
    if old.users == 0:
        name = old.name
        bpy.data.meshes.remove(old)
        mesh.name = name
    return mesh


def _bottom_centred(data: MeshData) -> tuple[np.ndarray, float]:
    """Vertices moved so the bounding box's bottom centre is the origin; half the X width."""
    vertices = data.vertices
    if len(vertices) == 0:
        raise ShapEError(INVALID_PARAMS, "the mesh has no vertices", "try another seed or prompt")
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    shift = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]], np.float32)
    return vertices - shift, float(hi[0] - lo[0]) / 2


def _fill_mesh(mesh: bpy.types.Mesh, vertices: np.ndarray, data: MeshData) -> None:
    faces, colors, uvs = data.faces, data.colors, data.uvs
    # A triangle that names one vertex twice is invalid in Blender (mesh.validate() would delete
    # it, at 3x the cost of the whole import); marching cubes can emit such slivers.
    if len(faces):
        keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
        keep &= faces[:, 0] != faces[:, 2]
        if not keep.all():
            faces = faces[keep]
            uvs = uvs[keep] if uvs is not None else None
    corners = np.ascontiguousarray(faces, dtype=np.int32).ravel()
    mesh.vertices.add(len(vertices))
    mesh.loops.add(len(corners))
    mesh.polygons.add(len(faces))
    # Named attributes come back as the base Attribute type; these are a mesh's built-in ones.
    position = cast(bpy.types.FloatVectorAttribute, mesh.attributes["position"])
    position.data.foreach_set("vector", vertices.ravel())
    if len(faces):
        corner_vert = cast(bpy.types.IntAttribute, mesh.attributes[".corner_vert"])
        corner_vert.data.foreach_set("value", corners)
        # Blender 4.0+ derives each face's size from the next face's loop_start.
        mesh.polygons.foreach_set("loop_start", np.arange(0, len(corners), 3, dtype=np.int32))
    if uvs is not None:
        # One (u, v) per face corner, in the corners' order: the loops are the faces' corners.
        # A textured mesh has no colour attribute: glTF exporters write one as COLOR_0, which
        # glTF multiplies into the texture (Blender 5.2's importer does so with a Mix node).
        mesh.uv_layers.new(name=UV_MAP).uv.foreach_set("vector", uvs.ravel())
    else:
        rgba = np.empty((len(colors), 4), np.float32)
        rgba[:, :3] = colors
        rgba[:, 3] = 1.0
        attr = cast(
            bpy.types.FloatColorAttribute,
            mesh.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT"),
        )
        # "color" is the linear value (as MeshData holds it); "color_srgb" would convert.
        attr.data.foreach_set("color", rgba.ravel())
        mesh.color_attributes.active_color = attr
        index = cast(int, mesh.color_attributes.active_color_index)
        mesh.color_attributes.render_color_index = index
    # Builds the edges (there are none yet); validate() is not needed for this input.
    mesh.update()
    mesh.shade_smooth()


def variant_properties(
    settings: Mapping[str, object], index: int, job_dir: str | None, latent: str | None = None
) -> dict[str, Any]:
    props = _id_safe_dict(settings)
    seed = settings.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        props["seed"] = variant_seed(seed, index)
    props["variant"] = index
    if job_dir is not None:
        props["job_dir"] = str(job_dir)
    if latent is not None:
        props["latent"] = str(latent)
    return props


def _id_safe_dict(values: Mapping[Any, object]) -> dict[str, Any]:
    return {str(k): v for k, v in ((k, _id_safe(v)) for k, v in values.items()) if v is not None}


def _id_safe(value: object) -> Any:
    """A value ID properties can hold without loss or error: 32-bit ints, floats, strings."""
    if value is None or isinstance(value, (bool, float, str)):
        return value
    if isinstance(value, int):
        return value if _INT32[0] <= value <= _INT32[1] else str(value)
    if isinstance(value, Mapping):
        return _id_safe_dict(value)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, int) and _INT32[0] <= v <= _INT32[1] for v in value) or all(
            isinstance(v, float) for v in value
        ):
            return list(value)
        return json.dumps(value, default=str)
    if isinstance(value, np.generic):
        return _id_safe(value.item())
    return str(value)
