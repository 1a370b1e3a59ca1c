"""Decimation and the texture bake, on the tiny model's own fields and on analytic ones.

The texture is checked against the colour field itself (not against our rasteriser's idea of it):
texel centres and random surface points are mapped through the UV map, and the chart coverage is
checked against scikit-image's polygon fill of the same UV triangles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from skimage.draw import polygon

from shape_e_blender.core.mesh import MeshData
from shape_e_blender.worker.mesh.cleanup import drop_doubled_faces, unpinch
from shape_e_blender.worker.mesh.export import linear_to_srgb8
from shape_e_blender.worker.mesh.field import LatentField
from shape_e_blender.worker.mesh.stf import extract_mesh
from shape_e_blender.worker.mesh.texture import bake, decimate, field_colors, textured, unwrap
from shape_e_blender.worker.models.devices import DeviceChoice
from shape_e_blender.worker.models.loading import load_text_pipeline
from shape_e_blender.worker.sampling import sample_latents

CPU = DeviceChoice("cpu", "fp32")
SRGB_STEP = 1.0 / 255.0


@pytest.fixture(scope="module")
def tiny_field(tiny_text_model: Path) -> LatentField:
    pipe = load_text_pipeline(tiny_text_model)
    latent = sample_latents(
        pipe, prompt="a red chair", seeds=[0], steps=4, guidance_scale=15.0, choice=CPU
    )[0]
    return LatentField(pipe.shap_e_renderer, latent, "cpu")


@pytest.fixture(scope="module")
def tiny_mesh(tiny_field: LatentField) -> MeshData:
    return extract_mesh(tiny_field.sdf, tiny_field.color, 96)


def _sphere_sdf(points: torch.Tensor) -> torch.Tensor:
    return 0.6 - points.norm(dim=1)


def _stripes(points: torch.Tensor) -> torch.Tensor:
    """A colour that changes every few hundredths of the box: finer than a decimated mesh."""
    t = 0.5 + 0.5 * torch.sin(40.0 * points[:, 0]) * torch.cos(30.0 * points[:, 2])
    return torch.stack([t, 1.0 - t, 0.5 * torch.ones_like(t)], dim=1)


def _srgb(linear: np.ndarray) -> np.ndarray:
    return linear_to_srgb8(linear).astype(np.float64) / 255.0


def _surface_samples(mesh: MeshData, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tri = rng.integers(0, mesh.face_count, n)
    w = rng.dirichlet((1.0, 1.0, 1.0), n)
    points = np.einsum("kc,kcx->kx", w, mesh.vertices[mesh.faces[tri]].astype(np.float64))
    return tri, w, points


def _edge_face_counts(faces: np.ndarray) -> np.ndarray:
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return np.unique(edges, axis=0, return_counts=True)[1]


def test_unpinch_splits_touching_sheets_and_leaves_a_clean_mesh_as_it_is() -> None:
    tetra = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    # Two tetrahedra that share vertex 0 (a pinch at a vertex), and two that share edge 0-1.
    at_vertex = np.concatenate([tetra, np.where(tetra == 0, 0, tetra + 3)])
    faces, source = unpinch(at_vertex, 7)
    assert len(source) == 8 and sorted(source.tolist()) == [0, 0, 1, 2, 3, 4, 5, 6]
    assert (_edge_face_counts(faces) == 2).all()
    np.testing.assert_array_equal(source[faces], at_vertex)  # the same faces, split vertices
    at_edge = np.concatenate([tetra, np.where(tetra > 1, tetra + 2, tetra)])
    assert (_edge_face_counts(at_edge) > 2).any()
    faces, source = unpinch(at_edge, 6)
    assert len(source) == 8 and (_edge_face_counts(faces) == 2).all()
    np.testing.assert_array_equal(source[faces], at_edge)
    faces, source = unpinch(tetra, 4)
    np.testing.assert_array_equal(faces, tetra)
    np.testing.assert_array_equal(source, np.arange(4))


def test_doubled_faces_go_in_pairs() -> None:
    faces = np.array([[0, 1, 2], [2, 1, 0], [1, 2, 3], [3, 2, 1], [1, 3, 2], [0, 3, 1]])
    kept = drop_doubled_faces(faces)
    np.testing.assert_array_equal(kept, [[1, 3, 2], [0, 3, 1]])  # one of three copies stays
    np.testing.assert_array_equal(drop_doubled_faces(faces[4:]), faces[4:])


def _bilinear(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample an sRGB uint8 texture (row 0 at the top) at (u, v), v up, as Blender does."""
    size_y, size_x = texture.shape[:2]
    x = uv[:, 0] * size_x - 0.5
    y = (1.0 - uv[:, 1]) * size_y - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    t = texture.astype(np.float64) / 255.0

    def at(r, c):
        return t[np.clip(r, 0, size_y - 1), np.clip(c, 0, size_x - 1)]

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def test_decimation_to_5000_faces_stays_closed_and_keeps_the_field_colours(
    tiny_mesh: MeshData, tiny_field: LatentField
) -> None:
    before = trimesh.Trimesh(tiny_mesh.vertices, tiny_mesh.faces, process=False)
    assert tiny_mesh.face_count > 20_000 and before.is_watertight
    out = decimate(tiny_mesh, 5000, tiny_field.color)
    assert abs(out.face_count - 5000) <= 250
    # Closed where the input was, and manifold: every edge has exactly two faces (the
    # decimator's pinches are split and its flat folds removed).
    assert (_edge_face_counts(out.faces) == 2).all()
    after = trimesh.Trimesh(out.vertices, out.faces, process=False)
    assert after.is_watertight and after.is_winding_consistent
    assert after.volume == pytest.approx(before.volume, rel=0.05)
    # Colours are the field's at the new vertices, not an interpolation of the old ones.
    np.testing.assert_allclose(out.colors, field_colors(tiny_field.color, out.vertices), atol=1e-6)
    # Already small enough: returned as it is.
    assert decimate(out, 10_000, tiny_field.color) is out


def test_texel_centres_hold_the_colour_field_to_8_bit_rounding(
    tiny_mesh: MeshData, tiny_field: LatentField
) -> None:
    mesh = decimate(tiny_mesh, 3000, tiny_field.color)
    size = 256
    out = textured(mesh, size, tiny_field.color)
    assert out.uvs is not None and out.texture is not None
    assert out.texture.shape == (size, size, 3) and out.texture.dtype == np.uint8
    assert (out.uvs >= 0).all() and (out.uvs <= 1).all()

    # Random surface points: the texture, sampled bilinearly at their UVs as Blender does,
    # matches the field there within 8-bit rounding plus the texel's own extent.
    tri, w, points = _surface_samples(out, 4000)
    uv = np.einsum("kc,kcx->kx", w, out.uvs[tri].astype(np.float64))
    expected = _srgb(field_colors(tiny_field.color, points))
    error = np.abs(_bilinear(out.texture, uv) - expected)
    assert np.median(error) <= 2 * SRGB_STEP
    assert np.quantile(error, 0.99) <= 0.03


def test_each_texel_holds_the_field_at_its_own_surface_point(
    tiny_mesh: MeshData, tiny_field: LatentField
) -> None:
    """Texel by texel, within 8-bit rounding: for 300 triangles, each texel centre inside the
    triangle's UVs is mapped to the surface here, one triangle at a time (not through the
    bake's vectorised rasteriser), and the field is asked there."""
    mesh = decimate(tiny_mesh, 3000, tiny_field.color)
    size = 256
    out = textured(mesh, size, tiny_field.color)
    rows, cols, points = [], [], []
    for face in np.random.default_rng(2).choice(out.face_count, 300, replace=False):
        uv = out.uvs[face].astype(np.float64)
        x, y = uv[:, 0] * size - 0.5, (1.0 - uv[:, 1]) * size - 0.5  # texel-centre space
        grid_c, grid_r = np.meshgrid(
            np.arange(np.ceil(x.min()), np.floor(x.max()) + 1),
            np.arange(np.ceil(y.min()), np.floor(y.max()) + 1),
        )
        c, r = grid_c.ravel(), grid_r.ravel()
        # Barycentric coordinates by solving the 2x2 system of the triangle's edges.
        edges = np.array([[x[1] - x[0], x[2] - x[0]], [y[1] - y[0], y[2] - y[0]]])
        w12 = np.linalg.solve(edges, np.stack([c - x[0], r - y[0]]))
        w = np.stack([1.0 - w12.sum(axis=0), *w12], axis=1)
        inside = (w > 1e-6).all(axis=1)  # strictly inside: no edge texel of two charts
        corners = out.vertices[out.faces[face]].astype(np.float64)
        rows.append(r[inside].astype(int))
        cols.append(c[inside].astype(int))
        points.append(w[inside] @ corners)
    r, c, points = np.concatenate(rows), np.concatenate(cols), np.concatenate(points)
    assert len(r) > 1000
    expected = linear_to_srgb8(field_colors(tiny_field.color, points)).astype(int)
    assert np.abs(out.texture[r, c].astype(int) - expected).max() <= 1


def test_every_texel_on_a_chart_is_baked(tiny_mesh: MeshData, tiny_field: LatentField) -> None:
    mesh = decimate(tiny_mesh, 3000, tiny_field.color)
    size = 256
    uvs = unwrap(mesh, size)
    image, covered = bake(mesh, uvs, size, tiny_field.color)
    # scikit-image fills the same UV triangles (the texels whose centres are inside); the bake
    # covers every one of them, but for texel centres on an edge, where the two may round apart.
    charts = np.zeros((size, size), bool)
    for corners in uvs.astype(np.float64):
        rr, cc = polygon((1 - corners[:, 1]) * size - 0.5, corners[:, 0] * size - 0.5, charts.shape)
        charts[rr, cc] = True
    assert charts.sum() > 0.3 * size * size
    assert (charts & ~covered).sum() <= 1e-3 * charts.sum()
    assert (covered & ~charts).sum() <= 1e-3 * charts.sum()
    # Off the charts, every texel took a chart texel's colour: no fill colour is left anywhere.
    on_chart = {tuple(c) for c in linear_to_srgb8(image[covered]).reshape(-1, 3)}
    off_chart = {tuple(c) for c in linear_to_srgb8(image[~covered]).reshape(-1, 3)}
    assert off_chart <= on_chart
    # Dilation across the seams: each texel off the charts has the colour of its nearest texel
    # on one (a brute-force search here, for a sample of them).
    on_rc = np.argwhere(covered)
    for r, c in np.argwhere(~covered)[:: max(1, int((~covered).sum()) // 400)]:
        d2 = ((on_rc - (r, c)) ** 2).sum(axis=1)
        nearest = on_rc[d2 == d2.min()]
        assert any(np.array_equal(image[r, c], image[nr, nc]) for nr, nc in nearest)
    # On the charts no texel is the fill colour: the bake's buffer starts at a colour the
    # field never gives (the tiny field is never pure black).
    assert not (linear_to_srgb8(image[charts]) == 0).all(axis=-1).any()


def test_the_texture_is_sharper_than_the_vertex_colours() -> None:
    """On a colour that varies faster than the decimated mesh's triangles, the baked texture
    follows the field and the vertex colours, interpolated over each face, do not."""
    dense = extract_mesh(_sphere_sdf, _stripes, 96)
    mesh = decimate(dense, 2000, _stripes)
    out = textured(mesh, 512, _stripes)
    tri, w, points = _surface_samples(out, 4000, seed=1)
    expected = _srgb(field_colors(_stripes, points))
    uv = np.einsum("kc,kcx->kx", w, out.uvs[tri].astype(np.float64))
    texture_error = np.abs(_bilinear(out.texture, uv) - expected).mean()
    interpolated = np.einsum("kc,kcx->kx", w, out.colors[out.faces[tri]].astype(np.float64))
    vertex_error = np.abs(_srgb(interpolated) - expected).mean()
    assert texture_error < 0.25 * vertex_error
    assert texture_error < 0.02


def test_a_textured_mesh_round_trips_through_its_npz(tmp_path: Path) -> None:
    dense = extract_mesh(_sphere_sdf, _stripes, 48)
    out = textured(decimate(dense, 500, _stripes), 64, _stripes)
    back = MeshData.load(out.save(tmp_path / "mesh.npz"))
    np.testing.assert_array_equal(back.uvs, out.uvs)
    np.testing.assert_array_equal(back.texture, out.texture)
    assert MeshData.from_bytes(MeshData(out.vertices, out.faces, out.colors).to_bytes()).uvs is None
    with pytest.raises(ValueError, match="together"):
        MeshData(out.vertices, out.faces, out.colors, uvs=out.uvs)
