"""shape_e.use_settings: a Shap-E object's settings back into the panel, so Generate remakes it.

Real bpy, the real worker and a tiny model: the object made again through the panel's own
Generate button must be the same mesh, vertex for vertex (to the batch's rounding).
"""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from tests.support import FAST


def _positions(obj: bpy.types.Object) -> np.ndarray:
    out = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def _farthest(points: np.ndarray, others: np.ndarray) -> float:
    """The largest distance from a point of ``points`` to the nearest of ``others``."""
    from mathutils.kdtree import KDTree

    tree = KDTree(len(others))
    for i, p in enumerate(others):
        tree.insert(p, i)
    tree.balance()
    return max(tree.find(p)[2] for p in points)


def _panel_state(s) -> tuple:
    return (s.source, s.prompt, s.seed, s.random_seed, s.steps, s.grid_size, s.variants)


def test_the_panel_remakes_one_variant_exactly_from_its_settings(scene, text_model):
    assert bpy.ops.shape_e.text_to_mesh(
        prompt="a red chair", seed=7, variants=2, guidance_scale=12.5, **FAST
    ) == {"FINISHED"}
    second = bpy.data.objects["Red chair_1"]
    s = scene.shape_e
    s.prompt, s.seed, s.random_seed, s.steps, s.variants = "something else", 1, True, 9, 3
    s.grid_size, s.text_guidance_scale = 96, 4.0

    assert bpy.ops.shape_e.use_settings(object_name="Red chair_1") == {"FINISHED"}
    assert (s.source, s.prompt, s.seed, s.random_seed) == ("TEXT", "a red chair", 8, False)
    assert (s.steps, s.grid_size, s.variants) == (FAST["steps"], FAST["grid_size"], 1)
    assert s.text_guidance_scale == pytest.approx(12.5)

    # The panel's Generate button, as an artist presses it: variant 1 (seed 8) comes back.
    assert bpy.ops.shape_e.generate() == {"FINISHED"}
    again = bpy.context.view_layer.objects.active
    assert again.name not in ("Red chair_0", "Red chair_1")
    assert again["shape_e"]["seed"] == 8 and again["shape_e"]["variants"] == 1
    assert len(again.data.polygons) == len(second.data.polygons)
    # A variant run alone matches its batch twin to rounding (within 1e-3), and marching cubes
    # may list the vertices in another order: every vertex has its twin within 1e-3, both ways.
    assert _farthest(_positions(again), _positions(second)) < 1e-3
    assert _farthest(_positions(second), _positions(again)) < 1e-3
    # ... and not the other variant's (seed 7), which this comparison tells apart.
    assert _farthest(_positions(again), _positions(bpy.data.objects["Red chair_0"])) > 1e-2


def test_the_active_object_is_used_when_none_is_named(scene, text_model):
    assert bpy.ops.shape_e.text_to_mesh(prompt="a stool", seed=3, **FAST) == {"FINISHED"}
    scene.shape_e.prompt = "other"
    assert bpy.ops.shape_e.use_settings() == {"FINISHED"}
    assert scene.shape_e.prompt == "a stool" and scene.shape_e.seed == 3


def test_objects_it_cannot_take_settings_from_are_refused_and_the_panel_kept(scene):
    mesh = bpy.data.meshes.new("Cube")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    cube = bpy.data.objects.new("Cube", mesh)
    scene.collection.objects.link(cube)
    bpy.context.view_layer.objects.active = cube
    s = scene.shape_e
    s.prompt, s.seed = "kept", 5
    before = _panel_state(s)
    with pytest.raises(RuntimeError, match="object_name: the active object was not made by"):
        bpy.ops.shape_e.use_settings()
    with pytest.raises(RuntimeError, match="object_name: 'Nothing' was not made by"):
        bpy.ops.shape_e.use_settings(object_name="Nothing")
    # An object whose settings name only a latent file (one imported from a re-mesh job).
    cube["shape_e"] = {"latent": "/somewhere/0/latent.npy", "grid_size": 64}
    with pytest.raises(RuntimeError, match="made from a latent file"):
        bpy.ops.shape_e.use_settings(object_name="Cube")
    assert _panel_state(s) == before
