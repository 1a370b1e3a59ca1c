"""The fine stage's pieces against the plain definitions they replace."""

from __future__ import annotations

import pytest
import torch

from shape_e_blender.worker.mesh.fine import _corners_of_crossed_cells
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
