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
chosen by the near-zero test alone (its corners agree) is asked whole, at both stages: there
the field may reach zero where no interpolation of the corners does.

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
def _cell_bits(q: int) -> tuple[int, ...]:
    """For a block of q^3 points (slot (a q + b) q + c), each of its (q - 1)^3 cells' corners as
    a bit mask over the slots."""
    if q**3 > 31:
        raise ValueError(f"a block of {q}^3 points does not fit an int32 bit mask")
    return tuple(
        sum(1 << (((i + a) * q + j + b) * q + k + c) for a, b, c in product((0, 1), repeat=3))
        for i, j, k in product(range(q - 1), repeat=3)
    )


def _corners_of_crossed_cells(inside: torch.Tensor, q: int) -> torch.Tensor:
    """(B, q^3) bool, the signs of a batch of blocks -> (B, q^3): the points that are a corner
    of a cell of their block whose corners' signs disagree.

    Each block's signs packed into one int32, each cell tested with its corner mask: the same
    answer as refine.crossed and refine.corner_points on (B, q, q, q), a tenth of their time
    (eight strided views a reduction) on the 10^5 blocks of a grid-256 fine stage."""
    shifts = torch.arange(q**3, dtype=torch.int32, device=inside.device)
    code = (inside.int() << shifts).sum(dim=1, dtype=torch.int32)
    needed = torch.zeros_like(code)
    for mask in _cell_bits(q):
        signs = code & mask
        needed |= torch.where((signs != 0) & (signs != mask), mask, 0)
    return (needed[:, None] >> shifts) & 1 == 1


class _Points:
    """The fine points met so far, in the order they were met: linear index into the padded fine
    grid, value (true or predicted) and whether it was evaluated."""

    def __init__(self, device: torch.device) -> None:
        self.index = torch.empty(0, dtype=torch.long, device=device)
        self.value = torch.empty(0, dtype=torch.float32, device=device)
        self.evaluated = torch.empty(0, dtype=torch.bool, device=device)

    def place(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions for ``index`` (unique): where each was met, or after the points met so far
        for those new (in their order). Returns the positions and which ones are new."""
        if not len(self.index):
            return torch.arange(len(index), device=index.device), torch.ones_like(index, dtype=bool)
        order = torch.argsort(self.index)
        at = torch.searchsorted(self.index[order], index).clamp(max=len(order) - 1)
        met = self.index[order[at]] == index
        where = torch.empty_like(index)
        where[met] = order[at[met]]
        where[~met] = len(self.index) + torch.arange(int((~met).sum()), device=index.device)
        return where, ~met

    def extend(self, index: torch.Tensor, value: torch.Tensor, evaluated: torch.Tensor) -> None:
        self.index = torch.cat([self.index, index])
        self.value = torch.cat([self.value, value])
        self.evaluated = torch.cat([self.evaluated, evaluated])


def fine_values(
    sdf: GridField,
    level: Level,
    size: int,
    box: tuple[int, int],
    run: Batches,
    check: Callable[[torch.Tensor], None],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """The fine points marching cubes needs in the cells ``level`` chose, and in the cells the
    surface spills into from them (see the module docstring).

    ``size`` is the padded fine grid's points per axis and ``box`` its in-box index range;
    ``sdf`` takes the points as indices into that grid. Returns the points' linear indices
    (sorted, first axis slowest), values (true, or predicted where only the sign counts) and
    which were evaluated, how many points the field was asked, and the level's cells that were
    opened.
    """
    r, device, p = level.stride, run.device, size
    offsets, corner_slots, weights = (t.to(device) for t in _tables(r))
    slot_offsets = (offsets[:, 0] * p + offsets[:, 1]) * p + offsets[:, 2]
    lo, hi = box
    points = _Points(device)
    where = torch.empty((0, len(offsets)), dtype=torch.long, device=device)  # each block's points
    chosen, new, asked = level.active.clone(), level.active, 0

    def evaluate(index: torch.Tensor) -> torch.Tensor:
        nonlocal asked
        ijk = _ijk(index, p)
        got = run.evaluate(sdf, len(ijk), lambda a, b: ijk[a:b], 1, "signed distance")
        got = got.reshape(-1)
        check(got)
        asked += len(ijk)
        return got

    while bool(new.any()):
        cells = new.nonzero()
        block = (r * ((cells[:, 0] * p + cells[:, 1]) * p + cells[:, 2]))[:, None] + slot_offsets
        flat, slot_of = torch.unique(block.reshape(-1), return_inverse=True)
        at, fresh = points.place(flat)
        flat = flat[fresh]
        ijk = _ijk(flat, p)
        in_box = ((ijk >= lo) & (ijk <= hi)).all(dim=1)
        on_level = (ijk % r == 0).all(dim=1)
        value = torch.full((len(flat),), OUTSIDE, device=device)
        c = ijk[on_level & in_box] // r
        value[on_level & in_box] = level.values[c[:, 0], c[:, 1], c[:, 2]]
        # A spilled-into cell's corners the level never evaluated.
        ask = value.isnan()
        value[ask] = evaluate(flat[ask])
        start, before = len(where), len(points.index)
        points.extend(flat, value, on_level | ~in_box)
        where = torch.cat([where, at[slot_of].reshape(block.shape)])
        corner = points.value[where[start:, corner_slots]]
        # A cell the level chose with corners of one sign: its field may reach zero between
        # them (refine's near-zero test), where no interpolation of the corners can: whole.
        agree = (corner > 0).all(dim=1) | (corner <= 0).all(dim=1)
        whole = torch.unique(where[start:][agree & level.active[cells.unbind(1)]])
        whole = whole[~points.evaluated[whole]]
        points.value[whole] = evaluate(points.index[whole])
        points.evaluated[whole] = True
        # Predict the rest from the cells' corners. A point met before keeps its prediction:
        # the same interpolation of the same face, but a different rounding could flip the sign
        # of one near zero in a cell resolved already.
        guess = ~points.evaluated[where[start:]] & (where[start:] >= before)
        points.value[where[start:][guess]] = (corner @ weights.T)[guess]
        done = _resolve(points, where, start, evaluate)
        # Only evaluated points can disagree with a left-out cell: a predicted one on its face
        # interpolates its corners, which all have its sign.
        done = torch.cat([done, whole, before + ask.nonzero()[:, 0]])
        inside = points.value[done] > 0
        new = spill(_ijk(points.index[done], p), inside, chosen, level.fill, r)
        chosen |= new
    order = torch.argsort(points.index)
    return points.index[order], points.value[order], points.evaluated[order], asked, chosen


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
        todo = torch.unique(todo)
        points.value[todo] = evaluate(points.index[todo])
        points.evaluated[todo] = True
        done.append(todo)
        changed = torch.zeros_like(points.evaluated)
        changed[todo] = True
        dirty = changed[where].any(dim=1)
    return torch.cat(done)


def _ijk(index: torch.Tensor, p: int) -> torch.Tensor:
    return torch.stack([index // (p * p), (index // p) % p, index % p], dim=1)


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
    relative = Level(2, parent.values, parent.active, parent.fill)
    index, value, evaluated, asked, chosen = fine_values(
        lambda ijk: sdf(ijk * t), relative, m, (-(-lo // t), hi // t), run, check
    )
    signs = torch.full((m, m, m), math.nan, dtype=torch.float32, device=index.device)
    signs.view(-1)[index] = value
    values = torch.full_like(signs, math.nan)
    values.view(-1)[index[evaluated]] = value[evaluated]
    return settled(values, signs, chosen, parent, spacing, box, near=False), asked
