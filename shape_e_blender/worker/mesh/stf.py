"""STF mesh extraction: signed distance on a grid -> marching cubes -> vertex colours -> MeshData.

The field comes in as two callables (signed distance, positive inside; linear RGB), so this module
knows nothing of the model and is tested on analytic fields.

Frame and scale
    Grid point i along an axis sits at -1 + 2 i / (grid_size - 1), the points of diffusers' volume
    query. Vertices lie on the field's true zero level set, in the frame of the query points:
    (x, y, z) unchanged, which is already Blender's (Z up, front seen from -Y). diffusers and the
    original code instead map a padded (g + 2)^3 grid onto [-1, 1], which shrinks every mesh by
    (g - 1) / (g + 1) (127/129 at grid 128) and makes its size depend on the grid. We don't: a
    sphere of radius 0.5 has radius 0.5 at every grid size.

Outside padding
    Points beyond [-1, 1]^3 count as outside. The grid is padded with -1 (Shap-E's saturated
    outside value) one voxel beyond the box, so a shape that touches the box is closed by a flat
    cap within one voxel outside the box. A field positive at every grid point (or negative at
    every one) has no surface of its own: that raises NO_SURFACE rather than returning the box.
    So does a NaN or infinite value anywhere.

Coarse to fine
    The field is evaluated on a coarse grid first: every ``stride``-th fine point, with
    ``stride = coarse_stride(grid_size)`` (4 at grid 128, 8 at 256, 16 at 512: about 32 coarse
    points per axis; stride 1, a dense evaluation, below grid 63). A part thicker than sqrt(3)
    coarse spacings (about 5 % of the box) always holds a coarse point, so its sign finds it.
    Levels of half the stride follow down to stride 2, each evaluated only in the cells chosen
    at the level above, then the fine grid in the cells chosen at the last level (refine.py):
    cells whose corners change sign, cells where the field's measured local slope lets it reach
    zero between the corners (thin parts that slip between points), and the cells the surface
    spills into, followed until it ends, so every part found is traced whole at the fine grid.
    Inside the chosen cells, a fine point is first predicted from the cell's corners and
    asked only when a fine cell it is a corner of has signs that disagree (fine.py). A point
    never evaluated takes the sign of its cell at the last level, whose corners all agree, or
    its prediction: either way it lies in no cell the surface crosses, and only its sign
    matters. At grid 128 this asks 1.5 to 1.65 times the fewest points exact marching cubes can
    take (the corners of the cells the surface crosses) on random Shap-E fields; at grid 256 a
    sphere costs a fraction of a dense grid 128 (docs/performance.md).

Marching cubes
    scikit-image's Lewiner marching cubes at level 0, on slabs of at most 32 MiB along the first
    axis, masked to exactly the fine cells the surface crosses (fine.py hands them over, every
    corner of them evaluated), so the rest of each slab's volume is never read. Seam vertices
    come out bit-identical from both slabs (same two values, same arithmetic) and are welded;
    faces are wound counter-clockwise seen from outside.

Asking by grid index
    Every signed distance is asked at a grid point: given ``sdf_on_grid`` (LatentField's), it is
    asked by the point's indices, and the MLP's first layer is then the sum of three per-axis
    tables instead of 93 sines and a 93-wide layer per point (field.py).

Why not diffusers' ``decode_to_mesh``
    Its marching-cubes table ships only inside the real renderer weights (a renderer built from
    its config returns an empty mesh), an empty field crashes in ``torch.cat`` instead of
    raising a clear error, and the grid is fixed at 128.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from skimage.measure import marching_cubes

from ...core.errors import JOB_FAILED, NO_SURFACE, ShapEError, invalid
from ...core.mesh import MeshData
from ...core.params import SETTINGS
from .batches import Batches, Field, GridField
from .cleanup import drop_small_parts, weld, zero_area
from .fine import fine_values, last_level
from .refine import OUTSIDE, Level, coarse_level, finer_level, halving

log = logging.getLogger(__name__)

COARSE_MIN_POINTS = 32
MIN_PART_FRACTION = 0.05  # parts under 5 % of the largest part's faces are dropped
MAX_STRIDE = 16
_SLAB_BYTES = 32 << 20
_NO_SURFACE_HINT = "try another seed or another prompt"


def coarse_stride(grid_size: int) -> int:
    """Fine points per coarse cell edge: the largest power of 2 (up to 16) that still leaves the
    coarse grid at least 32 points per axis: 4 at grid 128, 8 at 256, 16 at 512.

    A coarse grid of about 32 points per axis (one coarse cell is 3 % of the box) measured best
    at grid 128 and 256 (docs/performance.md): a finer one costs more coarse points than it
    saves fine ones. A power of 2, so that the levels halve down to stride 2; a stride of 1
    means a dense evaluation (grids below 63).
    """
    most = max(1, (grid_size - 1) // (COARSE_MIN_POINTS - 1))
    return min(MAX_STRIDE, 1 << (most.bit_length() - 1))


def grid_coordinates(grid_size: int) -> np.ndarray:
    """The grid's coordinates along one axis: -1 + 2 i / (grid_size - 1), float64."""
    return -1.0 + 2.0 * np.arange(grid_size) / (grid_size - 1)


def grid_points(grid_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """All grid_size^3 grid points as (N, 3) float32 on ``device``, x slowest, z fastest."""
    axis = torch.from_numpy(grid_coordinates(grid_size).astype(np.float32)).to(device)
    return torch.cartesian_prod(axis, axis, axis)


def extract_mesh(
    sdf: Field,
    color: Field,
    grid_size: int = 128,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 65536,
    min_part_fraction: float = MIN_PART_FRACTION,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    sdf_on_grid: Callable[[torch.Tensor], GridField] | None = None,
) -> MeshData:
    """Extract the zero level set of ``sdf`` as a closed, vertex-coloured triangle mesh.

    ``sdf`` maps (N, 3) float32 points on ``device`` to (N,) values, positive inside; ``color``
    maps points to (N, 3) linear RGB (clamped to [0, 1] here). Each call gets at most
    ``batch_size`` points. Connected parts with fewer than ``min_part_fraction`` of the largest
    part's faces are dropped (0 keeps all). ``progress(done, total)`` is called on this thread
    with a fixed ``total`` (batches.PROGRESS_TOTAL), ``done`` never decreasing and ending equal to
    ``total``.
    ``should_cancel`` is polled between batches; when it returns True, ShapEError(CANCELLED).
    ``sdf_on_grid(axis)``, when given, returns ``sdf`` at grid points named by their (N, 3)
    integer indices into ``axis``, for less than ``sdf(axis[ijk])`` costs
    (``LatentField.sdf_on_grid``); every signed distance is then asked through it.

    Raises ShapEError(NO_SURFACE) when the field has no zero crossing in the box or returns NaN
    or infinite values. See the module docstring for the frame, the padding and the sampling.
    """
    if isinstance(grid_size, bool) or not isinstance(grid_size, int):
        raise invalid("grid_size", f"must be an integer, got {grid_size!r}", "use 128 or 256")
    lo, hi = SETTINGS["grid_size"].range
    if not lo <= grid_size <= hi:
        raise invalid(
            "grid_size",
            f"must be within {lo}..{hi}, got {grid_size}",
            "use 128 (the model's own) or 256 for finer detail",
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not 0.0 <= min_part_fraction <= 1.0:
        raise ValueError(f"min_part_fraction must be within 0..1, got {min_part_fraction}")

    lattice = _Lattice(grid_size, coarse_stride(grid_size))
    run = Batches(torch.device(device), batch_size, progress, should_cancel)
    axis = lattice.axis(run.device)
    at: GridField = sdf_on_grid(axis) if sdf_on_grid else lambda ijk: sdf(axis[ijk])
    run.start_stage(0.8 if lattice.stride == 1 else 0.25)
    coarse = _coarse_values(at, lattice, run)
    level = coarse_level(coarse, lattice.stride, lattice.spacing, lattice.box)
    evaluated = lattice.coarse_in_box**3
    strides = halving(lattice.stride)
    for number, _ in enumerate(strides, 1):
        run.start_stage(0.25 + 0.2 * number / len(strides))
        # The stride-2 level has no near-zero test: it is asked as the fine grid is (fine.py).
        step = last_level if level.stride == 4 else finer_level
        level, count = step(at, level, lattice.box, lattice.spacing, run, _check_finite)
        evaluated += count
    run.start_stage(0.8)
    index, values, fine_count, crossed = _fine_values(at, lattice, level, run)
    if not (values > 0).any() and not bool((coarse > 0).any()):
        raise _no_surface("every grid point is outside the shape (the field is negative)")
    log.info(
        "stf grid %d (strides %s): %d coarse and middle + %d fine field evaluations, dense "
        "would be %d",
        grid_size,
        [lattice.stride, *strides],
        evaluated,
        fine_count,
        grid_size**3,
    )

    run.start_stage(0.9)
    if not len(crossed):
        raise _no_surface("marching cubes found no faces")
    vertices, faces, seams = _march(lattice, crossed, index, values, run)
    # Copies of a vertex come only from two slabs' shared plane, or from a grid point where the
    # field is exactly zero (the vertex then lies on it).
    on_point = (vertices == np.floor(vertices)).all(axis=1)
    vertices, faces = weld(vertices, faces, np.isin(vertices[:, 0], seams) | on_point)
    # A triangle of marching cubes is flat only with a corner on a grid point: three points
    # inside distinct edges of a cube are never on one line (a line meets a cube's surface twice
    # unless it lies in a face, and in a face it meets the edges twice unless it runs along one).
    on_point = (vertices == np.floor(vertices)).all(axis=1)
    suspect = np.flatnonzero(on_point[faces].any(axis=1))
    faces = np.delete(faces, suspect[zero_area(vertices, faces[suspect])], axis=0)
    faces, kept = drop_small_parts(len(vertices), faces, min_part_fraction)
    if not len(faces):
        raise _no_surface("marching cubes found no faces")
    world = lattice.world(vertices[kept]).astype(np.float32)

    run.start_stage(1.0)
    points = torch.from_numpy(world).to(run.device)
    colors = run.evaluate(color, len(points), lambda a, b: points[a:b], 3, "color")
    bad = int((~torch.isfinite(colors)).any(dim=1).sum())
    if bad:
        raise ShapEError(
            JOB_FAILED,
            f"the texture field returned NaN or infinite colours at {bad} of {len(points)} "
            "vertices",
            "keep the renderer in fp32, or try another seed",
        )
    run.finish()
    return MeshData(world, faces, colors.clamp(0.0, 1.0).cpu().numpy())


@dataclass(frozen=True)
class _Lattice:
    """The padded fine grid, indexed 0..size-1 per axis, and its coarse subgrid.

    Fine index e is the box point e - stride, so the box occupies [stride, stride + grid - 1];
    every index outside is padding (outside). Coarse points are the multiples of ``stride`` and
    there are ``cells`` coarse cells per axis, enough to keep one padding point past the box.
    """

    grid: int
    stride: int

    @property
    def cells(self) -> int:
        return 1 + math.ceil(self.grid / self.stride)

    @property
    def size(self) -> int:
        return self.stride * self.cells + 1

    @property
    def spacing(self) -> float:
        return 2.0 / (self.grid - 1)

    @property
    def box(self) -> tuple[int, int]:
        return self.stride, self.stride + self.grid - 1

    @property
    def coarse_in_box(self) -> int:
        """Coarse points per axis inside the box: coarse indices 1..coarse_in_box."""
        return 1 + (self.grid - 1) // self.stride

    def world(self, index: np.ndarray) -> np.ndarray:
        return -1.0 + (np.asarray(index, dtype=np.float64) - self.stride) * self.spacing

    def axis(self, device: torch.device) -> torch.Tensor:
        """World coordinate of every fine index, float32 on ``device`` (one rounding, shared).

        Rounded to float32 on the CPU: MPS has no float64.
        """
        return torch.from_numpy(self.world(np.arange(self.size)).astype(np.float32)).to(device)


def _coarse_values(sdf: GridField, lattice: _Lattice, run: Batches) -> torch.Tensor:
    """The field at every coarse point, padding included: ((cells + 1)^3) on the device."""
    n, m = lattice.coarse_in_box, lattice.cells + 1
    index = lattice.stride * torch.arange(1, n + 1, device=run.device)
    points = torch.cartesian_prod(index, index, index)  # at most 128^3: 50 MB
    inner = run.evaluate(sdf, n**3, lambda a, b: points[a:b], 1, "signed distance")
    inner = inner.reshape(n, n, n)
    _check_finite(inner)
    if bool((inner > 0).all()):
        raise _no_surface("every grid point is inside the shape (the field is positive)")
    coarse = torch.full((m, m, m), OUTSIDE, dtype=torch.float32, device=run.device)
    coarse[1 : n + 1, 1 : n + 1, 1 : n + 1] = inner
    return coarse


def _fine_values(
    sdf: GridField, lattice: _Lattice, level: Level, run: Batches
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """The fine points marching cubes needs (fine.py), as linear indices into the padded fine
    grid and their values, how many the field was asked, and the fine cells the surface
    crosses (lower corners)."""
    index, values, _, asked, _, crossed = fine_values(
        sdf, level, lattice.size, lattice.box, run, _check_finite
    )
    return index.cpu().numpy(), values.cpu().numpy(), asked, crossed.cpu().numpy()


def _march(
    lattice: _Lattice, crossed: np.ndarray, index: np.ndarray, values: np.ndarray, run: Batches
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching cubes over the fine cells the surface crosses, slab by slab. Vertices in fine
    index space (float64), faces, and the first-axis planes two slabs share (float64).

    Every corner of a crossed cell was evaluated (fine.py), and no other cell holds a triangle
    (a cell whose signs all agree has none), so the mask names exactly those cells and the
    volume holds only the points found: the rest of it is never read.
    """
    p = lattice.size
    lo = crossed.min(axis=0)
    hi = crossed.max(axis=0) + 1  # the far corners
    shape = hi - lo + 1
    planes = max(2, _SLAB_BYTES // (4 * int(shape[1]) * int(shape[2])))
    starts = list(range(int(lo[0]), int(hi[0]), planes - 1))
    # The points inside the crossed cells' box, each axis relative to its corner.
    point = [index // (p * p) - lo[0], index // p % p - lo[1], index % p - lo[2]]
    keep = np.ones(len(index), dtype=bool)
    for axis, size in enumerate(shape):
        keep &= (point[axis] >= 0) & (point[axis] < size)
    point, values = [a[keep] for a in point], values[keep]
    cell = crossed - lo
    all_vertices, all_faces, count = [], [], 0
    for number, i0 in enumerate(starts, 1):
        i1 = min(i0 + planes - 1, int(hi[0]))
        first = i0 - int(lo[0])
        origin = np.array([i0, lo[1], lo[2]])
        # Zeros are not written to memory until touched (calloc): the unread rest costs nothing.
        volume = np.zeros((i1 - i0 + 1, *shape[1:]), dtype=np.float32)
        mine = (point[0] >= first) & (point[0] <= first + i1 - i0)
        volume[point[0][mine] - first, point[1][mine], point[2][mine]] = values[mine]
        # skimage marches the cell whose far corner the mask marks (checked with 0.26): point q
        # stands for the cell at q - 1.
        mask = np.zeros(volume.shape, dtype=bool)
        here = cell[(cell[:, 0] >= first) & (cell[:, 0] < first + i1 - i0)]
        if len(here):
            mask[here[:, 0] - first + 1, here[:, 1] + 1, here[:, 2] + 1] = True
            verts, faces, _, _ = marching_cubes(volume, 0.0, gradient_direction="ascent", mask=mask)
            all_vertices.append(verts.astype(np.float64) + origin)
            all_faces.append(faces.astype(np.int64) + count)
            count += len(verts)
        run.advance(number / len(starts))
    if not all_vertices:
        raise _no_surface("marching cubes found no faces")
    return np.concatenate(all_vertices), np.concatenate(all_faces), np.array(starts[1:], float)


def _check_finite(values: torch.Tensor) -> None:
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise _no_surface(
            f"the signed distance is NaN or infinite at {bad} of {values.numel()} points"
        )


def _no_surface(why: str) -> ShapEError:
    return ShapEError(NO_SURFACE, f"no surface found: {why}", _NO_SURFACE_HINT)
