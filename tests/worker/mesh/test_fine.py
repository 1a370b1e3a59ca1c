"""The fine stage's pieces against the plain definitions they replace."""

from __future__ import annotations

import math

import pytest
import torch

from shape_e_blender.worker.mesh.fine import _corners_of_crossed_cells, _near_zero, _Points, _tables
from shape_e_blender.worker.mesh.refine import corner_points, crossed


@pytest.mark.parametrize("q", [2, 3])
def test_packed_signs_find_the_corners_of_the_cells_whose_signs_disagree(q):
    """Every sign pattern of a one-cell block, and random ones of a 2x2x2-cell block, give the
    corners of the crossed cells exactly as refine.crossed and refine.corner_points do."""
    if q == 2:
        patterns = torch.arange(256)[:, None] >> torch.arange(8) & 1 == 1
    else:
        patterns = torch.rand(20000, 27, generator=torch.Generator().manual_seed(0)) > 0.5
        patterns[:3] = torch.tensor([False, True])[torch.tensor([0, 1, 0])][:, None]
    want = corner_points(crossed(patterns.view(-1, q, q, q))).view(len(patterns), -1)
    got = _corners_of_crossed_cells(patterns, q)
    assert torch.equal(got, want)
    assert got.any() and not got.all()


def test_a_block_too_big_for_the_mask_is_refused():
    with pytest.raises(ValueError, match="int32"):
        _corners_of_crossed_cells(torch.zeros(1, 64, dtype=torch.bool), 4)


@pytest.mark.parametrize(
    ("corners", "centre", "reach", "asked"),
    [
        # v(c)^2 + v(m)^2 = 0.0034 > 0.75 * 0.06^2 = 0.0027 for every corner: only the centre.
        ([0.05] * 8, 0.03, 0.06, {(1, 1, 1)}),
        # Corner 0 is near zero (1e-6 + 9e-4 < 0.0027): the fine cell at offset 0, no other.
        (
            [0.001] + [0.05] * 7,
            0.03,
            0.06,
            {(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)} - {(0, 0, 0)},
        ),
        # The centre near zero: every fine cell is open, the whole block is asked.
        ([0.05] * 8, 0.01, 0.06, "all"),
        # The centre of the other sign: the surface is inside, the whole block.
        ([0.05] * 8, -0.05, 0.06, "all"),
        # A cell the box's face cuts (NaN reach), or a level without the test: whole.
        ([0.05] * 8, 0.05, math.nan, "all"),
        ([0.05] * 8, 0.05, None, "all"),
    ],
)
def test_a_near_zero_cell_is_asked_only_where_its_field_may_reach_zero(
    corners, centre, reach, asked
):
    """The centre is asked first; a fine cell whose corner and centre values put every point
    of it beyond reach of zero (v(c)^2 + v(m)^2 > 3 (L e / 2)^2) is not asked."""
    points = _Points(2, 2, torch.device("cpu"))
    at = points.blocks(torch.tensor([[0, 0, 0]]))
    _, corner_slots, _ = _tables(2)
    points.met[at] = True
    points.value[at[:, corner_slots]] = torch.tensor([corners])
    points.evaluated[at[:, corner_slots]] = True
    got: list[torch.Tensor] = []

    def evaluate(positions):
        got.append(points.ijk(positions))
        return torch.where((got[-1] == 1).all(dim=1), centre, 0.05)

    corner = points.value[at[:, corner_slots]]
    done = _near_zero(
        points, at, corner, None if reach is None else torch.tensor([reach]), evaluate
    )
    offsets = {tuple(p) for p in torch.cat(got).tolist()}
    if asked == "all":
        asked = {(a, b, c) for a in range(3) for b in range(3) for c in range(3)}
        asked -= {(a, b, c) for a in (0, 2) for b in (0, 2) for c in (0, 2)}
    assert offsets == asked
    assert sum(len(g) for g in got) == len(asked)  # each point once
    assert sorted(points.ijk(done).tolist()) == sorted(map(list, asked))
    assert bool(points.evaluated[done].all())
