"""Import meshes the add-on's way and render them to a PNG: test_render's pictures, the README's.

python -m tests.blender.children.showcase MESH.npz [MESH.npz ...] -o out/render.png
       [--name "a red chair"] [--engine CYCLES|WORKBENCH] [--resolution 512] [--samples 32]
       [--width 1024] [--azimuth 30]

Runs in its own process (rendering can abort a process where OpenGL is missing). Cycles shows
the material the add-on builds (Color Attribute -> Principled BSDF); Workbench with flat light
shows the colour attribute itself, untouched by lighting, so its pixels can be checked exactly.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector

from shape_e_blender.blender import compat
from shape_e_blender.blender.importer import import_meshes
from shape_e_blender.core.mesh import MeshData
from shape_e_blender.core.names import object_name_for
from tests.support import emit_result


def frame_objects(
    context: bpy.types.Context,
    objects: Sequence[bpy.types.Object],
    *,
    azimuth_deg: float = 30.0,
    elevation_deg: float = 15.0,
    lens_mm: float = 50.0,
    margin: float = 0.9,
) -> bpy.types.Object:
    """Add the scene camera, looking at the objects from the front (-Y), turned by the azimuth."""
    context.view_layer.update()
    corners = np.array(
        [tuple(o.matrix_world @ Vector(c)) for o in objects for c in o.bound_box], np.float64
    )
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    center = Vector(((lo + hi) / 2).tolist())
    radius = float(np.linalg.norm(hi - lo)) / 2
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.data.lens = lens_mm
    context.scene.collection.objects.link(camera)
    half_fov = camera.data.angle / 2
    distance = margin * radius / math.sin(half_fov)
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = Vector((math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)))
    camera.location = center + direction * distance
    camera.rotation_euler = (center - camera.location).to_track_quat("-Z", "Y").to_euler()
    context.scene.camera = camera
    return camera


def add_lights(context: bpy.types.Context) -> None:
    """A sun from the front left and a soft grey sky, so no side is black."""
    scene = context.scene
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(50), 0.0, math.radians(-30))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("Sky")
    compat.use_nodes(world)
    background = next(n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
    background.inputs["Color"].default_value = (0.6, 0.6, 0.6, 1.0)
    background.inputs["Strength"].default_value = 0.6
    scene.world = world


def render_png(
    context: bpy.types.Context,
    path: str | Path,
    *,
    engine: str = "CYCLES",
    resolution: int = 512,
    samples: int = 32,
    width: int = 0,
) -> Path:
    """Render the scene camera to an RGBA PNG with a transparent background, ``resolution``
    pixels high and ``width`` wide (0: square)."""
    scene = context.scene
    render = scene.render
    render.engine = "BLENDER_WORKBENCH" if engine == "WORKBENCH" else engine
    if engine == "CYCLES":
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False
    else:
        shading = scene.display.shading
        shading.color_type = "VERTEX"  # the active colour attribute
        shading.light = "FLAT"
    render.resolution_x, render.resolution_y = width or resolution, resolution
    render.resolution_percentage = 100
    render.film_transparent = True
    render.dither_intensity = 0.0  # exact colours for the checks
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGBA"
    render.image_settings.color_depth = "8"
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    render.filepath = str(out)
    render.use_file_extension = False
    bpy.ops.render.render(write_still=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.blender.children.showcase")
    parser.add_argument("meshes", nargs="+", help="mesh.npz files (MeshData)")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--name", default="", help="the prompt or image the meshes came from")
    parser.add_argument("--engine", choices=("CYCLES", "WORKBENCH"), default="CYCLES")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--width", type=int, default=0, help="a wide picture (0: square)")
    parser.add_argument("--azimuth", type=float, default=30.0, help="degrees from the front")
    args = parser.parse_args(argv)

    bpy.ops.wm.read_homefile(use_empty=True)
    context = bpy.context
    meshes = [MeshData.load(p) for p in args.meshes]
    label = args.name or Path(args.meshes[0]).parent.name
    objects = import_meshes(
        context,
        meshes,
        name=object_name_for(label),
        settings={"prompt": label},
        location=(0.0, 0.0, 0.0),
        spacing=1.0 if args.width > args.resolution else 0.25,  # a row, told apart
    )
    # A wide picture is of a row: all of it in frame (a square one may crop the corners).
    margin = 1.1 if args.width > args.resolution else 0.9
    frame_objects(context, objects, azimuth_deg=args.azimuth, margin=margin)
    add_lights(context)
    out = render_png(
        context,
        args.output,
        engine=args.engine,
        resolution=args.resolution,
        samples=args.samples,
        width=args.width,
    )
    print(f"wrote {out}", file=sys.stderr)
    emit_result({"path": str(out), "objects": [o.name for o in objects]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
