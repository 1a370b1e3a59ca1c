"""A rendered picture of an imported mesh: the colours reach the pixels, in the right places.

The pictures are written to <repo>/out/ (git-ignored) so they can be looked at after the run:
out/render_cycles.png (the material, lit) and out/render_workbench.png (the colour attribute).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.shapes import SNOWMAN_COLORS, linear_to_srgb, snowman
from tests.support import HAS_EGL, NO_EGL_REASON, REPO, run_blender_script

from .images import png_header, read_pixels

pytestmark = pytest.mark.skipif(not HAS_EGL, reason=NO_EGL_REASON)
OUT = REPO / "out"
SIZE = 192


@pytest.fixture(scope="module")
def snowman_npz(tmp_path_factory):
    return snowman().save(tmp_path_factory.mktemp("job") / "0" / "mesh.npz")


def _render(snowman_npz, engine: str) -> np.ndarray:
    result = run_blender_script(
        "tests.blender.children.showcase",
        str(snowman_npz),
        "-o",
        str(OUT / f"render_{engine.lower()}.png"),
        "--name",
        "a snowman",
        "--engine",
        engine,
        "--resolution",
        str(SIZE),
        "--samples",
        "16",
    )
    print(f"rendered picture: {result['path']}")
    assert result["objects"] == ["Snowman"]
    header = png_header(result["path"])
    assert (header.width, header.height, header.bit_depth) == (SIZE, SIZE, 8)
    return read_pixels(result["path"])


def _rows_matching(pixels: np.ndarray, target: np.ndarray, tol: float) -> np.ndarray:
    """Row indices (top = 0) of opaque pixels within ``tol`` of an RGB colour."""
    opaque = pixels[..., 3] > 0.99
    close = np.abs(pixels[..., :3] - target).max(axis=-1) <= tol
    return np.nonzero(opaque & close)[0]


def test_workbench_shows_the_colour_attribute_exactly(snowman_npz):
    pixels = _render(snowman_npz, "WORKBENCH")
    alpha = pixels[..., 3]
    assert alpha[0, 0] == 0.0 and 0.1 < (alpha > 0.5).mean() < 0.8
    # Flat light, Standard view: each part's pixels are the sRGB encoding of its linear colour.
    rows = {
        part: _rows_matching(pixels, linear_to_srgb(color), tol=1.5 / 255)
        for part, color in SNOWMAN_COLORS.items()
    }
    for part, found in rows.items():
        assert len(found) > 200, part
    matched = sum(len(r) for r in rows.values())
    assert matched > 0.9 * (alpha > 0.99).sum()  # hardly any other colour (edges only)
    # Hat above head above body.
    assert rows["hat"].mean() < rows["head"].mean() < rows["body"].mean()


def test_cycles_renders_the_material_with_the_vertex_colours(snowman_npz):
    pixels = _render(snowman_npz, "CYCLES")
    opaque = pixels[..., 3] > 0.99
    assert 0.1 < opaque.mean() < 0.8
    r, g, b = (pixels[..., i] for i in range(3))
    blue = opaque & (b > r + 0.2) & (b > g + 0.1)
    red = opaque & (r > g + 0.25) & (r > b + 0.25) & (g < 0.5 * r)
    yellow = opaque & (r > 0.4) & (g > 0.5 * r) & (b < 0.5 * g)
    for part, mask in {"body": blue, "head": red, "hat": yellow}.items():
        assert mask.sum() > 100, part
    rows = {name: np.nonzero(mask)[0].mean() for name, mask in (("b", blue), ("r", red))}
    assert rows["r"] < rows["b"]  # the red head sits above the blue body
    # Lit and shaded: a sphere's pixels are not one flat colour.
    assert pixels[..., 2][blue].std() > 0.03
