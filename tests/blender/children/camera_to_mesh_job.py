"""Child process for test_operators: camera_to_mesh with a real render and the real worker.

    python -m tests.blender.children.camera_to_mesh_job JOBS_DIR TINY_IMAGE_MODEL WORKER_PYTHON

Builds a small scene (a floor, a cube, a light, a camera looking at the cube), runs
``bpy.ops.shape_e.camera_to_mesh(selected_only=True)`` with the asset options (faces, texture,
size) in background (blocking) mode and prints ``RESULT {json}``: the created objects, their
settings, size and textures, and whether the render settings came back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import bpy

from tests.blender.children.camera_job import add_camera


def build_scene() -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=20.0)
    bpy.ops.object.light_add(type="SUN", location=(2.0, -3.0, 6.0))
    add_camera(scene, "Front Cam/2", (0.0, -5.0, 3.0), (0.0, 0.0, 0.5))
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.0, 0.0, 0.5))
    cube = bpy.context.active_object
    for obj in scene.objects:
        obj.select_set(obj == cube)


def main() -> int:
    import addon_utils  # importable once bpy is

    jobs_dir, model, worker_python = sys.argv[1:4]
    build_scene()
    assert addon_utils.enable("shape_e_blender", default_set=True) is not None
    from shape_e_blender.blender import prefs, tasks
    from shape_e_blender.core import jobdir
    from shape_e_blender.core.names import object_name_for

    p = prefs.get()
    p.worker_python, p.jobs_dir, p.image_model = worker_python, jobs_dir, model
    render = bpy.context.scene.render
    before = (render.resolution_x, render.engine, render.film_transparent)
    # With the asset options: the camera's render goes down the image path's whole way.
    result = bpy.ops.shape_e.camera_to_mesh(
        selected_only=True, steps=2, grid_size=32, faces=500, texture_size=64, size=0.5
    )
    after = (render.resolution_x, render.engine, render.film_transparent)
    objects = [bpy.data.objects[n] for n in tasks.status.objects]
    settings = objects[0]["shape_e"].to_dict() if objects else {}
    out = {
        "result": sorted(result),
        "objects": [o.name for o in objects],
        "polygons": sum(len(o.data.polygons) for o in objects),
        "settings": settings,
        "job_dir": settings.get("job_dir"),
        "render_restored": before == after,
        "largest_dimension": max(objects[0].dimensions) if objects else None,
        "texture_images": sorted(
            tuple(n.image.size)
            for o in objects
            for m in o.data.materials
            for n in m.node_tree.nodes
            if n.type == "TEX_IMAGE" and n.image
        ),
        # What Recent Jobs would name the objects when importing this job from its folder.
        "from_folder": object_name_for(jobdir.read_job(Path(settings["job_dir"])).name_source)
        if objects
        else None,
    }
    print("RESULT " + json.dumps(out, default=str), flush=True)
    addon_utils.disable("shape_e_blender", default_set=True)
    return 0 if result == {"FINISHED"} else 1


if __name__ == "__main__":
    sys.exit(main())
