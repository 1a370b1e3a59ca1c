"""Mesh cleanup after marching cubes: weld, drop degenerate faces, drop small floating parts.

Plain numpy and scipy. trimesh has the same operations, but its processing also merges vertices
by a rounding tolerance and reorders data we index into; these few lines do exactly what the
extraction needs and nothing more.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def weld(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices at bit-identical positions and drop faces that collapse.

    Marching cubes run on separate slabs computes a seam vertex once per slab; both copies come
    from the same two grid values by the same arithmetic, so they are equal to the bit. A field
    value of exactly zero also puts several vertices on one grid point. After merging, faces with
    a repeated vertex are removed. Positions must not hold -0.0 (index-space coordinates are >= 0).
    """
    if len(vertices) == 0:
        return vertices, faces
    v = np.ascontiguousarray(vertices)
    rows = v.view(np.dtype((np.void, v.dtype.itemsize * 3))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    a, b, c = faces.T
    return v[first], faces[(a != b) & (b != c) & (a != c)]


def drop_zero_area(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces whose three corners are distinct but collinear (exactly zero area) are removed."""
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    cross = np.cross(b - a, c - a)
    return faces[np.any(cross != 0.0, axis=1)]


def drop_small_parts(
    vertex_count: int, faces: np.ndarray, min_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Keep connected parts with at least ``min_fraction`` of the largest part's face count.

    Parts are connected through shared vertices. Returns ``(faces, kept)``: faces renumbered over
    the kept vertices, and the indices of the kept vertices in the input (unreferenced vertices
    are dropped too, whatever ``min_fraction`` is).
    """
    if len(faces) and min_fraction > 0:
        edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
        graph = coo_matrix(
            (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
            shape=(vertex_count, vertex_count),
        )
        _, labels = connected_components(graph, directed=False)
        face_part = labels[faces[:, 0]]
        part_faces = np.bincount(face_part)
        faces = faces[part_faces[face_part] >= min_fraction * part_faces.max()]
    kept = np.unique(faces)
    remap = np.full(vertex_count, -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    return remap[faces], kept
