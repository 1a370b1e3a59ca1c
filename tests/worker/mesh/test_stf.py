"""STF mesh extraction on analytic fields, where the right answer is known.

Fields follow Shap-E's convention: positive inside, negative outside.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from shape_e_blender.core.errors import CANCELLED, INVALID_PARAMS, NO_SURFACE, ShapEError
from shape_e_blender.worker.mesh import stf
from shape_e_blender.worker.mesh.batches import PROGRESS_TOTAL
from shape_e_blender.worker.mesh.cleanup import drop_zero_area, part_count
from shape_e_blender.worker.mesh.field import LatentField, latent_shape
from shape_e_blender.worker.mesh.refine import corners
from shape_e_blender.worker.mesh.stf import (
    coarse_stride,
    extract_mesh,
    grid_coordinates,
    grid_points,
)
from shape_e_blender.worker.tiny.renderer import tiny_renderer
from shape_e_blender.worker.tiny.sizes import TinySizes

DENSE_128 = 128**3


def spacing(grid):
    return 2.0 / (grid - 1)


def sphere(radius=0.5, centre=(0.0, 0.0, 0.0)):
    c = torch.tensor(centre, dtype=torch.float32)
    return lambda p: radius - (p - c).norm(dim=1)


def torus(big=0.5, small=0.2):
    def field(p):
        ring = p[:, :2].norm(dim=1) - big
        return small - torch.sqrt(ring**2 + p[:, 2] ** 2)

    return field


def union(*fields):
    return lambda p: torch.stack([f(p) for f in fields]).amax(dim=0)


def two_blobs():
    return union(sphere(0.45, (-0.35, 0.0, 0.0)), sphere(0.08, (0.6, 0.5, 0.5)))


def thin_plate(grid, stride, at=None):
    """A 1.2-voxel plate at half height between two coarse planes (or at fine index ``at``): no
    coarse point is inside."""
    h = 2.0 / (grid - 1)
    z0 = -1.0 + (8 * stride + stride / 2 if at is None else at) * h

    def field(p):
        slab = 0.6 * h - (p[:, 2] - z0).abs()
        return torch.minimum(slab, torch.minimum(0.5 - p[:, 0].abs(), 0.5 - p[:, 1].abs()))

    return field


def thin_shell(thickness):
    """A hollow sphere: a shell ``thickness`` thick around radius 0.6."""
    return lambda p: 0.5 * thickness - (p.norm(dim=1) - 0.6).abs()


def tentacle(grid):
    """A ball with a tube 1.6 voxels wide reaching out of it, off the stride-2 points, tanh-
    saturated: no level finds the tube by its values, only by following the ball's surface."""
    h = spacing(grid)
    y0 = z0 = -1.0 + 65 * h  # an odd fine index: no point of a coarser level is inside

    def field(p):
        tube = 0.8 * h - torch.sqrt((p[:, 1] - y0) ** 2 + (p[:, 2] - z0) ** 2)
        tube = torch.minimum(tube, torch.minimum(p[:, 0] - 0.1, 0.9 - p[:, 0]))
        ball = 0.3 - (p - torch.tensor([-0.1, y0, z0])).norm(dim=1)
        return torch.tanh(torch.maximum(tube, ball) / h)

    return field


def saturated(field, grid):
    """tanh-squashed like Shap-E's output, saturated (|value| > 0.76) one voxel from the surface."""
    sharpness = 1.0 / spacing(grid)
    return lambda p: torch.tanh(sharpness * field(p))


def linear_rgb(p):
    return (p + 1) / 2


class Counted:
    """Wraps a field, counting the points it is asked about and checking what it is given."""

    def __init__(self, field, batch_size=None):
        self.field, self.batch_size = field, batch_size
        self.points = self.calls = 0

    def __call__(self, p):
        assert p.dtype == torch.float32 and p.ndim == 2 and p.shape[1] == 3
        assert self.batch_size is None or len(p) <= self.batch_size
        self.points += len(p)
        self.calls += 1
        return self.field(p)


def edges_of(faces):
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return directed


def assert_closed_and_consistent(mesh):
    """Every edge is shared by exactly two faces, which traverse it in opposite directions."""
    directed = edges_of(mesh.faces)
    assert len(np.unique(directed, axis=0)) == len(directed), "a directed edge appears twice"
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert (counts == 2).all(), f"{(counts != 2).sum()} of {len(undirected)} edges not shared by 2"


def signed_volume(mesh):
    a, b, c = (mesh.vertices[mesh.faces[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def euler_characteristic(mesh):
    undirected = np.unique(np.sort(edges_of(mesh.faces), axis=1), axis=0)
    return mesh.vertex_count - len(undirected) + mesh.face_count


def mesh_parts(mesh):
    return part_count(mesh.vertex_count, mesh.faces)


def largest_gap(a, b):
    """The largest distance from a vertex of either set to the other set's nearest vertex."""
    forward, _ = cKDTree(b).query(a)
    backward, _ = cKDTree(a).query(b)
    return max(forward.max(), backward.max())


def dense_reference(field, grid):
    """The plain algorithm: every grid point, padded with -1 one voxel beyond the box."""
    values = field(grid_points(grid)).reshape(grid, grid, grid).numpy()
    padded = np.pad(values, 1, constant_values=-1.0)
    h = 2.0 / (grid - 1)
    verts, faces, _, _ = marching_cubes(padded, 0.0, gradient_direction="ascent")
    return -1.0 - h + verts.astype(np.float64) * h, faces


@pytest.mark.parametrize("grid", [32, 64, 128])
@pytest.mark.parametrize("centre", [(0.0, 0.0, 0.0), (0.21, -0.13, 0.17)])
def test_sphere_radius_is_the_same_at_every_grid(grid, centre):
    mesh = extract_mesh(sphere(0.5, centre), linear_rgb, grid)
    radius = np.linalg.norm(mesh.vertices - np.array(centre, dtype=np.float32), axis=1)
    h = spacing(grid)
    assert abs(radius.mean() - 0.5) < h / 4
    assert np.abs(radius - 0.5).max() < h / 2


@pytest.mark.parametrize("grid", [32, 96])
def test_sphere_is_closed_with_outward_normals_and_right_volume(grid):
    centre = np.array([0.1, -0.05, 0.2])
    mesh = extract_mesh(sphere(0.5, tuple(centre)), linear_rgb, grid)
    assert_closed_and_consistent(mesh)
    assert euler_characteristic(mesh) == 2
    exact = 4.0 / 3.0 * math.pi * 0.5**3
    volume = signed_volume(mesh)
    assert volume > 0
    assert abs(volume - exact) < 4.0 * math.pi * 0.5**2 * spacing(grid) / 4
    a, b, c = (mesh.vertices[mesh.faces[:, i]].astype(np.float64) for i in range(3))
    normals = np.cross(b - a, c - a)
    outward = np.einsum("ij,ij->i", normals, (a + b + c) / 3 - centre)
    assert (outward > 0).all()


def test_no_duplicate_vertices_and_no_degenerate_faces():
    mesh = extract_mesh(torus(), linear_rgb, 96, min_part_fraction=0.0)
    assert len(np.unique(mesh.vertices, axis=0)) == mesh.vertex_count
    a, b, c = (mesh.vertices[mesh.faces[:, i]].astype(np.float64) for i in range(3))
    assert (np.linalg.norm(np.cross(b - a, c - a), axis=1) > 0).all()


def test_exact_zeros_on_grid_points_still_give_a_clean_closed_mesh():
    # Grid 33 has the planes x = 0 and y = 0 on grid points, where this field is exactly zero at a
    # concave edge: several marching-cubes vertices land on one grid point and must be welded.
    def notch(p):
        return torch.minimum(-torch.minimum(p[:, 0], p[:, 1]), 0.7 - p.norm(dim=1))

    mesh = extract_mesh(notch, linear_rgb, 33)
    assert len(np.unique(mesh.vertices, axis=0)) == mesh.vertex_count
    assert_closed_and_consistent(mesh)
    assert signed_volume(mesh) > 0


def test_slab_seams_are_welded(monkeypatch):
    field = union(torus(0.5, 0.2), sphere(0.25, (0.0, 0.0, 0.3)))
    whole = extract_mesh(field, linear_rgb, 80)
    monkeypatch.setattr(stf, "_SLAB_BYTES", 4 * 90 * 90 * 5)  # slabs of 5 planes
    sliced = extract_mesh(field, linear_rgb, 80)
    assert_closed_and_consistent(sliced)
    assert (sliced.vertex_count, sliced.face_count) == (whole.vertex_count, whole.face_count)
    distance, _ = cKDTree(whole.vertices).query(sliced.vertices)
    assert distance.max() < 1e-6  # float32 rounding of slab-local coordinates


def test_torus_volume_and_genus():
    grid, big, small = 96, 0.5, 0.2
    mesh = extract_mesh(torus(big, small), linear_rgb, grid)
    assert_closed_and_consistent(mesh)
    assert euler_characteristic(mesh) == 0
    exact = 2 * math.pi**2 * big * small**2
    area = 4 * math.pi**2 * big * small
    assert abs(signed_volume(mesh) - exact) < area * spacing(grid) / 4


def test_small_parts_are_dropped_only_when_asked():
    kept_all = extract_mesh(two_blobs(), linear_rgb, 64, min_part_fraction=0.0)
    assert mesh_parts(kept_all) == 2
    cleaned = extract_mesh(two_blobs(), linear_rgb, 64, min_part_fraction=0.05)
    assert mesh_parts(cleaned) == 1
    assert cleaned.vertices[:, 0].max() < 0.2  # the big blob, centred at x = -0.35, stayed
    assert cleaned.face_count < kept_all.face_count
    assert_closed_and_consistent(cleaned)


def test_colours_are_the_texture_field_at_the_vertices():
    mesh = extract_mesh(sphere(0.6, (0.1, 0.0, -0.1)), linear_rgb, 48)
    np.testing.assert_allclose(mesh.colors, (mesh.vertices + 1) / 2, atol=1e-5)
    assert mesh.colors.dtype == np.float32


def test_colours_are_clamped_to_unit_range():
    mesh = extract_mesh(sphere(0.6), lambda p: 3.0 * p, 40)
    np.testing.assert_allclose(mesh.colors, np.clip(3.0 * mesh.vertices, 0, 1), atol=1e-5)
    assert mesh.colors.min() == 0.0 and mesh.colors.max() == 1.0


def test_shape_touching_the_box_is_closed_by_the_padding():
    grid = 40
    h = spacing(grid)
    mesh = extract_mesh(sphere(1.5), linear_rgb, grid)
    assert_closed_and_consistent(mesh)
    assert np.abs(mesh.vertices).max() <= 1.0 + h
    assert np.abs(mesh.vertices).max() > 1.0  # the caps sit just past the box
    # The box cut by the sphere: close to the whole box (the corners at sqrt(3) are cut off).
    assert 7.0 < signed_volume(mesh) < 8.0 * (1 + h) ** 3


@pytest.mark.parametrize(
    ("field", "why"),
    [
        (lambda p: torch.ones(len(p)), "inside"),
        (lambda p: -torch.ones(len(p)), "outside"),
        (lambda p: torch.full((len(p),), float("nan")), "NaN"),
        (lambda p: torch.where(p[:, 0] > 0.9, float("inf"), 0.5 - p.norm(dim=1)), "infinite"),
    ],
)
def test_no_surface_is_a_clear_error(field, why):
    with pytest.raises(ShapEError) as err:
        extract_mesh(field, linear_rgb, 64)
    assert err.value.code == NO_SURFACE
    assert err.value.message.startswith("no surface found")
    assert why in err.value.message
    assert "seed" in err.value.hint


def test_grid_256_costs_fewer_evaluations_than_dense_128():
    for field in (sphere(0.5), torus(0.5, 0.2)):
        counted = Counted(field)
        extract_mesh(counted, linear_rgb, 256)
        assert counted.points < DENSE_128
        assert counted.points < 256**3 / 8


@pytest.mark.parametrize("grid", [64, 128])
@pytest.mark.parametrize(
    "name", ["sphere", "torus", "two blobs", "thin plate", "thin shell", "tentacle", "saturated"]
)
def test_coarse_to_fine_gives_the_dense_surface(grid, name):
    assert coarse_stride(grid) > 1
    field = {
        "sphere": sphere(0.5, (0.01, 0.02, 0.03)),
        "torus": torus(0.5, 0.2),
        "thin shell": thin_shell(2.5 * spacing(grid)),
        "tentacle": tentacle(grid),
        "two blobs": two_blobs(),
        "thin plate": thin_plate(grid, coarse_stride(grid)),
        # Values saturate one voxel away: only sign changes (and the dilation) find the surface.
        "saturated": saturated(union(torus(0.45, 0.15), sphere(0.3, (0.1, 0.2, 0.37))), grid),
    }[name]
    counted = Counted(field)
    mesh = extract_mesh(counted, linear_rgb, grid, min_part_fraction=0.0)
    assert counted.points < grid**3
    ref_vertices, ref_faces = dense_reference(field, grid)
    assert mesh.vertex_count == len(np.unique(ref_vertices.astype(np.float32), axis=0))
    assert mesh.face_count == len(ref_faces)
    assert largest_gap(mesh.vertices, ref_vertices) < 1e-5


@pytest.mark.parametrize(
    "name", ["sphere", "two blobs", "plate between stride-4 planes", "thin shell", "tentacle"]
)
def test_the_levels_of_a_grid_256_give_the_dense_surface(name):
    """From grid 256 a stride-4 level (with its near-zero test) comes between the coarse grid
    and the stride-2 level: parts that only it can find (a plate on a stride-2 plane, a shell
    2.5 voxels thick) and the spill's tentacle come out as the dense grid's."""
    grid = 256
    assert coarse_stride(grid) == 8
    field = {
        "sphere": sphere(0.5, (0.01, 0.02, 0.03)),
        "two blobs": two_blobs(),
        "plate between stride-4 planes": thin_plate(grid, 8, at=66),
        "thin shell": thin_shell(2.5 * spacing(grid)),
        "tentacle": tentacle(grid),
    }[name]
    counted = Counted(field)
    mesh = extract_mesh(counted, linear_rgb, grid, min_part_fraction=0.0)
    assert counted.points < DENSE_128
    ref_vertices, ref_faces = dense_reference(field, grid)
    # The tentacle's tanh is exactly 0 at some points: flat faces there, which extract_mesh drops.
    ref_faces = drop_zero_area(ref_vertices, ref_faces)
    assert mesh.vertex_count == len(np.unique(ref_vertices.astype(np.float32), axis=0))
    assert mesh.face_count == len(ref_faces)
    assert largest_gap(mesh.vertices, ref_vertices) < 1e-5


def test_a_shallow_field_costs_what_a_steep_one_costs():
    """The near-zero test scales with the field's measured slope: a sphere's distance divided by
    20 (near zero over the whole box) is refined like the distance halved. A fixed tolerance
    (half a cell's diagonal, as before) refined every cell within 10 radii of its surface."""
    counts = []
    for scale in (0.5, 0.025):
        counted = Counted(lambda p, s=scale: s * sphere(0.5)(p))
        mesh = extract_mesh(counted, linear_rgb, 256)
        counts.append(counted.points - mesh.vertex_count)
    assert counts[1] <= 1.02 * counts[0]
    assert counts[0] < 0.15 * DENSE_128


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_random_shap_e_field_gives_the_dense_surface_near_the_fewest_evaluations(seed):
    """A random Shap-E renderer shaped to have surfaces (the tiny models'), a random latent.

    The fewest signed distances exact marching cubes can take are the corners of the cells the
    surface crosses: the fine stage and the stride-2 level ask for about that many, and the
    levels above for fewer than twice the coarse grid. Before the levels and the spill, 1.1 to
    1.8 M here. While the fine stage and the stride-2 level asked every point of a chosen cell,
    1.73 to 1.92 times the fewest (8 to 12 % over the bound below); now 1.49 to 1.65.
    """
    torch.manual_seed(seed)  # the renderer's own weights, before shape_renderer shapes them
    renderer = tiny_renderer(TinySizes(), seed)
    latent = torch.randn(latent_shape(renderer), generator=torch.Generator().manual_seed(seed))
    field = LatentField(renderer, latent, "cpu")
    counted = Counted(field.sdf)
    mesh = extract_mesh(counted, field.color, 128, min_part_fraction=0.0)
    ref_vertices, ref_faces = dense_reference(field.sdf, 128)
    ref_faces = drop_zero_area(ref_vertices, ref_faces)  # as extract_mesh does
    assert mesh_parts(mesh) == part_count(len(ref_vertices), ref_faces)
    # The vertices the faces use; skimage repeats one where the field is exactly 0 at a point.
    assert mesh.vertex_count == len(np.unique(ref_vertices[np.unique(ref_faces)], axis=0))
    assert mesh.face_count == len(ref_faces)
    assert largest_gap(mesh.vertices, ref_vertices) < 1e-5
    values = torch.nn.functional.pad(
        field.sdf(grid_points(128)).reshape(128, 128, 128), (1,) * 6, value=-1.0
    )
    inside = values > 0
    crossed = corners(inside, torch.logical_or) & ~corners(inside, torch.logical_and)
    needed = corners(torch.nn.functional.pad(crossed, (1,) * 6), torch.logical_or)
    coarse = (1 + 127 // coarse_stride(128)) ** 3
    assert counted.points < 1.25 * int(needed.sum()) + 2 * coarse


def test_signed_distances_asked_by_grid_index_give_the_dense_surface_of_that_function():
    """The engine asks every signed distance through LatentField.sdf_on_grid (grid indices, a
    per-axis first layer): none goes through the point callable, and the mesh is the dense
    surface of that same function, with the same number of parts."""
    torch.manual_seed(0)
    renderer = tiny_renderer(TinySizes(), 0)
    latent = torch.randn(latent_shape(renderer), generator=torch.Generator().manual_seed(0))
    field = LatentField(renderer, latent, "cpu")
    by_point, by_index = Counted(field.sdf), []

    def on_grid(axis):
        at = field.sdf_on_grid(axis)

        def counted(ijk):
            assert ijk.ndim == 2 and ijk.shape[1] == 3 and not ijk.is_floating_point()
            by_index.append(len(ijk))
            return at(ijk)

        return counted

    mesh = extract_mesh(by_point, field.color, 128, min_part_fraction=0.0, sdf_on_grid=on_grid)
    assert by_point.points == 0 and sum(by_index) > 0
    axis = torch.from_numpy(grid_coordinates(128).astype(np.float32))
    index = torch.arange(128)
    values = field.sdf_on_grid(axis)(torch.cartesian_prod(index, index, index))
    ref_vertices, ref_faces = dense_reference(lambda _: values, 128)
    ref_faces = drop_zero_area(ref_vertices, ref_faces)
    assert mesh_parts(mesh) == part_count(len(ref_vertices), ref_faces)
    assert mesh.vertex_count == len(np.unique(ref_vertices[np.unique(ref_faces)], axis=0))
    assert mesh.face_count == len(ref_faces)
    assert largest_gap(mesh.vertices, ref_vertices) < 1e-5


@pytest.mark.parametrize("sharpness", [50.0, 1000.0])
def test_tanh_saturated_field_keeps_its_radius(sharpness):
    grid = 64

    def field(p):
        return torch.tanh(sharpness * (0.5 - p.norm(dim=1)))

    mesh = extract_mesh(field, linear_rgb, grid)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(radius.mean() - 0.5) < spacing(grid)
    assert np.abs(radius - 0.5).max() < spacing(grid)
    assert_closed_and_consistent(mesh)


def test_batches_respect_batch_size():
    sdf, color = Counted(sphere(0.5), 1000), Counted(linear_rgb, 1000)
    mesh = extract_mesh(sdf, color, 40, batch_size=1000)
    assert sdf.calls > 30 and color.calls >= mesh.vertex_count / 1000
    assert color.points == mesh.vertex_count


def test_progress_is_monotonic_and_ends_at_total():
    calls = []
    extract_mesh(sphere(0.5), linear_rgb, 96, batch_size=2048, progress=lambda *a: calls.append(a))
    assert calls[0] == (0, PROGRESS_TOTAL) and calls[-1] == (PROGRESS_TOTAL, PROGRESS_TOTAL)
    assert all(total == PROGRESS_TOTAL for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert len(calls) > 10


def test_cancel_stops_between_batches():
    polls = []
    sdf = Counted(sphere(0.5))

    def should_cancel():
        polls.append(sdf.calls)
        return len(polls) > 3

    with pytest.raises(ShapEError) as err:
        extract_mesh(sdf, linear_rgb, 128, batch_size=2048, should_cancel=should_cancel)
    assert err.value.code == CANCELLED and err.value.message == "cancelled" and err.value.hint
    assert sdf.calls == polls[-1]  # no batch ran after the poll that said stop
    assert sdf.calls < 10


def test_cancel_before_start_calls_nothing():
    sdf = Counted(sphere(0.5))
    with pytest.raises(ShapEError) as err:
        extract_mesh(sdf, linear_rgb, 64, should_cancel=lambda: True)
    assert err.value.code == CANCELLED
    assert sdf.calls == 0


@pytest.mark.parametrize("grid", [31, 513])
def test_grid_size_out_of_range(grid):
    with pytest.raises(ShapEError) as err:
        extract_mesh(sphere(0.5), linear_rgb, grid)
    assert err.value.code == INVALID_PARAMS and err.value.field == "grid_size"


def test_grid_points_match_the_documented_coordinates():
    points = grid_points(5)
    assert points.shape == (125, 3) and points.dtype == torch.float32
    np.testing.assert_allclose(grid_coordinates(5), [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(points[0].numpy(), [-1, -1, -1])
    np.testing.assert_allclose(points[1].numpy(), [-1, -1, -0.5])
    np.testing.assert_allclose(points[-1].numpy(), [1, 1, 1])


def test_coarse_stride_keeps_at_least_32_coarse_points():
    for grid in range(32, 1025):
        stride = coarse_stride(grid)
        assert 1 <= stride <= 16 and stride & (stride - 1) == 0  # a power of 2: levels halve
        assert 1 + (grid - 1) // stride >= 32
        if stride < 16:
            assert 1 + (grid - 1) // (2 * stride) < 32  # the coarsest such
    assert [coarse_stride(g) for g in (32, 64, 128, 256, 512)] == [1, 2, 4, 8, 16]
