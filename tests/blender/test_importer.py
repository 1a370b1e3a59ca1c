"""blender/importer.py against real bpy: geometry, colours, material, placement, undo, cleanup."""

from __future__ import annotations

import itertools
import threading

import bpy
import numpy as np
import pytest
from mathutils import Vector

from shape_e_blender.blender import importer
from shape_e_blender.blender.importer import (
    COLOR_ATTRIBUTE,
    import_meshes,
    push_undo,
)
from shape_e_blender.core.errors import INTERNAL_ERROR, INVALID_PARAMS, ShapEError
from shape_e_blender.core.mesh import MeshData
from shape_e_blender.core.names import object_name_for
from tests.shapes import linear_to_srgb, uv_sphere

SETTINGS = {
    "prompt": "a red chair",
    "seed": 41,
    "steps": 64,
    "guidance_scale": 15.0,
    "grid_size": 128,
    "model": "openai/shap-e",
    "device": "cuda",
    "precision": "fp16",
    "versions": {"torch": "2.13.0", "diffusers": "0.42.1"},
}


def _import(context, meshes, **kwargs):
    kwargs.setdefault("name", "Red chair")
    kwargs.setdefault("settings", SETTINGS)
    return import_meshes(context, meshes, **kwargs)


def _world_bounds(obj) -> tuple[np.ndarray, np.ndarray]:
    bpy.context.view_layer.update()  # matrix_world follows location only after an update
    corners = np.array([tuple(obj.matrix_world @ Vector(c)) for c in obj.bound_box])
    return corners.min(axis=0), corners.max(axis=0)


def _datablock_counts() -> tuple[int, int, int]:
    return len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.materials)


def test_geometry_matches_the_mesh_data(context):
    data = uv_sphere(0.5, rings=6, segments=10, center=(3.0, -2.0, 7.0))
    (obj,) = _import(context, [data])
    mesh = obj.data
    assert obj.name == mesh.name == "Red chair"
    assert (len(mesh.vertices), len(mesh.polygons)) == (data.vertex_count, data.face_count)
    assert len(mesh.loops) == 3 * data.face_count
    sizes = np.empty(len(mesh.polygons), np.int32)
    mesh.polygons.foreach_get("loop_total", sizes)
    assert (sizes == 3).all()
    corners = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", corners)
    np.testing.assert_array_equal(corners.reshape(-1, 3), data.faces)
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    # Same shape, moved so that the bottom centre of the bounding box is the object's origin.
    expected = data.vertices - np.array([3.0, -2.0, 6.5], np.float32)
    np.testing.assert_allclose(co.reshape(-1, 3), expected, atol=1e-6)
    assert len(mesh.edges) > 0 and not mesh.validate(verbose=False)  # already valid


def test_face_winding_keeps_normals_outward(context):
    (obj,) = _import(context, [uv_sphere(1.0, rings=8, segments=12)])
    mesh = obj.data
    normals = np.empty(len(mesh.polygons) * 3, np.float32)
    centers = np.empty(len(mesh.polygons) * 3, np.float32)
    mesh.polygons.foreach_get("normal", normals)
    mesh.polygons.foreach_get("center", centers)
    sphere_center = np.array([0.0, 0.0, 1.0])  # the sphere now stands on the origin
    radial = centers.reshape(-1, 3) - sphere_center
    assert (np.einsum("ij,ij->i", normals.reshape(-1, 3), radial) > 0).all()


def test_colours_are_a_linear_float_point_attribute(context):
    data = uv_sphere(1.0)
    (obj,) = _import(context, [data])
    mesh = obj.data
    attr = mesh.color_attributes[COLOR_ATTRIBUTE]
    assert (attr.data_type, attr.domain) == ("FLOAT_COLOR", "POINT")
    assert mesh.color_attributes.active_color.name == COLOR_ATTRIBUTE
    render = mesh.color_attributes[mesh.color_attributes.render_color_index]
    assert render.name == COLOR_ATTRIBUTE
    linear = np.empty(len(attr.data) * 4, np.float32)
    attr.data.foreach_get("color", linear)
    linear = linear.reshape(-1, 4)
    np.testing.assert_array_equal(linear[:, :3], data.colors)
    assert (linear[:, 3] == 1.0).all()
    # Blender reads the stored values as linear: its sRGB view is the sRGB encoding of ours.
    srgb = np.empty_like(linear.ravel())
    attr.data.foreach_get("color_srgb", srgb)
    np.testing.assert_allclose(srgb.reshape(-1, 4)[:, :3], linear_to_srgb(data.colors), atol=2e-3)


def test_material_feeds_the_colour_attribute_to_the_base_colour(context):
    (obj,) = _import(context, [uv_sphere()])
    material = obj.active_material
    assert material is not None and obj.data.materials[0] == material
    links = {
        (link.from_node.bl_idname, link.from_socket.identifier, link.to_node.bl_idname,
         link.to_socket.name)
        for link in material.node_tree.links
    }  # fmt: skip
    assert ("ShaderNodeVertexColor", "Color", "ShaderNodeBsdfPrincipled", "Base Color") in links
    assert ("ShaderNodeBsdfPrincipled", "BSDF", "ShaderNodeOutputMaterial", "Surface") in links
    (color_node,) = [n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeVertexColor"]
    assert color_node.layer_name == COLOR_ATTRIBUTE


def test_shading_is_smooth(context):
    (obj,) = _import(context, [uv_sphere()])
    smooth = np.zeros(len(obj.data.polygons), bool)
    obj.data.polygons.foreach_get("use_smooth", smooth)
    assert smooth.all()


def test_stands_on_the_cursor_in_the_active_collection(context):
    scene = context.scene
    scene.cursor.location = (1.0, 2.0, 3.0)
    child = bpy.data.collections.new("Generated")
    scene.collection.children.link(child)
    context.view_layer.active_layer_collection = context.view_layer.layer_collection.children[
        "Generated"
    ]
    (obj,) = _import(context, [uv_sphere(0.5, center=(9.0, 9.0, 9.0))])
    assert tuple(obj.location) == pytest.approx((1.0, 2.0, 3.0))
    lo, hi = _world_bounds(obj)
    assert lo[2] == pytest.approx(3.0, abs=1e-6)  # the bottom touches the cursor
    assert (lo[:2] + hi[:2]) / 2 == pytest.approx([1.0, 2.0], abs=1e-6)
    assert [c.name for c in obj.users_collection] == ["Generated"]


def test_empty_name_gets_a_default(context):
    (obj,) = _import(context, [uv_sphere()], name="  ")
    assert obj.name == obj.data.name == "Shap-E"


def test_explicit_location_wins_over_the_cursor(context):
    context.scene.cursor.location = (5.0, 5.0, 5.0)
    (obj,) = _import(context, [uv_sphere()], location=(-1.0, 0.5, 0.0))
    assert tuple(obj.location) == pytest.approx((-1.0, 0.5, 0.0))


def test_new_objects_are_selected_and_the_first_is_active(context):
    bpy.ops.mesh.primitive_cube_add()
    cube = context.view_layer.objects.active
    assert cube.select_get()
    objs = _import(context, [uv_sphere(), uv_sphere()])
    assert not cube.select_get()
    assert all(o.select_get() for o in objs)
    assert context.view_layer.objects.active == objs[0]
    assert sorted(o.name for o in context.view_layer.objects.selected) == sorted(
        o.name for o in objs
    )


def test_settings_are_stored_per_variant(context):
    settings = dict(SETTINGS, seed=2**31 - 2, huge=2**40, nothing=None, path_list=["a", 1])
    objs = _import(context, [uv_sphere(), uv_sphere()], settings=settings, job_dir="/tmp/job7")
    props = [o["shape_e"].to_dict() for o in objs]
    for index, p in enumerate(props):
        assert p["prompt"] == "a red chair" and p["steps"] == 64 and p["grid_size"] == 128
        assert p["guidance_scale"] == 15.0 and p["model"] == "openai/shap-e"
        assert (p["device"], p["precision"]) == ("cuda", "fp16")
        assert p["versions"] == {"torch": "2.13.0", "diffusers": "0.42.1"}
        assert p["job_dir"] == "/tmp/job7" and p["variant"] == index
        assert p["huge"] == str(2**40)  # too big for an ID property int: kept exactly, as text
        assert "nothing" not in p
        assert p["path_list"] == '["a", 1]'
    # Each variant's own seed, wrapping inside 0..2^31-1 like GenerationParams.variant_seeds.
    assert [p["seed"] for p in props] == [2**31 - 2, 2**31 - 1]
    objs3 = _import(context, [uv_sphere()] * 3, settings=dict(SETTINGS, seed=2**31 - 1))
    assert [o["shape_e"]["seed"] for o in objs3] == [2**31 - 1, 0, 1]


def test_variants_with_gaps_keep_their_own_numbers_and_seeds(context):
    # Variants 0 and 2 of three had no surface: what is left keeps its variant's name and seed.
    objs = _import(context, [uv_sphere(), uv_sphere()], variants=[1, 3])
    assert [o.name for o in objs] == ["Red chair_1", "Red chair_3"]
    assert [o["shape_e"]["variant"] for o in objs] == [1, 3]
    assert [o["shape_e"]["seed"] for o in objs] == [SETTINGS["seed"] + 1, SETTINGS["seed"] + 3]
    assert objs[1].location.x > objs[0].location.x  # still side by side, without a hole
    (only,) = _import(context, [uv_sphere()], name="Lamp", variants=[0])
    assert only.name == "Lamp_0"  # one of several variants: numbered all the same
    before = _datablock_counts()
    with pytest.raises(ShapEError) as err:
        _import(context, [uv_sphere()], variants=[0, 1])
    assert err.value.code == INTERNAL_ERROR and _datablock_counts() == before


def test_variants_stand_side_by_side_along_x(context):
    widths = [0.5, 2.0, 1.0]
    meshes = [uv_sphere(w / 2) for w in widths]
    objs = _import(context, meshes, location=(10.0, 1.0, 0.0), spacing=0.25)
    assert [o.name for o in objs] == ["Red chair_0", "Red chair_1", "Red chair_2"]
    bounds = [_world_bounds(o) for o in objs]
    assert objs[0].location.x == pytest.approx(10.0)
    for (_, hi_a), (lo_b, _) in itertools.pairwise(bounds):
        assert lo_b[0] - hi_a[0] == pytest.approx(0.25, abs=1e-5)  # gap = spacing, no overlap
    assert all(o.location.y == pytest.approx(1.0) and o.location.z == 0.0 for o in objs)
    # One material serves all the variants of a call.
    assert len({o.active_material.name for o in objs}) == 1


def test_undo_removes_the_import_and_redo_restores_it(context):
    _import(context, [uv_sphere()])
    assert push_undo("Shap-E: Red chair")
    assert "Red chair" in bpy.data.objects
    bpy.ops.ed.undo()
    assert "Red chair" not in bpy.data.objects and "Red chair" not in bpy.data.meshes
    bpy.ops.ed.redo()
    obj = bpy.data.objects["Red chair"]
    assert obj.data.color_attributes[COLOR_ATTRIBUTE].data_type == "FLOAT_COLOR"


def test_undo_step_from_a_context_without_window(context):
    """A bpy.app.timers callback runs without a window, where ed.undo_push refuses to run."""
    with context.temp_override(window=None):
        assert not bpy.ops.ed.undo_push.poll()
        _import(bpy.context, [uv_sphere()])
        assert push_undo("Shap-E: Red chair")
    bpy.ops.ed.undo()
    assert "Red chair" not in bpy.data.objects
    bpy.ops.ed.redo()
    assert "Red chair" in bpy.data.objects


def test_two_imports_undo_one_at_a_time(context):
    _import(context, [uv_sphere()], name="First")
    push_undo("first")
    _import(context, [uv_sphere()], name="Second")
    push_undo("second")
    bpy.ops.ed.undo()
    assert "First" in bpy.data.objects and "Second" not in bpy.data.objects


def test_wrong_colour_count_leaves_nothing_behind(context):
    bpy.ops.mesh.primitive_cube_add()
    before = _datablock_counts()
    good = uv_sphere()
    bad = uv_sphere()
    # Force what MeshData's own check refuses, to fail inside Blender's foreach_set.
    object.__setattr__(bad, "colors", bad.colors[:-5])
    with pytest.raises(RuntimeError):
        _import(context, [good, bad])
    assert _datablock_counts() == before
    assert [o.name for o in context.scene.objects] == ["Cube"]


def test_simulated_error_after_the_meshes_leaves_nothing_behind(context, monkeypatch):
    before = _datablock_counts()

    def fail(*_args, **_kwargs):
        raise KeyError("simulated failure while storing the settings")

    monkeypatch.setattr(importer, "variant_properties", fail)
    with pytest.raises(KeyError, match="simulated"):
        _import(context, [uv_sphere(), uv_sphere()])
    assert _datablock_counts() == before


def test_empty_input_is_refused_cleanly(context):
    before = _datablock_counts()
    with pytest.raises(ShapEError) as err:
        _import(context, [])
    assert err.value.code == INVALID_PARAMS
    empty = MeshData(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ShapEError, match="no vertices"):
        _import(context, [empty])
    assert _datablock_counts() == before


def test_degenerate_triangles_are_dropped(context):
    data = uv_sphere()
    faces = np.concatenate([data.faces, [[0, 0, 1], [2, 3, 3], [4, 5, 4]]])
    (obj,) = _import(context, [MeshData(data.vertices, faces, data.colors)])
    assert len(obj.data.polygons) == data.face_count
    assert not obj.data.validate(verbose=False)


def test_refuses_to_run_off_the_main_thread(context):
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            import_meshes(context, [uv_sphere()], name="x", settings={})
        except ShapEError as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert len(errors) == 1 and errors[0].code == INTERNAL_ERROR
    assert "main thread" in errors[0].message


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a red chair", "Red chair"),
        ("  An   avocado\tarmchair.  ", "Avocado armchair"),
        ("/home/me/renders/my_lamp-v2.png", "My lamp v2"),
        ("C:\\Users\\me\\chair.JPG", "Chair"),
        ("a chair/table combo", "Chair/table combo"),
        ("", "Shap-E"),
        ("the", "The"),
        (
            "a highly detailed wooden rocking chair with a red cushion and carved armrests",
            "Highly detailed wooden rocking chair",
        ),
    ],
)
def test_object_names(given, expected):
    assert object_name_for(given) == expected


def test_object_name_fits_blender_name_limit():
    name = object_name_for("ü" * 100)
    assert len(name.encode("utf-8")) <= 63 and name.startswith("Ü")


def test_new_objects_are_selected_and_active_in_a_freshly_loaded_file():
    bpy.ops.wm.read_homefile(use_empty=True)
    (obj,) = import_meshes(bpy.context, [uv_sphere()], name="fresh", settings={"prompt": "x"})
    assert obj.select_get()
    assert bpy.context.view_layer.objects.active == obj
