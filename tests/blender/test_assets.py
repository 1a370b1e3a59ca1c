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

from shape_e_blender.blender import assets, labels, materials, tasks
from shape_e_blender.blender.operators.assets import slerp
from shape_e_blender.core import jobdir
from shape_e_blender.core.mesh import MeshData
from tests.blender.images import disc_png
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


def test_the_three_generation_operators_take_the_asset_options():
    for op in (bpy.ops.shape_e.text_to_mesh, bpy.ops.shape_e.image_to_mesh,
               bpy.ops.shape_e.camera_to_mesh):  # fmt: skip
        props = {p.identifier: p for p in op.get_rna_type().properties}
        defaults = {n: props[n].default for n in ("faces", "texture_size", "size", "mark_asset")}
        assert defaults == {"faces": 0, "texture_size": 0, "size": 0.0, "mark_asset": False}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"texture_size": 100}, "texture_size"),
        ({"texture_size": 8192}, "texture_size"),
        ({"faces": 5}, "faces"),
        ({"texture_size": 256, "faces": 60_000}, "faces"),
        ({"size": -1.0}, "size"),
        ({"size": float("nan")}, "size"),
    ],
)
def test_bad_asset_options_are_refused_before_anything_starts(scene, text_model, options, field):
    """Refused with the field named, before the worker is asked: no object, no job folder."""
    jobs = Path(bpy.context.preferences.addons["shape_e_blender"].preferences.jobs_dir)
    before = set(jobs.iterdir())
    with pytest.raises(RuntimeError, match=rf"{field}: "):
        bpy.ops.shape_e.text_to_mesh(prompt="a chair", **FAST, **options)
    assert not scene.objects and set(jobs.iterdir()) == before


def test_image_to_mesh_makes_an_asset_ready_object(scene, addon, worker_image_model, tmp_path):
    addon.image_model = str(worker_image_model)
    image = disc_png(tmp_path / "orange_lamp.png")
    result = bpy.ops.shape_e.image_to_mesh(filepath=str(image), steps=4, grid_size=48, faces=500,
                                           texture_size=64, size=0.5, mark_asset=True)  # fmt: skip
    assert result == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    assert abs(len(obj.data.polygons) - 500) <= 25 and materials.UV_MAP in obj.data.uv_layers
    assert tuple(_image_node(obj).image.size) == (64, 64)
    bpy.context.view_layer.update()
    assert max(obj.dimensions) == pytest.approx(0.5, rel=1e-4)
    assert obj.asset_data.description == "Orange lamp"  # the image's name, read as words
    assert {t.name for t in obj.asset_data.tags} == {"shap-e", "orange", "lamp"}


def test_faces_above_the_mesh_keep_it_whole_with_a_warning(scene, text_model):
    obj = _generate(faces=1_000_000)
    full = len(obj.data.polygons)
    assert 0 < full < 1_000_000
    assert tasks.status.warnings == [
        f"{obj.name}: faces: the mesh has {full} faces, no more than the 1000000 asked, so it "
        "was kept whole (ask for fewer faces to decimate it)"
    ]


def _loop_points(obj: bpy.types.Object) -> np.ndarray:
    """Each face corner's vertex, in world space."""
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    corner = np.empty(len(obj.data.loops), np.int32)
    obj.data.loops.foreach_get("vertex_index", corner)
    matrix = np.array(obj.matrix_world, np.float64)
    points = co.reshape(-1, 3)[corner].astype(np.float64)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def test_blenders_gltf_export_carries_the_texture(scene, text_model, tmp_path):
    obj = _generate(**TEXTURED, size=1.5)
    obj.location = (0.5, -1.0, 0.25)
    bpy.context.view_layer.update()  # its matrix_world
    uvs = _loop_uvs(obj.data)
    original = np.concatenate([_loop_points(obj), uvs], axis=1)
    colors = _sample(_pixels(_image_node(obj).image), uvs)
    blend = tmp_path / "chair.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    out = run_blender_script(
        "tests.blender.children.gltf_roundtrip", str(blend), obj.name, str(tmp_path / "chair.glb")
    )
    assert out["exported"] == ["FINISHED"] and out["imported"] == ["FINISHED"]
    assert out["size"] == [128, 128] and out["colorspace"] == "sRGB"
    # Each face corner, found again by its place and UV, shows the same texture colour.
    corners = np.array(out["corners"])
    assert len(corners) == len(original)
    gaps = np.linalg.norm(corners[:, None, :5] - original[None, :, :], axis=2)
    match = gaps.argmin(axis=1)
    assert gaps.min(axis=1).max() < 1e-4 and gaps.min(axis=0).max() < 1e-4  # both ways
    assert np.abs(corners[:, 5:] - colors[match]).max() <= 1.0 / 255 + 1e-6


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


def test_remesh_decimates_a_decimated_object_again(scene, text_model):
    obj = _generate(grid_size=48, faces=800)
    assert abs(len(obj.data.polygons) - 800) <= 40
    assert bpy.ops.shape_e.remesh(object_name=obj.name, grid_size=64) == {"FINISHED"}
    settings = obj["shape_e"].to_dict()
    mesh_file = MeshData.load(jobdir.mesh_path(settings["job_dir"], 0))
    assert settings["grid_size"] == 64 and settings["faces"] == 800
    assert len(obj.data.polygons) == mesh_file.face_count and abs(mesh_file.face_count - 800) <= 40
    assert not obj.data.uv_layers and obj.data.color_attributes  # still vertex colours


def test_remesh_can_make_a_kept_variant_asset_ready_and_back(scene, text_model):
    """Variants made light and untextured; the one kept is re-meshed with a texture and
    decimated, then without the texture (a vertex-colour material again)."""
    obj = _generate(grid_size=48)
    dense = len(obj.data.polygons)
    assert bpy.ops.shape_e.remesh(object_name=obj.name, grid_size=48, faces=600,
                                  texture_size=64) == {"FINISHED"}  # fmt: skip
    settings = obj["shape_e"].to_dict()
    assert (settings["faces"], settings["texture_size"]) == (600, 64)
    assert abs(len(obj.data.polygons) - 600) <= 30 < dense - 600
    assert materials.UV_MAP in obj.data.uv_layers and tuple(_image_node(obj).image.size) == (64, 64)
    assert bpy.ops.shape_e.remesh(object_name=obj.name, grid_size=48, texture_size=0) == {
        "FINISHED"
    }
    assert obj["shape_e"]["faces"] == 600 and obj["shape_e"]["texture_size"] == 0
    assert abs(len(obj.data.polygons) - 600) <= 30 and not obj.data.uv_layers
    (material,) = obj.data.materials
    assert materials.texture_node(material) is None
    assert any(n.type == "VERTEX_COLOR" for n in material.node_tree.nodes)
    with pytest.raises(RuntimeError, match="texture_size: 100 is not a power of two"):
        bpy.ops.shape_e.remesh(object_name=obj.name, texture_size=100)
    assert bpy.ops.shape_e.remesh(object_name=obj.name, grid_size=48, faces=10**6) == {"FINISHED"}
    assert len(obj.data.polygons) == dense  # kept whole, and said so
    assert tasks.status.warnings == [
        f"{obj.name}: faces: the mesh has {dense} faces, no more than the 1000000 asked, so it "
        "was kept whole (ask for fewer faces to decimate it)"
    ]


def test_mark_asset_saves_it_into_the_library_with_tags_and_catalog(scene, text_model, tmp_path):
    addon = bpy.context.preferences.addons["shape_e_blender"].preferences
    library = tmp_path / "library"
    addon.asset_library, addon.asset_catalog = str(library), "Shap-E/Props"
    try:
        obj = _generate("a red wooden chair", seed=11, **TEXTURED)
        assert obj.asset_data is None
        assert bpy.ops.shape_e.mark_asset(object_name=obj.name) == {"FINISHED"}
        texture = _image_node(obj).image
        # This file's texture is still the job folder's file, not a copy packed in.
        assert texture.packed_file is None
        job = obj["shape_e"]["job_dir"]
        assert Path(bpy.path.abspath(texture.filepath)) == jobdir.texture_path(job, 0)
        data = obj.asset_data
        assert data.description == "a red wooden chair"
        assert {t.name for t in data.tags} == {"shap-e", "red", "wooden", "chair"}
        assert data["seed"] == 11 and data["model"] == str(text_model)
        saved = library / "red-wooden-chair.blend"
        assert obj["shape_e"]["asset_file"] == str(saved)
        # The UI's timer path (Blender renders previews in a job there): with no preview
        # rendering, it saves at once and stops.
        later = tmp_path / "later.blend"
        assert assets._save_later(obj.session_uid, later, deadline=0.0) is None
        with bpy.data.libraries.load(str(later), assets_only=True) as (source, _):
            assert source.objects == [obj.name]
        # Marked again: the same file, rewritten. Another asset of that name: a file of its own.
        assert bpy.ops.shape_e.mark_asset(object_name=obj.name) == {"FINISHED"}
        assert sorted(p.name for p in library.glob("*.blend")) == [saved.name]
        bpy.data.objects.remove(obj)
        other = _generate("a red wooden chair", seed=12, mark_asset=True)
        assert other.name == "Red wooden chair"
        assert other["shape_e"]["asset_file"] == str(library / "red-wooden-chair-2.blend")
    finally:
        addon.asset_library = ""
    bpy.ops.wm.read_homefile(use_empty=True)
    with bpy.data.libraries.load(str(saved), assets_only=True) as (source, target):
        assert source.objects == ["Red wooden chair"]
        target.objects = source.objects
    loaded = target.objects[0]
    assert loaded.asset_data["seed"] == 11
    assert {t.name for t in loaded.asset_data.tags} == {"shap-e", "red", "wooden", "chair"}
    catalogs = (library / assets.CATALOG_FILE).read_text()
    assert f"{loaded.asset_data.catalog_id}:Shap-E/Props:" in catalogs
    # Marking another one into the same catalog reuses it.
    assert assets.ensure_catalog(library, "Shap-E/Props") == loaded.asset_data.catalog_id
    # The library file holds its texture: it works once the job folder is gone.
    image = _image_node(loaded).image
    assert image.packed_file is not None and tuple(image.size) == (128, 128)
    if HAS_EGL:  # and the preview Blender rendered, which the Asset Browser shows
        pixels = np.array(loaded.preview.image_pixels_float[:], np.float32)
        alpha = pixels.reshape(-1, 4)[:, 3]
        assert 0.05 < (alpha > 0).mean() < 0.95
        # The README's picture of it, as saved in the library file.
        w, h = loaded.preview.image_size
        picture = bpy.data.images.new("asset-preview", w, h, alpha=True)
        picture.pixels.foreach_set(pixels)
        picture.filepath_raw = str(REPO / "out" / "asset-preview.png")
        picture.file_format = "PNG"
        (REPO / "out").mkdir(exist_ok=True)
        picture.save()
    with bpy.data.libraries.load(str(library / "red-wooden-chair-2.blend")) as (source, _):
        assert source.objects == ["Red wooden chair"]


def test_mark_asset_at_generation_and_errors(scene, text_model, tmp_path):
    obj = _generate("a blue vase", mark_asset=True)
    assert obj.asset_data is not None and "vase" in {t.name for t in obj.asset_data.tags}
    if HAS_EGL:  # Blender renders the preview (with OpenGL), in background mode too
        preview = obj.preview
        assert preview is not None and tuple(preview.image_size) == (128, 128)
        alpha = np.array(preview.image_pixels_float[:]).reshape(-1, 4)[:, 3]
        assert 0.05 < (alpha > 0).mean() < 0.95  # the object, on a transparent background
    plain = bpy.data.objects.new("Plain", bpy.data.meshes.new("Plain"))
    scene.collection.objects.link(plain)
    with pytest.raises(RuntimeError, match="object_name: 'Plain' was not made by Shap-E"):
        bpy.ops.shape_e.mark_asset(object_name="Plain")
    with pytest.raises(RuntimeError, match="object_name: there is no object 'Nope'"):
        bpy.ops.shape_e.mark_asset(object_name="Nope")


@pytest.mark.parametrize(
    ("library", "catalog", "field"),
    [
        ("{file}/library", "Shap-E", "asset_library: cannot save assets into"),
        ("//library", "Shap-E", "asset_library: '//library' is relative to the .blend file"),
        ("relative/library", "Shap-E", "asset_library: 'relative/library' is a relative path"),
        ("{tmp}/library", "Shap-E:Props", "asset_catalog: 'Shap-E:Props' holds a ':'"),
    ],
)
def test_an_asset_that_cannot_be_saved_is_refused_before_anything_changes(
    scene, text_model, tmp_path, library, catalog, field
):
    """Mark as Asset leaves the object unmarked; a generation that would mark it does not start."""
    (tmp_path / "file").write_text("not a folder")
    addon = bpy.context.preferences.addons["shape_e_blender"].preferences
    obj = _generate("a blue vase")
    addon.asset_library = library.format(file=tmp_path / "file", tmp=tmp_path)
    addon.asset_catalog = catalog
    try:
        with pytest.raises(RuntimeError, match=field):
            bpy.ops.shape_e.mark_asset(object_name=obj.name)
        assert obj.asset_data is None and "asset_file" not in obj["shape_e"]
        with pytest.raises(RuntimeError, match=field):
            _generate("a red vase", mark_asset=True)
        assert [o.name for o in scene.objects] == [obj.name]
    finally:
        addon.asset_library, addon.asset_catalog = "", "Shap-E"


ASSET_SPEC = """
[defaults]
steps = 4
grid_size = 48

[[object]]
name = "Crate"
prompt = "a wooden crate"
faces = 600
texture_size = 64
size = 0.9
mark_asset = true
"""


def test_a_scene_spec_takes_the_asset_keys(scene, text_model, tmp_path):
    spec = tmp_path / "props.toml"
    spec.write_text(ASSET_SPEC, encoding="utf-8")
    addon = bpy.context.preferences.addons["shape_e_blender"].preferences
    jobs = Path(addon.jobs_dir)
    (tmp_path / "file").write_text("not a folder")
    addon.asset_library = str(tmp_path / "file" / "library")
    before = set(jobs.iterdir())
    try:  # an asset library that cannot take the asset: refused before any job
        with pytest.raises(RuntimeError, match="asset_library: cannot save assets into"):
            bpy.ops.shape_e.build_scene(filepath=str(spec))
        assert not scene.objects and set(jobs.iterdir()) == before
        addon.asset_library = str(tmp_path / "library")
        assert bpy.ops.shape_e.build_scene(filepath=str(spec)) == {"FINISHED"}
    finally:
        addon.asset_library = ""
    (obj,) = scene.objects
    assert abs(len(obj.data.polygons) - 600) <= 30 and materials.UV_MAP in obj.data.uv_layers
    assert tuple(_image_node(obj).image.size) == (64, 64)
    bpy.context.view_layer.update()
    assert max(obj.dimensions) == pytest.approx(0.9, rel=1e-4)
    assert obj.asset_data.description == "a wooden crate"
    saved = tmp_path / "library" / "crate.blend"
    with bpy.data.libraries.load(str(saved), assets_only=True) as (source, _):
        assert source.objects == ["Crate"]


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


def test_keep_variant_finds_the_other_variants_of_a_remeshed_one(scene, text_model):
    """Generate variants, re-mesh the one you like finer, keep it: the others go."""
    _generate("a lamp", variants=3)
    assert bpy.ops.shape_e.remesh(object_name="Lamp_0", grid_size=40) == {"FINISHED"}
    assert bpy.ops.shape_e.remesh(object_name="Lamp_1", grid_size=40) == {"FINISHED"}
    assert bpy.ops.shape_e.keep_variant(object_name="Lamp_1") == {"FINISHED"}
    assert [o.name for o in scene.objects] == ["Lamp_1"]


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
    assert tuple(mid.scale) == pytest.approx((1.0, 1.0, 1.0))
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
            "--engine", "CYCLES", "--resolution", "288", "--width", "960", "--azimuth", "12",
            "--samples", "16",
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
    with pytest.raises(RuntimeError, match="object_b: is 'Chair' again"):
        bpy.ops.shape_e.blend_shapes(object_a=a.name, object_b=a.name)
    for bad, field in (({"factor": 1.5}, "factor"), ({"count": 0}, "count"),
                       ({"count": 17}, "count"), ({"object_b": "Nope"}, "object_b")):  # fmt: skip
        with pytest.raises(RuntimeError, match=rf"{field}: "):
            bpy.ops.shape_e.blend_shapes(**({"object_a": a.name, "object_b": b.name} | bad))
    assert sorted(o.name for o in scene.objects) == ["Chair", "Table"]


def test_blend_shapes_scales_the_in_between_between_its_ends(scene, text_model):
    a = _generate("a chair", seed=1, size=1.0)
    b = _generate("a table", seed=2)
    b.location, b.scale = (4.0, 0.0, 0.0), (3.0, 3.0, 3.0)
    result = bpy.ops.shape_e.blend_shapes(object_a=a.name, object_b=b.name, factor=0.25)
    assert result == {"FINISHED"}
    mid = bpy.context.view_layer.objects.active
    assert tuple(mid.scale) == pytest.approx(tuple(0.75 * a.scale[0] + 0.25 * 3.0 for _ in "xyz"))
