"""Asset-ready meshes: decimation, a UV map, and a base-colour texture baked from the colour field.

Decimation is fast-simplification's quadric edge collapse (Garland and Heckbert): it keeps the
outline and leaves a closed mesh closed; where it pinches a thin part into an edge or a vertex
that two sheets share, the vertices there are split (cleanup.unpinch), and a part folded flat
into two faces on the same vertices loses both (cleanup.drop_doubled_faces). Its colours are not
interpolated from the dense mesh: the model's colour field is queried again at the decimated
vertices.

The texture is baked from the model's own colour field, not from the vertex colours: xatlas cuts
the (decimated) mesh into charts and packs them into the square; every texel centre that a chart's
triangle covers is mapped back to its point on the surface through its barycentric coordinates,
and the field is evaluated there. The texture is then sharper than the mesh: a 1024 texture on a
20,000-face mesh holds about 30 colour samples per triangle. Texels off the charts take the colour
of the nearest texel on a chart (a dilation across the seams, as far as the charts' gaps reach),
so mipmapping and bilinear filtering never pull in a fill colour.

UV convention: (u, v) in 0..1 with v up (Blender's and OpenGL's); the texture array is stored as
a PNG is, row 0 at the top, so texel (row r, column c) has its centre at
u = (c + 0.5) / size, v = 1 - (r + 0.5) / size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from ...core.mesh import MeshData
from .cleanup import drop_doubled_faces, unpinch
from .export import linear_to_srgb8

log = logging.getLogger(__name__)

ColorField = Callable[[torch.Tensor], torch.Tensor]  # (N, 3) points -> (N, 3) linear RGB
Progress = Callable[[float], None]  # a share of the work done, 0..1

_CANDIDATES_PER_PASS = 1 << 21  # texel candidates tested at once: bounds the memory (~200 MB)
_INSIDE_EPS = -1e-7  # barycentric slack: a texel centre on a shared edge belongs to a triangle


def field_colors(color: ColorField, points: np.ndarray) -> np.ndarray:
    """Linear RGB in 0..1 of the field at (N, 3) points, as float32 numpy."""
    out = color(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)))
    return out.clamp(0.0, 1.0).cpu().numpy().astype(np.float32)


def decimate(mesh: MeshData, target: int, color: ColorField) -> MeshData:
    """``mesh`` with about ``target`` faces (unchanged when it has no more); colours re-queried.

    fast-simplification rather than trimesh's wrapper of it: trimesh's would re-process the
    mesh (merge and reorder) first, and the target count is the same call either way.
    """
    if target <= 0 or mesh.face_count <= target:
        return mesh
    import fast_simplification  # a compiled extension used only here

    vertices, faces = fast_simplification.simplify(mesh.vertices, mesh.faces, target_count=target)
    faces, source = unpinch(drop_doubled_faces(faces), len(vertices))
    vertices = vertices[source].astype(np.float32)
    log.info("decimated %d -> %d faces", mesh.face_count, len(faces))
    return MeshData(vertices, faces, field_colors(color, vertices))


def unwrap(mesh: MeshData, size: int) -> np.ndarray:
    """Per-corner UVs (faces, 3, 2) of a new xatlas atlas for a ``size`` square texture.

    The mesh should be decimated first: xatlas's time grows faster than the face count
    (core/params.py's UV_MAX_FACES bounds it). Its charts are packed with a few texels of
    padding between them, room for the bake's dilation.
    """
    import xatlas  # a compiled extension used only here

    atlas = xatlas.Atlas()
    atlas.add_mesh(mesh.vertices, mesh.faces.astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = size
    pack.padding = max(2, size // 256)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, indices, uvs = atlas[0]
    # xatlas keeps the faces' order and corners; it only splits vertices along the seams.
    if not np.array_equal(vmapping[indices], mesh.faces):
        raise RuntimeError("xatlas changed the mesh's faces while unwrapping it")
    log.info(
        "unwrapped %d faces into %d charts (%.0f%% of the square)",
        mesh.face_count,
        atlas.chart_count,
        100 * atlas.utilization,
    )
    # The atlas's own pixel size is about ``size`` but not exactly: its UVs are normalised to
    # 0..1, so the charts fill the square as they would the atlas.
    return np.ascontiguousarray(uvs[indices], dtype=np.float32)


def texel_points(
    mesh: MeshData, uvs: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every texel centre covered by a triangle: ``(rows, cols, points)``, points on the surface.

    A rasteriser in numpy, vectorised over the triangles: each triangle's bounding box of texel
    centres is tested with its barycentric coordinates, a bounded number of candidates per pass.
    """
    # Texel space: texel (r, c) has its centre at x = c, y = r.
    x = uvs[..., 0].astype(np.float64) * size - 0.5
    y = (1.0 - uvs[..., 1].astype(np.float64)) * size - 0.5
    c0 = np.clip(np.ceil(x.min(axis=1)), 0, size - 1).astype(np.int64)
    c1 = np.clip(np.floor(x.max(axis=1)), 0, size - 1).astype(np.int64)
    r0 = np.clip(np.ceil(y.min(axis=1)), 0, size - 1).astype(np.int64)
    r1 = np.clip(np.floor(y.max(axis=1)), 0, size - 1).astype(np.int64)
    width = np.maximum(c1 - c0 + 1, 0)
    counts = width * np.maximum(r1 - r0 + 1, 0)
    # Twice the signed area; a triangle of no area in UV space covers nothing.
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    counts[np.abs(area) < 1e-12] = 0

    rows, cols, points = [], [], []
    vertices = mesh.vertices.astype(np.float64)
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _CANDIDATES_PER_PASS, side="right")), start + 1)
        tri = np.repeat(np.arange(start, stop), counts[start:stop])
        offset = np.arange(len(tri)) - np.repeat(
            ends[start:stop] - counts[start:stop] - base, counts[start:stop]
        )
        col = c0[tri] + offset % width[tri]
        row = r0[tri] + offset // np.maximum(width[tri], 1)
        px, py = col.astype(np.float64), row.astype(np.float64)
        tx, ty = x[tri], y[tri]
        # Barycentric coordinates of the texel centre in its candidate triangle.
        w1 = (px - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (tx[:, 2] - tx[:, 0]) * (py - ty[:, 0])
        w2 = (tx[:, 1] - tx[:, 0]) * (py - ty[:, 0]) - (px - tx[:, 0]) * (ty[:, 1] - ty[:, 0])
        w1 /= area[tri]
        w2 /= area[tri]
        w0 = 1.0 - w1 - w2
        inside = (w0 >= _INSIDE_EPS) & (w1 >= _INSIDE_EPS) & (w2 >= _INSIDE_EPS)
        tri, w = tri[inside], np.stack([w0[inside], w1[inside], w2[inside]], axis=1)
        corners = vertices[mesh.faces[tri]]  # (k, 3 corners, xyz)
        points.append(np.einsum("kc,kcx->kx", w, corners))
        rows.append(row[inside])
        cols.append(col[inside])
        start = stop
    if not rows:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros((0, 3))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(points)


def bake(
    mesh: MeshData, uvs: np.ndarray, size: int, color: ColorField
) -> tuple[np.ndarray, np.ndarray]:
    """The texture (size, size, 3) of linear RGB, and the mask of texels on a chart."""
    rows, cols, points = texel_points(mesh, uvs, size)
    covered = np.zeros((size, size), bool)
    covered[rows, cols] = True
    image = np.zeros((size, size, 3), np.float32)
    # A texel on an edge shared by two triangles is written twice with the same surface point.
    image[rows, cols] = field_colors(color, points)
    if covered.any():
        # Dilation: every texel off the charts takes its nearest chart texel's colour.
        nearest = distance_transform_edt(~covered, return_distances=False, return_indices=True)
        image = image[nearest[0], nearest[1]]
    return image, covered


def textured(mesh: MeshData, size: int, color: ColorField) -> MeshData:
    """``mesh`` with a UV map and a ``size`` texture baked from ``color`` (see the docstring)."""
    uvs = unwrap(mesh, size)
    image, covered = bake(mesh, uvs, size, color)
    log.info("baked a %d texture: %d texels on the charts", size, int(covered.sum()))
    return MeshData(mesh.vertices, mesh.faces, mesh.colors, uvs=uvs, texture=linear_to_srgb8(image))
