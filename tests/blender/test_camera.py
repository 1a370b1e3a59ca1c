"""blender/camera.py: the camera's view as an RGBA PNG, with every render setting put back.

The renders run in a child process (tests/blender/camera_job.py): rendering can abort a process
where OpenGL is missing. The checks on the pictures run here.
"""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from shape_e_blender.blender.camera import render_camera_image
from shape_e_blender.core.errors import INVALID_PARAMS, ShapEError
from tests.support import HAS_EGL, NO_EGL_REASON, run_blender_script

from .images import png_header, read_pixels


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    if not HAS_EGL:
        pytest.skip(NO_EGL_REASON)
    out = tmp_path_factory.mktemp("camera")
    return run_blender_script("tests.blender.children.camera_job", str(out))


def _neutral_bright(pixels: np.ndarray) -> np.ndarray:
    """Opaque pixels of the grey floor: no hue, clearly lit."""
    r, g, b, a = np.moveaxis(pixels, -1, 0)
    return (a > 0.5) & (r > 0.15) & (abs(r - g) < 0.06) & (abs(r - b) < 0.06)


def test_png_is_rgba_8_bit_with_the_camera_aspect(captured):
    header = png_header(captured["selected"])
    # The scene's own output is 1920x1080 JPEG: the capture keeps only the aspect.
    assert (header.width, header.height) == (128, 72)
    assert (header.bit_depth, header.color_type) == (8, "RGBA")


def test_selected_only_keeps_the_cube_and_drops_the_floor(captured):
    pixels = read_pixels(captured["selected"])
    alpha = pixels[..., 3]
    assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0.0
    opaque = alpha > 0.5
    assert 0.02 < opaque.mean() < 0.6
    assert not _neutral_bright(pixels).any()  # no floor pixel anywhere
    r, g, b = (pixels[..., i][opaque].mean() for i in range(3))
    assert r > 0.3 and r > 3 * g and r > 3 * b  # the cube is red


def test_without_selected_only_the_floor_is_rendered(captured):
    pixels = read_pixels(captured["all"])
    assert (pixels[..., 3] > 0.5).mean() > 0.5
    assert _neutral_bright(pixels).mean() > 0.2


def test_every_render_setting_is_restored(captured):
    before = captured["before"]
    assert before["image_settings"]["file_format"] == "JPEG"
    assert before["render"]["engine"] == "BLENDER_WORKBENCH"
    assert before["objects"]["Floor"]["hide_render"] is False
    assert before["objects"]["HiddenByUser"]["hide_render"] is True
    for key in ("after_selected", "after_all", "after_error"):
        after = captured[key]
        for section in before:
            assert after[section] == before[section], (key, section)


def test_settings_are_restored_when_the_capture_fails(captured):
    assert captured["error"] is not None and "could not be saved" in captured["error"]
    assert captured["after_error"] == captured["before"]


def test_no_camera_is_a_clear_error(context):
    bpy.ops.mesh.primitive_cube_add()
    with pytest.raises(ShapEError) as err:
        render_camera_image(context, "/nonexistent/x.png", selected_only=False)
    assert err.value.code == INVALID_PARAMS and err.value.field == "camera"
    assert err.value.message == "the scene has no active camera"
    assert "Scene properties > Camera" in err.value.hint


def test_selected_only_with_nothing_selected_is_a_clear_error(context):
    bpy.ops.object.camera_add()
    context.scene.camera = context.view_layer.objects.active
    bpy.ops.mesh.primitive_cube_add()
    for obj in context.scene.objects:
        obj.select_set(False)
    with pytest.raises(ShapEError) as err:
        render_camera_image(context, "/nonexistent/x.png", selected_only=True)
    assert err.value.field == "selected_only"


def test_resolution_out_of_range_is_refused(context):
    bpy.ops.object.camera_add()
    context.scene.camera = context.view_layer.objects.active
    with pytest.raises(ShapEError) as err:
        render_camera_image(context, "/nonexistent/x.png", selected_only=False, resolution=8)
    assert err.value.field == "resolution"
