"""Blender import of a 200k-triangle vertex-coloured mesh, side by side in one run:

- import_meshes (the add-on's importer: attribute API + foreach_set), from MeshData in memory,
  and from the worker's mesh.npz file (MeshData.load + import_meshes);
- Mesh.from_pydata plus the same colour attribute (what a plain add-on would write);
- Blender's PLY importer (bpy.ops.wm.ply_import) on a binary PLY with 8-bit sRGB colours;
- Blender's glTF importer (bpy.ops.import_scene.gltf) on a GLB with COLOR_0.

Each is timed on a fresh empty scene; the table gives the median and the ratio to import_meshes.

    .venv-blender-5.2/bin/python benchmarks/bench_import.py [--repeat 5] [--segments 316]

The files are written with numpy and trimesh (benchmark only: the add-on imports neither).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bpy
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from tests.blender.shapes import linear_to_srgb, uv_sphere  # noqa: E402

from shape_e_blender.blender.importer import import_meshes  # noqa: E402
from shape_e_blender.core.mesh import MeshData  # noqa: E402


def write_ply(path: Path, mesh: MeshData) -> None:
    """Binary PLY; readers take 8-bit colours as sRGB, so encode before quantising."""
    srgb = np.round(linear_to_srgb(mesh.colors) * 255).astype(np.uint8)
    vertex = np.empty(
        mesh.vertex_count,
        dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")],
    )
    vertex["x"], vertex["y"], vertex["z"] = mesh.vertices.T
    vertex["r"], vertex["g"], vertex["b"] = srgb.T
    face = np.empty(mesh.face_count, dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face["n"], face["v"] = 3, mesh.faces
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {mesh.vertex_count}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {mesh.face_count}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    path.write_bytes(header.encode("ascii") + vertex.tobytes() + face.tobytes())


def write_glb(path: Path, mesh: MeshData) -> bool:
    try:
        import trimesh  # benchmark only; absent from the Blender test venvs
    except ImportError:
        print("trimesh is not installed: no glTF row", file=sys.stderr)
        return False
    srgb = np.round(linear_to_srgb(mesh.colors) * 255).astype(np.uint8)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=srgb, process=False)
    tm.export(path)
    return True


def time_on_empty_scene(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        bpy.ops.wm.read_homefile(use_empty=True)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def from_pydata(mesh: MeshData) -> None:
    me = bpy.data.meshes.new("pydata")
    me.from_pydata(mesh.vertices, [], mesh.faces)
    rgba = np.ones((mesh.vertex_count, 4), np.float32)
    rgba[:, :3] = mesh.colors
    me.color_attributes.new("Color", "FLOAT_COLOR", "POINT").data.foreach_set("color", rgba.ravel())
    me.update()
    bpy.context.collection.objects.link(bpy.data.objects.new("pydata", me))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--segments", type=int, default=316, help="316 gives ~200k triangles")
    args = parser.parse_args()

    mesh = uv_sphere(1.0, rings=args.segments + 1, segments=args.segments)
    tmp = Path(tempfile.mkdtemp(prefix="bench_import_"))
    npz, ply, glb = tmp / "mesh.npz", tmp / "mesh.ply", tmp / "mesh.glb"
    mesh.save(npz)
    write_ply(ply, mesh)
    has_glb = write_glb(glb, mesh)

    def ours() -> None:
        import_meshes(bpy.context, [mesh], name="ours", settings={})

    def ours_from_file() -> None:
        import_meshes(bpy.context, [MeshData.load(npz)], name="ours", settings={})

    cases: dict[str, Callable[[], object]] = {
        "import_meshes (MeshData in memory)": ours,
        "MeshData.load(npz) + import_meshes": ours_from_file,
        "from_pydata + colour attribute": lambda: from_pydata(mesh),
        "PLY importer (wm.ply_import)": lambda: bpy.ops.wm.ply_import(filepath=str(ply)),
    }
    if has_glb:
        cases["glTF importer (import_scene.gltf)"] = lambda: bpy.ops.import_scene.gltf(
            filepath=str(glb)
        )
    for fn in cases.values():  # warm-up: first-call costs (add-on imports, caches)
        time_on_empty_scene(fn, 1)
    medians = {
        label: statistics.median(time_on_empty_scene(fn, args.repeat))
        for label, fn in cases.items()
    }

    base = medians["import_meshes (MeshData in memory)"]
    print(
        f"Blender {bpy.app.version_string}, {mesh.face_count} triangles, {mesh.vertex_count} "
        f"vertices, median of {args.repeat}"
    )
    print(f"| {'method':<36} | {'ms':>8} | {'x import_meshes':>15} |")
    print(f"|{'-' * 38}|{'-' * 9}:|{'-' * 16}:|")
    for label, seconds in medians.items():
        print(f"| {label:<36} | {seconds * 1000:8.1f} | {seconds / base:15.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
