"""The worker's exported files (GLB, PLY, OBJ) read by this Blender's own importers: the same
frame, winding and colours, on every Blender of the matrix. The worker's Python writes them (PLY
and OBJ go through trimesh, which Blender's Python lacks)."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
import pytest

from tests.shapes import BOX_HI, BOX_LO, SRGB8_LINEAR_TOL, corner_box, outward
from tests.support import WORKER_PYTHON, run_child

EXPORT = """
import sys
from shape_e_blender.worker.mesh.export import export_mesh
from tests.shapes import corner_box
print(export_mesh(corner_box(), sys.argv[1]))
"""


def _export(path: Path) -> Path:
    proc = run_child(WORKER_PYTHON, "-c", EXPORT, str(path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(proc.stdout.strip())


def _blender_import(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-space vertices, per-vertex linear colours and triangles of the one imported mesh."""
    bpy.ops.wm.read_homefile(use_empty=True)
    importers = {
        ".glb": bpy.ops.import_scene.gltf,
        ".ply": bpy.ops.wm.ply_import,
        ".obj": bpy.ops.wm.obj_import,
    }
    assert importers[path.suffix](filepath=str(path)) == {"FINISHED"}
    objects = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    assert len(objects) == 1
    obj = objects[0]
    me = obj.data
    m = np.array(obj.matrix_world)
    co = np.array([v.co for v in me.vertices], dtype=np.float64)
    world = co @ m[:3, :3].T + m[:3, 3]
    attr = me.color_attributes[0]
    colors = np.zeros((len(me.vertices), 3))
    if attr.domain == "POINT":
        colors[:] = [tuple(d.color)[:3] for d in attr.data]
    else:  # CORNER: every corner of a vertex carries the same colour here
        for loop, d in zip(me.loops, attr.data, strict=True):
            colors[loop.vertex_index] = tuple(d.color)[:3]
    faces = np.array([tuple(p.vertices) for p in me.polygons])
    return world, colors, faces


@pytest.mark.parametrize("suffix", [".glb", ".ply", ".obj"])
def test_blender_reimport_keeps_frame_and_colours(tmp_path, suffix):
    mesh = corner_box()
    path = _export(tmp_path / f"box{suffix}")

    world, colors, faces = _blender_import(path)

    assert len(world) == mesh.vertex_count and len(faces) == mesh.face_count
    # The same bounds: Z stays the tall axis.
    np.testing.assert_allclose(world.min(0), BOX_LO, atol=1e-5)
    np.testing.assert_allclose(world.max(0), BOX_HI, atol=1e-5)
    assert outward(world, faces)
    # Match vertices by position: importers may reorder them.
    nearest = np.linalg.norm(world[:, None] - mesh.vertices[None], axis=2).argmin(axis=1)
    assert sorted(nearest) == list(range(mesh.vertex_count))
    np.testing.assert_allclose(colors, mesh.colors[nearest], atol=SRGB8_LINEAR_TOL)
    bpy.ops.wm.read_homefile(use_empty=True)
