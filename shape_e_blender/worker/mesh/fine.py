"""The fine stage: the fine grid's values where marching cubes needs them, in the cells the last
level chose.

A cell chosen at the last level (stride 2) holds 27 fine points: its 8 corners, known from the
level, and 19 between them. Evaluating all 19 asked 1.6 times the fewest points exact marching
cubes can take on a latent sampled by the prior (docs/performance.md): most of a chosen cell's 8
fine cells do not meet the surface. Here each of the 19 is first predicted by trilinear
interpolation of the chosen cell's corners, and a fine cell whose corners' signs disagree (the
true sign where a corner is evaluated, the predicted one elsewhere) has its corners evaluated;
again, until every fine cell whose signs disagree is wholly evaluated. Marching cubes then meets
true values in every cell it puts a triangle in; a predicted value only ever sits in a cell
whose signs all agree, where only its sign counts.

The surface is followed as at every level: the surface leaves a fine cell it crosses through a
face whose (evaluated) corners disagree, so the next fine cell shares disagreeing corners and is
evaluated too, in this chosen cell, the next chosen one or, through ``refine.spill``, a cell the
level left out. Every sheet of the surface that crosses a chosen cell is thus traced whole, with
the dense grid's vertices. What the prediction cannot see is a sheet that touches no point the
level evaluated and no traced sheet: a bubble thinner than 2 voxels inside a chosen cell. The
level above already misses those outside chosen cells (refine.py), and the part rule drops such
specks (stf.MIN_PART_FRACTION).

The stride-2 level has no near-zero test either (refine.py), so it is asked the same way, one
level up: ``last_level`` predicts its points from the stride-4 level's cells. A stride-4 cell
chosen by the near-zero test alone (its corners agree) is not predicted: there the field may
reach zero where no interpolation of the corners does. Its centre is asked first, and then the
corners of those of its 8 stride-2 cells that the centre's and the corners' values, with the
level's slope bound, do not prove free of zero (``_near_zero``): 4 to 7 % fewer signed
distances at grid 256 on latents sampled by the prior, 11 % on the tiny models' fields.

Trilinear interpolation agrees along a face shared by two cells (both reduce to the face's
bilinear), so a point has one prediction whichever cell it is seen from; a point on the face of
a cell the level left out is predicted with that cell's sign, since all its corners share it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from itertools import product

import torch

from .batches import Batches, GridField
from .refine import OUTSIDE, Level, settled, spill


@functools.cache
def _tables(r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a cell of ``r`` fine steps per edge: its (r + 1)^3 points' offsets (slot
    ((a (r + 1)) + b) (r + 1) + c at offset (a, b, c)), its corner slots (in the order of
    product((0, 1), repeat=3)) and each point's trilinear weights on them."""
    q = r + 1
    offsets = torch.tensor(list(product(range(q), repeat=3)))
    corner_slots = torch.tensor([(a * q + b) * q + c for a, b, c in product((0, r), repeat=3)])
    weights = torch.tensor(
        [
            [
                math.prod(o / r if bit else 1 - o / r for o, bit in zip(offset, bits, strict=True))
                for bits in product((0, 1), repeat=3)
            ]
            for offset in offsets.tolist()
        ]
    )
    return offsets, corner_slots, weights


@functools.cache
def _cell_offsets(r: int) -> torch.Tensor:
    """The slots of a block's points at the lower corners of its r^3 cells, in the order of
    _cell_bits (product(range(r), repeat=3))."""
    q = r + 1
    return torch.tensor([(i * q + j) * q + k for i, j, k in product(range(r), repeat=3)])


@functools.cache
def _cell_bits(q: int) -> tuple[int, ...]:
    """For a block of q^3 points (slot (a q + b) q + c), each of its (q - 1)^3 cells' corners as
    a bit mask over the slots."""
    if q**3 > 31:
        raise ValueError(f"a block of {q}^3 points does not fit an int32 bit mask")
    return tuple(
        sum(1 << (((i + a) * q + j + b) * q + k + c) for a, b, c in product((0, 1), repeat=3))
        for i, j, k in product(range(q - 1), repeat=3)
    )


def _crossed_cells(inside: torch.Tensor, q: int) -> torch.Tensor:
    """(B, q^3) bool, the signs of a batch of blocks -> (B, (q - 1)^3): which cells of each
    block have corners whose signs disagree (cells in the order of product(range(q - 1), ...)).

    Each block's signs packed into one int32, each cell tested with its corner mask: the same
    answer as refine.crossed on (B, q, q, q), a tenth of its time (eight strided views a
    reduction) on the 10^5 blocks of a grid-256 fine stage."""
    shifts = torch.arange(q**3, dtype=torch.int32, device=inside.device)
    code = (inside.int() << shifts).sum(dim=1, dtype=torch.int32)
    signs = [code & mask for mask in _cell_bits(q)]
    return torch.stack(
        [(s != 0) & (s != mask) for s, mask in zip(signs, _cell_bits(q), strict=True)], dim=1
    )


def _corners_of_crossed_cells(inside: torch.Tensor, q: int) -> torch.Tensor:
    """(B, q^3) bool, the signs of a batch of blocks -> (B, q^3): the points that are a corner
    of a cell of their block whose corners' signs disagree (as refine.corner_points would)."""
    shifts = torch.arange(q**3, dtype=torch.int32, device=inside.device)
    crossed = _crossed_cells(inside, q)
    needed = torch.zeros(len(inside), dtype=torch.int32, device=inside.device)
    for cell, mask in enumerate(_cell_bits(q)):
        needed |= torch.where(crossed[:, cell], mask, 0)
    return (needed[:, None] >> shifts) & 1 == 1


class _Points:
    """The fine points met so far, found without a search: a point belongs to the level cell
    whose lower r^3 points hold it (``ijk // r``, its owner) and sits in that cell's row at slot
    ``ijk % r``; a grid of row numbers over the owners (one layer more than the cells, for the
    far faces) gives the row. Per slot: the value (true or predicted), whether it was evaluated
    and whether it was met."""

    def __init__(self, cells: int, r: int, device: torch.device) -> None:
        self.r, self.per_row, m = r, r**3, cells + 1
        self._row_shift = self.per_row.bit_length() - 1  # r is a power of 2
        self.row = torch.full((m**3,), -1, dtype=torch.int32, device=device)
        self.owner = torch.empty((0, 3), dtype=torch.long, device=device)  # each row's cell
        self.value = torch.empty(0, dtype=torch.float32, device=device)
        self.evaluated = torch.empty(0, dtype=torch.bool, device=device)
        self.met = torch.empty(0, dtype=torch.bool, device=device)
        self._m = torch.tensor([m * m, m, 1], device=device)
        slots = torch.arange(r**3, device=device)
        self._slot_offset = torch.stack([slots // r**2, slots // r % r, slots % r], dim=1)
        # A block's (r + 1)^3 points (offset o from its cell) lie in the 8 owners cell + o // r,
        # each at slot o % r.
        offsets, _, _ = _tables(r)
        offsets = offsets.to(device)
        ahead = offsets // r
        self._owner_step = (
            torch.tensor(list(product((0, 1), repeat=3)), device=device) * self._m
        ).sum(1)
        self._slot_owner = (ahead[:, 0] * 2 + ahead[:, 1]) * 2 + ahead[:, 2]
        within = offsets - r * ahead
        self._slot_within = (within[:, 0] * r + within[:, 1]) * r + within[:, 2]

    def blocks(self, cells: torch.Tensor) -> torch.Tensor:
        """(B, 3) level cells -> (B, (r + 1)^3) positions of their points, giving rows to
        owners met for the first time."""
        owners = (cells * self._m).sum(dim=1)[:, None] + self._owner_step
        rows = self.row[owners]
        missing = rows < 0
        if bool(missing.any()):
            mark = torch.zeros_like(self.row, dtype=torch.bool)
            mark[owners[missing]] = True
            fresh = mark.nonzero()[:, 0]
            count, added = len(self.owner), len(fresh)
            self.row[fresh] = torch.arange(
                count, count + added, dtype=torch.int32, device=cells.device
            )
            m = self._m[1]
            self.owner = torch.cat(
                [self.owner, torch.stack([fresh // (m * m), fresh // m % m, fresh % m], 1)]
            )
            slots = added * self.per_row
            self.value = torch.cat([self.value, self.value.new_full((slots,), math.nan)])
            self.evaluated = torch.cat([self.evaluated, self.evaluated.new_zeros(slots)])
            self.met = torch.cat([self.met, self.met.new_zeros(slots)])
            rows = self.row[owners]
        # index_select: half the time of advanced indexing for these gathers (torch 2.13, CPU)
        return rows.long().index_select(1, self._slot_owner) * self.per_row + self._slot_within

    def ijk(self, positions: torch.Tensor) -> torch.Tensor:
        """(K,) positions -> (K, 3) fine indices."""
        row, slot = positions >> self._row_shift, positions & (self.per_row - 1)
        return self.owner.index_select(0, row) * self.r + self._slot_offset.index_select(0, slot)

    def linear(self, positions: torch.Tensor, size: int) -> torch.Tensor:
        """(K,) positions -> (K,) linear indices into a grid of ``size`` points per axis."""
        steps = torch.tensor([size * size, size, 1], device=positions.device)
        row, slot = positions >> self._row_shift, positions & (self.per_row - 1)
        owner = (self.owner * (self.r * steps)).sum(dim=1)
        return owner.index_select(0, row) + (self._slot_offset * steps).sum(dim=1)[slot]

    def distinct(self, positions: torch.Tensor) -> torch.Tensor:
        """The distinct positions among ``positions``, in increasing order (no sort: a mark)."""
        mark = torch.zeros_like(self.met)
        mark[positions] = True
        return mark.nonzero()[:, 0]


def fine_values(
    sdf: GridField,
    level: Level,
    size: int,
    box: tuple[int, int],
    run: Batches,
    check: Callable[[torch.Tensor], None],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """The fine points marching cubes needs in the cells ``level`` chose, and in the cells the
    surface spills into from them (see the module docstring).

    ``size`` is the padded fine grid's points per axis and ``box`` its in-box index range;
    ``sdf`` takes the points as indices into that grid. Returns the points' linear indices
    (first axis slowest; in no particular order), values (true, or predicted where only the
    sign counts) and
    which were evaluated, how many points the field was asked, the level's cells that were
    opened, and the fine cells the surface crosses ((C, 3) lower corners; every corner of
    them evaluated).
    """
    r, device, p = level.stride, run.device, size
    offsets, corner_slots, weights = (t.to(device) for t in _tables(r))
    lo, hi = box
    points = _Points(level.active.shape[0], r, device)
    where = torch.empty((0, len(offsets)), dtype=torch.long, device=device)  # each block's points
    blocks = torch.empty((0, 3), dtype=torch.long, device=device)  # each block's level cell
    chosen, new, asked = level.active.clone(), level.active, 0

    def evaluate(positions: torch.Tensor) -> torch.Tensor:
        nonlocal asked
        ijk = points.ijk(positions)
        got = run.evaluate(sdf, len(ijk), lambda a, b: ijk[a:b], 1, "signed distance")
        got = got.reshape(-1)
        check(got)
        asked += len(ijk)
        return got

    while bool(new.any()):
        cells = new.nonzero()
        at = points.blocks(cells)
        fresh = points.distinct(at[~points.met[at]])
        ijk = points.ijk(fresh)
        in_box = ((ijk >= lo) & (ijk <= hi)).all(dim=1)
        on_level = fresh & (points.per_row - 1) == 0  # slot 0: the owner cell's corner
        value = torch.full((len(fresh),), OUTSIDE, device=device)
        c = ijk[on_level & in_box] // r
        value[on_level & in_box] = level.values[c[:, 0], c[:, 1], c[:, 2]]
        # A spilled-into cell's corners the level never evaluated.
        ask = value.isnan()
        value[ask] = evaluate(fresh[ask])
        points.value[fresh] = value
        points.evaluated[fresh] = on_level | ~in_box
        newly = torch.zeros_like(points.met)
        newly[fresh] = True
        points.met[fresh] = True
        start = len(where)
        where = torch.cat([where, at])
        blocks = torch.cat([blocks, cells])
        corner = points.value[at[:, corner_slots]]
        # A cell the level chose with corners of one sign: its field may reach zero between
        # them (refine's near-zero test), where no interpolation of the corners can.
        agree = (corner > 0).all(dim=1) | (corner <= 0).all(dim=1)
        near = agree & level.active[cells.unbind(1)]
        reach = None if level.reach is None else level.reach[cells[near].unbind(1)]
        whole = _near_zero(points, at[near], corner[near], reach, evaluate)
        # Predict the rest from the cells' corners. A point met before keeps its prediction:
        # the same interpolation of the same face, but a different rounding could flip the sign
        # of one near zero in a cell resolved already.
        guess = ~points.evaluated[at] & newly[at]
        points.value[at[guess]] = (corner @ weights.T)[guess]
        done = _resolve(points, where, start, evaluate)
        # Only evaluated points can disagree with a left-out cell: a predicted one on its face
        # interpolates its corners, which all have its sign.
        done = torch.cat([done, whole, fresh[ask]])
        inside = points.value[done] > 0
        new = spill(points.ijk(done), inside, chosen, level.fill, r)
        chosen |= new
    met = points.met.nonzero()[:, 0]
    # The fine cells whose signs disagree, each in one block: all their corners are evaluated.
    crossed = _crossed_cells(points.value[where] > 0, r + 1)
    cells = (r * blocks[:, None, :] + offsets[_cell_offsets(r).to(device)])[crossed]
    return (
        points.linear(met, p),
        points.value[met],
        points.evaluated[met],
        asked,
        chosen,
        cells,
    )


@functools.cache
def _cell_corner_slots(r: int) -> torch.Tensor:
    """(r^3, 8): the slots of the corners of each of a block's r^3 cells (cells in the order of
    _cell_offsets, corners in the order of product((0, 1), repeat=3))."""
    q = r + 1
    step = torch.tensor([(i * q + j) * q + k for i, j, k in product((0, 1), repeat=3)])
    return _cell_offsets(r)[:, None] + step


def _near_zero(
    points: _Points,
    at: torch.Tensor,
    corner: torch.Tensor,
    reach: torch.Tensor | None,
    evaluate: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Evaluate the points of the blocks of cells chosen by the near-zero test alone (``at``,
    their positions; ``corner``, their corners' values) where the field may reach zero; returns
    the positions evaluated.

    With ``reach`` (the level's slope bound L times the cell's edge e) and r = 2, the cell's
    centre is asked first. The field is within L |x - p| of its value at any point p, so zero
    is out of reach at x when |x - p| < |v(p)| / L for some evaluated p. Each of the cell's 8
    fine cells (edge e / 2) has one of its corners c and the centre m at opposite corners, and
    every x in it has |x - c|^2 + |x - m|^2 <= 3 (e / 2)^2 (the sum peaks at the fine cell's
    corners): when v(c)^2 + v(m)^2 > 3 (L e / 2)^2 the two balls cover it, and it is left to
    its corners' sign. Only the corners of the other fine cells are asked: on latents sampled
    by the prior, 60 % of these fine cells are covered. A centre of the other sign, or a cell
    the box's face cuts (NaN reach), is asked whole."""
    done = [at[:0, 0]]

    def ask(positions: torch.Tensor) -> None:
        todo = points.distinct(positions.reshape(-1))
        todo = todo[~points.evaluated[todo]]  # the level's corners; points beyond the box
        points.value[todo] = evaluate(todo)
        points.evaluated[todo] = True
        done.append(todo)

    r = points.r
    if len(at) and reach is not None and r == 2:
        centre = at[:, (r + 1) ** 2 + r + 2]  # offset (1, 1, 1)
        ask(centre)
        m = points.value[centre]
        same = (m > 0) == (corner[:, 0] > 0)
        covered = same[:, None] & (corner**2 + (m**2)[:, None] > 0.75 * (reach**2)[:, None])
        # Cell i of the block is the one with corner i: the open cells' corners.
        at = at[:, _cell_corner_slots(r).to(at.device)][~covered]
    if len(at):
        ask(at)
    return torch.cat(done)


def _resolve(
    points: _Points,
    where: torch.Tensor,
    start: int,
    evaluate: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Evaluate the corners of every fine cell whose signs disagree, until none of them has a
    corner only predicted. ``where[start:]`` are new blocks; the others were resolved before and
    change only where a point they share is evaluated. Returns the positions evaluated."""
    q = round(where.shape[1] ** (1 / 3))
    dirty = torch.arange(len(where), device=where.device) >= start
    done = [where[:0, 0]]
    while bool(dirty.any()):
        at = where[dirty]
        todo = at[_corners_of_crossed_cells(points.value[at] > 0, q) & ~points.evaluated[at]]
        if not len(todo):
            break
        todo = points.distinct(todo)
        points.value[todo] = evaluate(todo)
        points.evaluated[todo] = True
        done.append(todo)
        changed = torch.zeros_like(points.evaluated)
        changed[todo] = True
        dirty = changed[where].any(dim=1)
    return torch.cat(done)


def last_level(
    sdf: GridField,
    parent: Level,
    box: tuple[int, int],
    spacing: float,
    run: Batches,
    check: Callable[[torch.Tensor], None],
) -> tuple[Level, int]:
    """The stride-2 level, which has no near-zero test: only sign changes, so its points are
    asked as the fine stage asks the fine grid's (fine.py), where a cell's signs disagree.
    A point only predicted is NaN in the level's values, so the fine stage asks it if needed."""
    if parent.stride != 4:
        raise ValueError(f"the stride-2 level follows a stride-4 one, not {parent.stride}")
    t, m = 2, 2 * parent.active.shape[0] + 1
    lo, hi = box
    relative = Level(2, parent.values, parent.active, parent.fill, parent.reach)
    index, value, evaluated, asked, chosen, _ = fine_values(
        lambda ijk: sdf(ijk * t), relative, m, (-(-lo // t), hi // t), run, check
    )
    signs = torch.full((m, m, m), math.nan, dtype=torch.float32, device=index.device)
    signs.view(-1)[index] = value
    values = torch.full_like(signs, math.nan)
    values.view(-1)[index[evaluated]] = value[evaluated]
    return settled(values, signs, chosen, parent, spacing, box, near=False), asked
