"""Analytic coloured meshes built with numpy, where the right answer is known.

Standard library, numpy and our core only: the worker's tests and every Blender version we test
use them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shape_e_blender.core.mesh import MeshData

ColorFn = Callable[[np.ndarray], np.ndarray]


def uv_sphere(
    radius: float = 1.0,
    *,
    rings: int = 8,
    segments: int = 12,
    center: tuple[float, float, float] = (0.0, 0.0, 0.0),
    color: ColorFn | tuple[float, float, float] | None = None,
) -> MeshData:
    """A UV sphere of triangles, counter-clockwise seen from outside.

    ``color`` maps the (N, 3) unit-sphere points to linear RGB, or is one colour; the default is a
    gradient of the position, so every vertex has its own colour.
    """
    theta = np.linspace(0.0, np.pi, rings + 1)[1:-1]  # latitudes without the poles
    phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    unit = np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]])
    top, bottom = 0, len(unit) - 1

    def ring_index(r: int, s: np.ndarray) -> np.ndarray:
        return 1 + r * segments + s % segments

    s = np.arange(segments)
    faces = [np.stack([np.full(segments, top), ring_index(0, s), ring_index(0, s + 1)], -1)]
    for r in range(rings - 2):
        a, b = ring_index(r, s), ring_index(r, s + 1)
        c, d = ring_index(r + 1, s), ring_index(r + 1, s + 1)
        faces += [np.stack([a, c, d], -1), np.stack([a, d, b], -1)]
    last = rings - 2
    faces.append(
        np.stack([ring_index(last, s + 1), ring_index(last, s), np.full(segments, bottom)], -1)
    )
    if color is None:
        colors = (unit + 1.0) / 2.0
    elif callable(color):
        colors = color(unit)
    else:
        colors = np.broadcast_to(np.asarray(color, np.float64), unit.shape)
    return MeshData(unit * radius + np.asarray(center), np.concatenate(faces), colors)


def merge(*meshes: MeshData) -> MeshData:
    """Several meshes as one (one object with separate parts, as Shap-E can produce)."""
    offsets = np.cumsum([0] + [m.vertex_count for m in meshes[:-1]])
    return MeshData(
        np.concatenate([m.vertices for m in meshes]),
        np.concatenate([m.faces + o for m, o in zip(meshes, offsets, strict=True)]),
        np.concatenate([m.colors for m in meshes]),
    )


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)


# A snowman in three flat colours: the render test finds each colour in the picture.
SNOWMAN_COLORS = {
    "body": (0.05, 0.20, 0.80),  # blue
    "head": (0.80, 0.05, 0.03),  # red
    "hat": (0.90, 0.60, 0.02),  # orange-yellow
}


def snowman() -> MeshData:
    return merge(
        uv_sphere(0.6, rings=24, segments=48, center=(0, 0, 0.6), color=SNOWMAN_COLORS["body"]),
        uv_sphere(0.4, rings=24, segments=48, center=(0, 0, 1.55), color=SNOWMAN_COLORS["head"]),
        uv_sphere(0.22, rings=16, segments=32, center=(0, 0, 2.1), color=SNOWMAN_COLORS["hat"]),
    )


# 8-bit sRGB quantisation, seen in linear space: at most half a step at the steep top of the curve.
SRGB8_LINEAR_TOL = 0.0046
BOX_LO = np.array([-0.3, -0.2, -0.1])
BOX_HI = np.array([0.5, 0.1, 0.9])  # tallest along Z, and off-centre on every axis


def outward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Every triangle of a convex mesh faces away from its centre."""
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outwards = tri.mean(axis=1) - vertices.mean(axis=0)
    return bool((np.einsum("ij,ij->i", normals, outwards) > 0).all())


def corner_box() -> MeshData:
    """The box from BOX_LO to BOX_HI, 12 outward triangles, with a distinct linear colour per
    corner, very dark ones included. Corner i takes BOX_HI on the axes whose bit is set in i
    (x is bit 2)."""
    bits = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=bool)
    vertices = np.where(bits, BOX_HI, BOX_LO)
    faces = []
    for axis in range(3):
        u, v = (a for a in range(3) if a != axis)
        for side in (0, 1):
            # The face's four corners in order around it, then two triangles, wound outwards.
            ring = [(side << (2 - axis)) | (a << (2 - u)) | (b << (2 - v))
                    for a, b in [(0, 0), (1, 0), (1, 1), (0, 1)]]  # fmt: skip
            quad = [[ring[0], ring[1], ring[2]], [ring[0], ring[2], ring[3]]]
            tri = vertices[quad[0]]
            normal = np.cross(tri[1] - tri[0], tri[2] - tri[0])
            if np.dot(normal, tri.mean(0) - vertices.mean(0)) < 0:
                quad = [q[::-1] for q in quad]
            faces += quad
    colors = np.array(
        [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.002, 0.01, 0.05],
            [0.5, 0.5, 0.5],
            [0.9, 0.6, 0.1],
            [0.214, 0.0031308, 0.8],
            [1.0, 1.0, 1.0],
        ]
    )
    return MeshData(vertices, np.array(faces), colors)
