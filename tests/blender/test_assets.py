"""Asset workflows end to end: real bpy, the real worker subprocess, tiny random Shap-E models.

A texture (UV map, Image Texture -> Base Color, the job folder's PNG) that survives Blender's own
glTF export; decimation and real-world size from the operators; re-mesh of a textured object;
marking as an asset and saving into a library folder with a catalog; keeping one variant; and
blending two objects' latents.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
import pytest
from mathutils import Vector

from shape_e_blender.blender import assets, labels, materials
from shape_e_blender.blender.operators.assets import slerp
from shape_e_blender.core import jobdir
from shape_e_blender.core.mesh import MeshData
from tests.support import FAST, HAS_EGL, REPO, run_blender_script

TEXTURED = {"steps": 4, "grid_size": 48, "faces": 1500, "texture_size": 128}


def _generate(prompt: str = "a red chair", **kwargs) -> bpy.types.Object:
    options = FAST | kwargs
    assert bpy.ops.shape_e.text_to_mesh(prompt=prompt, **options) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def _image_node(obj: bpy.types.Object) -> bpy.types.ShaderNodeTexImage:
    material = obj.data.materials[0]
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    links = bsdf.inputs["Base Color"].links
    assert len(links) == 1 and links[0].from_node.type == "TEX_IMAGE"
    return links[0].from_node


def _pixels(image: bpy.types.Image) -> np.ndarray:
    """An image's pixels as rows from the top, RGB floats as stored (sRGB for a PNG)."""
    w, h = image.size
    out = np.empty(w * h * 4, np.float32)
    image.pixels.foreach_get(out)
    return out.reshape(h, w, 4)[::-1, :, :3]


def _loop_uvs(mesh: bpy.types.Mesh) -> np.ndarray:
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers[materials.UV_MAP].uv.foreach_get("vector", uv)
    return uv.reshape(-1, 2)


def _sample(pixels: np.ndarray, uv: np.ndarray) -> np.ndarray:
    h, w = pixels.shape[:2]
    cols = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    rows = np.clip(((1 - uv[:, 1]) * h).astype(int), 0, h - 1)
    return pixels[rows, cols]


def test_a_textured_decimated_sized_object(scene, text_model):
    obj = _generate(**TEXTURED, size=1.5)
    settings = obj["shape_e"].to_dict()
    job = Path(settings["job_dir"])
    mesh_file = MeshData.load(jobdir.mesh_path(job, 0))
    assert mesh_file.texture is not None and abs(mesh_file.face_count - 1500) <= 75
    assert len(obj.data.polygons) == mesh_file.face_count
    assert materials.UV_MAP in obj.data.uv_layers and not obj.data.color_attributes
    # The UVs are the worker's, corner for corner.
    np.testing.assert_allclose(_loop_uvs(obj.data), mesh_file.uvs.reshape(-1, 2), atol=1e-6)
    node = _image_node(obj)
    assert Path(bpy.path.abspath(node.image.filepath)) == jobdir.texture_path(job, 0)
    assert tuple(node.image.size) == (128, 128)
    assert node.image.colorspace_settings.name == "sRGB"
    np.testing.assert_allclose(_pixels(node.image), mesh_file.texture / 255.0, atol=1e-6)
    # size: the largest dimension is 1.5 m, as the object's scale (the mesh keeps its own).
    assert max(obj.dimensions) == pytest.approx(1.5, rel=1e-4)
    assert obj.scale[0] == pytest.approx(obj.scale[2]) and obj.scale[0] != 1.0
    assert settings["faces"] == 1500 and settings["texture_size"] == 128


def test_blenders_gltf_export_carries_the_texture(scene, text_model, tmp_path):
    obj = _generate(**TEXTURED)
    original = _sample(_pixels(_image_node(obj).image), _loop_uvs(obj.data))
    blend = tmp_path / "chair.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    out = run_blender_script(
        "tests.blender.children.gltf_roundtrip", str(blend), obj.name, str(tmp_path / "chair.glb")
    )
    assert out["exported"] == ["FINISHED"] and out["imported"] == ["FINISHED"]
    assert out["size"] == [128, 128]
    # The colour at each corner's UV, read back through the re-imported mesh, is the same.
    again = np.array(out["colors"])
    assert len(again) == len(original)
    assert np.abs(again - np.sort(original, axis=0)).max() <= 1.0 / 255 + 1e-6


def _loop_uvs_any(mesh: bpy.types.Mesh) -> np.ndarray:
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers.active.uv.foreach_get("vector", uv)
    return uv.reshape(-1, 2)


def test_remesh_bakes_the_texture_again(scene, text_model):
    obj = _generate(**TEXTURED)
    material = obj.data.materials[0]
    old_image = _image_node(obj).image
    assert bpy.ops.shape_e.remesh(grid_size=64) == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    assert list(obj.data.materials) == [material]  # the same material, a new texture in it
    image = _image_node(obj).image
    assert image != old_image
    settings = obj["shape_e"].to_dict()
    assert settings["grid_size"] == 64 and settings["texture_size"] == 128
    assert Path(bpy.path.abspath(image.filepath)) == jobdir.texture_path(settings["job_dir"], 0)
    assert materials.UV_MAP in obj.data.uv_layers


def test_mark_asset_saves_it_into_the_library_with_tags_and_catalog(scene, text_model, tmp_path):
    addon = bpy.context.preferences.addons["shape_e_blender"].preferences
    addon.asset_library, addon.asset_catalog = str(tmp_path / "library"), "Shap-E/Props"
    try:
        obj = _generate("a red wooden chair", seed=11)
        assert obj.asset_data is None
        assert bpy.ops.shape_e.mark_asset(object_name=obj.name) == {"FINISHED"}
    finally:
        addon.asset_library = ""
    data = obj.asset_data
    assert data.description.startswith("a red wooden chair")
    assert {t.name for t in data.tags} == {"shap-e", "red", "wooden", "chair"}
    assert data["seed"] == 11 and data["model"] == str(text_model)
    saved = tmp_path / "library" / "red-wooden-chair.blend"
    with bpy.data.libraries.load(str(saved), assets_only=True) as (source, target):
        assert source.objects == [obj.name]
        target.objects = source.objects
    loaded = target.objects[0]
    assert {t.name for t in loaded.asset_data.tags} == {"shap-e", "red", "wooden", "chair"}
    catalogs = (tmp_path / "library" / assets.CATALOG_FILE).read_text()
    assert f"{loaded.asset_data.catalog_id}:Shap-E/Props:" in catalogs
    # Marking another one into the same catalog reuses it.
    assert assets.ensure_catalog(tmp_path / "library", "Shap-E/Props") == data.catalog_id


def test_mark_asset_at_generation_and_errors(scene, text_model):
    obj = _generate("a blue vase", mark_asset=True)
    assert obj.asset_data is not None and "vase" in {t.name for t in obj.asset_data.tags}
    if HAS_EGL:  # Blender renders the preview (with OpenGL), in background mode too
        preview = obj.preview
        assert preview is not None and tuple(preview.image_size) == (128, 128)
        alpha = np.array(preview.image_pixels_float[:]).reshape(-1, 4)[:, 3]
        assert 0.05 < (alpha > 0).mean() < 0.95  # the object, on a transparent background
    plain = bpy.data.objects.new("Plain", bpy.data.meshes.new("Plain"))
    scene.collection.objects.link(plain)
    with pytest.raises(RuntimeError, match="object_name"):
        bpy.ops.shape_e.mark_asset(object_name="Plain")


def test_variants_are_labelled_with_their_number_and_seed_in_the_viewport(scene, text_model):
    """The overlay's labels (labels.draw turns them into text; module mode draws no region)."""
    _generate("a lamp", variants=3, seed=40)
    shown = labels.labels(bpy.context)
    assert sorted(text for text, _ in shown) == ["0 · seed 40", "1 · seed 41", "2 · seed 42"]
    for text, anchor in shown:  # under the middle of each one's front bottom edge
        obj = bpy.data.objects[f"Lamp_{text[0]}"]
        corners = np.array([obj.matrix_world @ Vector(c) for c in obj.bound_box])
        assert anchor.x == pytest.approx(corners[:, 0].mean(), abs=1e-5)
        assert (anchor.y, anchor.z) == pytest.approx((corners[:, 1].min(), corners[:, 2].min()))
    assert labels._handle is not None  # the add-on registered the overlay
    labels.draw()  # no region here: it draws nothing, and does not fail
    bpy.data.objects["Lamp_1"].hide_set(True)
    assert len(labels.labels(bpy.context)) == 2  # hidden variants are not labelled
    _generate("a stool")
    assert len(labels.labels(bpy.context)) == 2  # nor is a job of one


def test_keep_variant_deletes_the_others_in_one_undo_step(scene, text_model):
    _generate("a lamp", variants=3)
    names = sorted(o.name for o in scene.objects)
    assert names == ["Lamp_0", "Lamp_1", "Lamp_2"]
    assert bpy.ops.shape_e.keep_variant(object_name="Lamp_1") == {"FINISHED"}
    assert [o.name for o in scene.objects] == ["Lamp_1"]
    bpy.ops.ed.undo()
    assert sorted(o.name for o in bpy.context.scene.objects) == names


def test_blend_shapes_decodes_the_arc_between_two_latents(scene, text_model):
    a = _generate("a chair", seed=1)
    a.location = (0.0, 0.0, 0.0)
    b = _generate("a table", seed=2)
    b.location = (4.0, 0.0, 0.0)
    la = np.load(a["shape_e"]["latent"])
    lb = np.load(b["shape_e"]["latent"])
    result = bpy.ops.shape_e.blend_shapes(object_a=a.name, object_b=b.name, factor=0.25)
    assert result == {"FINISHED"}
    mid = bpy.context.view_layer.objects.active
    assert mid.location[0] == pytest.approx(1.0)
    saved = np.load(jobdir.latent_path(mid["shape_e"]["job_dir"], 0))
    np.testing.assert_allclose(saved, slerp(la, lb, 0.25), atol=1e-6)
    assert 0.9 < np.linalg.norm(saved) / np.linalg.norm(la) < 1.1  # the arc keeps the norm
    assert bpy.ops.shape_e.blend_shapes(object_a=a.name, object_b=b.name, count=3) == {"FINISHED"}
    steps = sorted(bpy.context.selected_objects, key=lambda o: o.location[0])
    assert [round(o.location[0], 4) for o in steps] == [1.0, 2.0, 3.0]
    row = [a, *steps, b]
    meshes = [jobdir.mesh_path(o["shape_e"]["job_dir"], o["shape_e"]["variant"]) for o in row]
    # A re-mesh of an in-between finds its own latent.
    assert bpy.ops.shape_e.remesh(object_name=steps[0].name, grid_size=40) == {"FINISHED"}
    if HAS_EGL:  # the README's picture: A, three in-betweens, B
        result = run_blender_script(
            "tests.blender.children.showcase", *map(str, meshes), "-o",
            str(REPO / "out" / "blend-shapes.png"), "--name", "a chair to a table",
            "--engine", "CYCLES", "--resolution", "384", "--samples", "16",
        )  # fmt: skip
        assert result["objects"] == [f"Chair to a table_{i}" for i in range(5)]


def test_blend_shapes_refuses_objects_of_two_models(scene, text_model):
    a = _generate("a chair", seed=1)
    b = _generate("a table", seed=2)
    b["shape_e"]["model"] = "openai/another"
    with pytest.raises(RuntimeError, match=r"object_b.*same model"):
        bpy.ops.shape_e.blend_shapes(object_a=a.name, object_b=b.name)
    with pytest.raises(RuntimeError, match="object_a"):
        bpy.ops.shape_e.blend_shapes(object_a="", object_b=b.name)
