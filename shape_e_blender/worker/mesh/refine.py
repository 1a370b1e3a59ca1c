"""Coarse-to-fine refinement: which cells of the grid are evaluated at the next finer level.

Levels go from the coarse stride (a coarse grid of about 32 points per axis) down to stride 2,
halving, and the fine grid (stride 1) is evaluated only inside the cells chosen at the last
level (stf.py does that part). At every level, a cell is active when

- its corners change sign, or
- at the coarse level and every level of stride above 2: the field may reach zero inside the
  cell. With ``L`` the field's local slope, the value at any point x of the cell is within
  ``L |x - c|`` of each corner c's, so zero is reachable only where every corner's |value| is
  at most ``L`` times its distance to x; summed over the 8 corners, the mean |value| is at most
  ``L * MEAN_REACH * step`` (the largest mean distance from a point of the cube to its corners,
  reached at a corner). ``L`` is measured from the largest difference between neighbouring
  points of the cell and of the cells around it, times SLOPE_SAFETY, and never more than 1 (a
  distance's slope: a steeper field, such as tanh saturating near its surface, relies on its
  sign changes). A field shallow near zero over much of the box then refines only near its
  surface. This finds thin parts that slip between the points of a level.

Then the surface is followed (``spill``): a cell left out takes the sign of its corners, so a
finer point on its boundary of the other sign means the surface crosses into it, and it is
evaluated too, until no evaluated point disagrees with a cell left out. Every part of a surface
found at one level is thus traced whole at the next: the fine mesh of a found part is the dense
grid's. (This replaces a dilation by one cell, which evaluated a band three cells thick around
every surface and still could not follow a part that left it.)

Only the children of a level's chosen cells are looked at on the next level; a cell that is not
chosen keeps the sign of its corners, which all agree, and so do the finer cells inside it. The
near-zero test is left out at a last stride-2 level: it cost a third more evaluations there on
random Shap-E fields (docs/performance.md) and found nothing the spill did not. Without it,
that level needs only the points of the cells whose signs disagree, and asks them as the fine
grid's are asked (fine.last_level): parts thinner than 2 voxels that touch no point the
stride-4 level evaluated and no traced surface can be missed there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from itertools import product

import torch
import torch.nn.functional as F

from .batches import Batches, GridField

OUTSIDE = -1.0  # the padding value, and the fill of never-evaluated outside points
SLOPE_SAFETY = 2.0
MAX_SLOPE = 1.0  # a distance's
# The largest mean distance from a point of the unit cube to its 8 corners (at a corner: 0, three
# edges, three face diagonals and the space diagonal), in cell edges.
MEAN_REACH = (3 + 3 * math.sqrt(2.0) + math.sqrt(3.0)) / 8


@dataclass
class Level:
    """One level: its stride (in fine points), its points' values (NaN where never evaluated;
    the padding and beyond the box are OUTSIDE), the cells refined further, and each cell's
    sign (+1 inside, -1 outside) where the level resolves it."""

    stride: int
    values: torch.Tensor  # (m, m, m) float32
    active: torch.Tensor  # (m - 1,)^3 bool
    fill: torch.Tensor  # (m - 1,)^3 float32, +1 or -1
    # (m - 1,)^3 float32 where the near-zero test ran: per cell, the slope bound L times the
    # cell's edge, the most the field can change over one edge (NaN for a cell the box's face
    # cuts, whose far corners are padding); None where it did not run.
    reach: torch.Tensor | None = None


def corners(grid: torch.Tensor, op: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Reduce a point grid (n+1)^3 over the 8 corners of each cell -> n^3; leading axes, if
    any, are a batch of grids."""
    n = grid.shape[-1] - 1
    views = [grid[..., a : a + n, b : b + n, c : c + n] for a, b, c in product((0, 1), repeat=3)]
    return reduce(op, views)


def crossed(inside: torch.Tensor) -> torch.Tensor:
    """The cells whose corners' signs disagree, of a boolean point grid (or a batch of them)."""
    return corners(inside, torch.logical_or) & ~corners(inside, torch.logical_and)


def corner_points(cells: torch.Tensor) -> torch.Tensor:
    """The points that are a corner of any of ``cells`` (a boolean cell grid n^3, or a batch of
    them) -> (n+1)^3."""
    padded = F.pad(cells.float(), (1, 1, 1, 1, 1, 1)) > 0  # bool padding: not on every device
    return corners(padded, torch.logical_or)


def dilate(cells: torch.Tensor) -> torch.Tensor:
    """Grow a boolean cell grid by one cell in every direction (3x3x3 box, done per axis)."""
    for dim in range(3):
        n = cells.shape[dim]
        grown = cells.clone()
        grown.narrow(dim, 1, n - 1).logical_or_(cells.narrow(dim, 0, n - 1))
        grown.narrow(dim, 0, n - 1).logical_or_(cells.narrow(dim, 1, n - 1))
        cells = grown
    return cells


def _local_slope(values: torch.Tensor, step: float) -> torch.Tensor:
    """Per cell: the largest |difference| between neighbouring points of the cell and of the
    cells around it, per unit length (NaN points, never evaluated, count as no difference)."""
    n = values.shape[0] - 1
    cell = torch.zeros((n, n, n), dtype=values.dtype, device=values.device)
    for dim in range(3):
        diff = (values.narrow(dim, 1, n) - values.narrow(dim, 0, n)).abs().nan_to_num(0.0)
        # Each cell has four edges along ``dim``: its corners in the two other axes.
        others = [d for d in range(3) if d != dim]
        edge = diff
        for d in others:
            edge = torch.maximum(edge.narrow(d, 0, n), edge.narrow(d, 1, n))
        cell = torch.maximum(cell, edge)
    around = F.max_pool3d(cell[None, None], kernel_size=3, stride=1, padding=1)[0, 0]
    return around / step


def select(
    values: torch.Tensor,
    candidates: torch.Tensor,
    stride: int,
    spacing: float,
    box: tuple[int, int],
    near: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Active cells among ``candidates``: sign changes, and with ``near`` the cells where the
    field may reach zero between its corners (see the module docstring). Also, with ``near``,
    each cell's slope bound times its edge (Level.reach)."""
    active = crossed(values > 0)
    reach = None
    if near:
        step = stride * spacing
        # The padding's step to OUTSIDE is not the field's slope: left out of it.
        fine = torch.arange(values.shape[0], device=values.device) * stride
        axis = (fine >= box[0]) & (fine <= box[1])
        in_box = axis[:, None, None] & axis[None, :, None] & axis[None, None, :]
        boxed = values.where(in_box, math.nan)
        slope = (SLOPE_SAFETY * _local_slope(boxed, step)).clamp(max=MAX_SLOPE)
        # The mean over the cell's corners in the box. A cell the box's face cuts (a part may
        # lie between its last points and the face) has only some: any point of it is within a
        # diagonal of each.
        known = ~boxed.isnan()
        count = corners(known.float(), torch.add)
        mean = corners(boxed.abs().nan_to_num(0.0), torch.add) / count.clamp(min=1)
        all_known = count == 8
        bound = torch.where(all_known, MEAN_REACH, math.sqrt(3.0))
        active |= (count > 0) & (mean <= slope * bound * step)
        reach = torch.where(all_known, slope * step, math.nan)
    return active & candidates, reach


def coarse_level(coarse: torch.Tensor, stride: int, spacing: float, box: tuple[int, int]) -> Level:
    """The first level: the coarse values (padding included), every cell a candidate."""
    candidates = torch.ones([coarse.shape[0] - 1] * 3, dtype=torch.bool, device=coarse.device)
    active, reach = select(coarse, candidates, stride, spacing, box, near=True)
    fill = torch.where(coarse[:-1, :-1, :-1] > 0, 1.0, OUTSIDE).to(torch.float32)
    return Level(stride, coarse, active, fill, reach)


def halving(stride: int) -> list[int]:
    """The strides after the coarse one (a power of 2), down to 2."""
    out = []
    while stride > 2:
        stride //= 2
        out.append(stride)
    return out


def spill(
    ijk: torch.Tensor, inside: torch.Tensor, cells: torch.Tensor, fill: torch.Tensor, ratio: int
) -> torch.Tensor:
    """Cells to evaluate next: those not in ``cells`` that a newly evaluated point on their
    boundary disagrees with.

    ``ijk`` (K, 3) are the new points in units of the finer grid, ``ratio`` finer points per
    cell edge; ``cells`` and ``fill`` are the (n,)^3 cell grid's evaluated cells and their signs.
    A cell left out is filled with its sign, so a point on its boundary of the other sign means
    the surface crosses into it: it is evaluated too, and so on until the surface is followed
    to its end. Returns the (n,)^3 cells to add.
    """
    n = cells.shape[0]
    base = torch.div(ijk, ratio, rounding_mode="floor")
    on_edge = ijk % ratio == 0  # on a cell boundary along that axis: two cells share the point
    # A point touches its own cell and, along each axis it lies on a boundary of, the cell
    # before: per axis, which of the two exist; per cell, one byte: 1 evaluated, 2 inside.
    ahead = [base[:, d] < n for d in range(3)]
    behind = [on_edge[:, d] & (base[:, d] >= 1) & (base[:, d] <= n) for d in range(3)]
    state = (cells.to(torch.uint8) | (fill > 0).to(torch.uint8) << 1).view(-1)
    other_sign = torch.where(inside, 0, 2).to(torch.uint8)
    linear = (base[:, 0] * n + base[:, 1]) * n + base[:, 2]
    add = torch.zeros(n**3, dtype=torch.bool, device=ijk.device)
    for offset in product((0, 1), repeat=3):
        ok = reduce(torch.logical_and, [(behind if o else ahead)[d] for d, o in enumerate(offset)])
        cell = linear[ok] - (offset[0] * n + offset[1]) * n - offset[2]
        found = state[cell]
        add[cell[(found & 1 == 0) & (found & 2 == other_sign[ok])]] = True
    return add.view(cells.shape)


def finer_level(
    sdf: GridField,
    parent: Level,
    box: tuple[int, int],
    spacing: float,
    run: Batches,
    check: Callable[[torch.Tensor], None],
) -> tuple[Level, int]:
    """The next level, half the parent's stride: its points in the parent's active cells are
    evaluated (those not known already), and in the parent cells the surface spills into.
    Returns it and how many points the field was asked."""
    t = parent.stride // 2
    m = 2 * parent.active.shape[0] + 1
    device = parent.values.device
    values = torch.full((m, m, m), math.nan, dtype=torch.float32, device=device)
    values[::2, ::2, ::2] = parent.values
    chosen, new, asked = parent.active.clone(), parent.active, 0
    lo, hi = box
    while bool(new.any()):
        # Every corner of a new level cell (the children of the new parent cells).
        todo = corner_points(children(new)) & values.isnan()
        ijk = todo.nonzero()
        fine = ijk * t  # fine index of each point
        in_box = ((fine >= lo) & (fine <= hi)).all(dim=1)
        out = ijk[~in_box]
        values[out[:, 0], out[:, 1], out[:, 2]] = OUTSIDE
        ijk, fine = ijk[in_box], fine[in_box]
        got = run.evaluate(sdf, len(ijk), lambda a, b, fine=fine: fine[a:b], 1, "signed distance")
        got = got.reshape(-1)
        check(got)
        values[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = got
        asked += len(ijk)
        new = spill(ijk, got > 0, chosen, parent.fill, 2)
        chosen |= new
    return settled(values, values, chosen, parent, spacing, box, near=t > 2), asked


def settled(
    values: torch.Tensor,
    signs: torch.Tensor,
    chosen: torch.Tensor,
    parent: Level,
    spacing: float,
    box: tuple[int, int],
    near: bool,
) -> Level:
    """The level under ``parent`` once its points are known: ``values`` as evaluated, ``signs``
    a value of the right sign at every point of the children of ``chosen`` (the parent's
    cells that were opened). Its active cells are chosen among those children, and every other
    cell keeps the parent's sign."""
    t = parent.stride // 2
    candidates = children(chosen)
    active, reach = select(signs, candidates, t, spacing, box, near=near)
    own = torch.where(signs[:-1, :-1, :-1] > 0, 1.0, OUTSIDE).to(torch.float32)
    fill = torch.where(candidates, own, children(parent.fill))
    return Level(t, values, active, fill, reach)


def children(cells: torch.Tensor) -> torch.Tensor:
    """A cell grid at the next finer level: each cell's value in its 8 children."""
    return cells.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)
