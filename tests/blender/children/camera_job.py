"""Child process of test_camera: a red cube on a big grey floor, captured through the camera.

python -m tests.blender.children.camera_job OUT_DIR

Prints RESULT_JSON with the PNG paths, the settings before and after each capture, and the error
of a capture that fails inside the render step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import bpy
from mathutils import Vector

from shape_e_blender.blender import compat
from shape_e_blender.blender.camera import render_camera_image
from tests.support import emit_result

RED = (0.8, 0.02, 0.02, 1.0)
GREY = (0.5, 0.5, 0.5, 1.0)


def _material(name: str, color: tuple[float, float, float, float]) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    compat.use_nodes(mat)
    bsdf = next(n for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    bsdf.inputs["Base Color"].default_value = color
    return mat


def add_camera(
    scene: bpy.types.Scene,
    name: str,
    location: tuple[float, float, float],
    target: tuple[float, float, float],
) -> bpy.types.Object:
    """A camera at ``location`` looking at ``target``, made the scene's active camera."""
    camera = bpy.data.objects.new(name, bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = location
    camera.rotation_euler = (Vector(target) - camera.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera
    return camera


def build_scene() -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=40.0)
    floor = bpy.context.active_object
    floor.name = "Floor"
    floor.data.materials.append(_material("grey", GREY))
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(3.0, 0.0, 0.5))
    bpy.context.active_object.name = "HiddenByUser"
    bpy.context.active_object.hide_render = True  # the user's own choice: must stay hidden
    bpy.ops.object.light_add(type="SUN", location=(2.0, -3.0, 6.0), rotation=(0.6, 0.2, 0.3))
    bpy.context.active_object.data.energy = 4.0
    add_camera(scene, "Camera", (0.0, -6.0, 3.5), (0.0, 0.0, 0.6))
    bpy.ops.mesh.primitive_cube_add(size=1.2, location=(0.0, 0.0, 0.6))
    cube = bpy.context.active_object
    cube.name = "Cube"
    cube.data.materials.append(_material("red", RED))
    for obj in scene.objects:
        obj.select_set(obj == cube)


def set_user_settings(scene: bpy.types.Scene) -> None:
    """Settings unlike the capture's own, so that a missed restore shows."""
    render = scene.render
    render.engine = "BLENDER_WORKBENCH"
    render.resolution_x, render.resolution_y, render.resolution_percentage = 1920, 1080, 50
    render.film_transparent = False
    render.use_compositing = True
    render.use_sequencer = True
    render.filepath = "//renders/frame_"
    if compat.HAS_MEDIA_TYPE:
        render.image_settings.media_type = "IMAGE"
    render.image_settings.file_format = "JPEG"
    render.image_settings.quality = 77
    scene.view_settings.view_transform = "AgX"
    scene.view_settings.look = "AgX - Punchy"
    scene.view_settings.exposure = 0.5
    scene.cycles.samples = 1000
    scene.cycles.use_denoising = True
    scene.eevee.taa_render_samples = 33


def _plain_properties(struct: Any) -> dict[str, Any]:
    """Every bool/int/float/string/enum property of an RNA struct (all its settings)."""
    out: dict[str, Any] = {}
    for prop in struct.bl_rna.properties:
        if prop.type in {"POINTER", "COLLECTION"} or prop.identifier == "rna_type":
            continue
        value = getattr(struct, prop.identifier)
        if hasattr(value, "__len__") and not isinstance(value, str):
            value = list(value)
        if isinstance(value, set):
            value = sorted(value)
        out[prop.identifier] = value
    return out


def snapshot(scene: bpy.types.Scene) -> dict[str, Any]:
    return {
        "render": _plain_properties(scene.render),
        "image_settings": _plain_properties(scene.render.image_settings),
        "view_settings": _plain_properties(scene.view_settings),
        "cycles": _plain_properties(scene.cycles),
        "eevee": _plain_properties(scene.eevee),
        "camera": scene.camera.name if scene.camera else None,
        "objects": {
            o.name: {"hide_render": o.hide_render, "selected": o.select_get()}
            for o in scene.objects
        },
    }


def main(out_dir: str) -> None:
    out = Path(out_dir)
    build_scene()
    context = bpy.context
    scene = context.scene
    set_user_settings(scene)
    before = snapshot(scene)
    selected = render_camera_image(
        context, out / "selected.png", selected_only=True, resolution=128
    )
    after_selected = snapshot(scene)
    everything = render_camera_image(context, out / "all.png", selected_only=False, resolution=128)
    after_all = snapshot(scene)
    # A folder as the output path: the render runs, then saving it fails inside the capture.
    (out / "a_folder.png").mkdir()
    try:
        render_camera_image(context, out / "a_folder.png", selected_only=True, resolution=32)
        error = None
    except Exception as exc:  # reported to the test, which checks it
        error = f"{type(exc).__name__}: {exc}"
    after_error = snapshot(scene)
    emit_result(
        {
            "selected": str(selected),
            "all": str(everything),
            "before": before,
            "after_selected": after_selected,
            "after_all": after_all,
            "after_error": after_error,
            "error": error,
        }
    )


if __name__ == "__main__":
    main(sys.argv[1])
