"""export_mesh: each format read back by a plain parser and by trimesh (Blender's importers read
them in tests/blender/test_export_import.py, on every Blender of the matrix)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trimesh

from shape_e_blender.core.errors import INVALID_PARAMS, ShapEError
from shape_e_blender.core.mesh import MeshData
from shape_e_blender.worker.mesh.export import (
    FORMATS,
    export_mesh,
    linear_to_srgb8,
    png_bytes,
    variant_paths,
    z_up_to_y_up,
)
from tests.shapes import corner_box, outward

REPO = Path(__file__).resolve().parents[3]


def _srgb_to_linear(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    return np.where(s <= 0.04045, s / 12.92, ((s + 0.055) / 1.055) ** 2.4)


# ---- a minimal GLB reader: header, JSON chunk, BIN chunk, accessors --------------------------

_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32}
_COMPONENTS[5126] = np.float32
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _read_glb(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_len, json_kind = struct.unpack_from("<I4s", data, 12)
    assert json_kind == b"JSON" and json_len % 4 == 0
    doc = json.loads(data[20 : 20 + json_len])
    bin_at = 20 + json_len
    bin_len, bin_kind = struct.unpack_from("<I4s", data, bin_at)
    assert bin_kind == b"BIN\0"
    binary = data[bin_at + 8 : bin_at + 8 + bin_len]

    def accessor(i: int) -> np.ndarray:
        acc = doc["accessors"][i]
        view = doc["bufferViews"][acc["bufferView"]]
        dtype = np.dtype(_COMPONENTS[acc["componentType"]])
        width = _WIDTH[acc["type"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        arr = np.frombuffer(binary, dtype, acc["count"] * width, start)
        return arr.reshape(acc["count"], width) if width > 1 else arr

    prim = doc["meshes"][0]["primitives"][0]
    arrays = {name: accessor(i) for name, i in prim["attributes"].items()}
    arrays["indices"] = accessor(prim["indices"])
    return doc, arrays


def test_glb_structure_frame_and_linear_float_colours(tmp_path):
    mesh = corner_box()
    path = export_mesh(mesh, tmp_path / "box.glb")
    doc, arrays = _read_glb(path)

    v = mesh.vertices
    np.testing.assert_array_equal(arrays["POSITION"], np.stack([v[:, 0], v[:, 2], -v[:, 1]], 1))
    prim = doc["meshes"][0]["primitives"][0]
    color_acc = doc["accessors"][prim["attributes"]["COLOR_0"]]
    assert color_acc["componentType"] == 5126 and color_acc["type"] in ("VEC3", "VEC4")
    np.testing.assert_array_equal(arrays["COLOR_0"][:, :3], mesh.colors)  # linear, bit for bit
    np.testing.assert_array_equal(arrays["indices"].reshape(-1, 3), mesh.faces)
    np.testing.assert_allclose(np.linalg.norm(arrays["NORMAL"], axis=1), 1.0, atol=1e-6)
    # The tall axis is glTF's up (+Y), and the winding still faces outwards after the rotation.
    extent = arrays["POSITION"].max(0) - arrays["POSITION"].min(0)
    assert extent.argmax() == 1
    assert outward(arrays["POSITION"].astype(np.float64), arrays["indices"].reshape(-1, 3))
    assert "material" in prim and doc["asset"]["version"] == "2.0"


def _node_modules() -> Path:
    env = os.environ.get("SHAPE_E_NODE_MODULES")
    return Path(env) if env else REPO / ".cache" / "node" / "node_modules"


def khronos_validate(path: Path) -> None:
    """The Khronos glTF validator's verdict on ``path``: no error and no warning."""
    node = shutil.which("node")
    module = _node_modules() / "gltf-validator"
    if node is None:
        pytest.skip("node is not installed: the Khronos glTF validator runs on node")
    if not (module / "package.json").exists():
        pytest.skip(f"gltf-validator is not installed at {module} (python build.py setup)")
    script = (
        "const v = require(process.argv[1]); const fs = require('fs');"
        "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])))"
        ".then(r => console.log(JSON.stringify(r)))"
        ".catch(e => { console.error(e); process.exit(2); });"
    )
    proc = subprocess.run(
        [node, "-e", script, str(module), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    issues = json.loads(proc.stdout)["issues"]
    assert issues["numErrors"] == 0, issues["messages"]
    assert issues["numWarnings"] == 0, issues["messages"]


def test_glb_passes_the_khronos_validator(tmp_path):
    khronos_validate(export_mesh(corner_box(), tmp_path / "box.glb"))


def _textured_box() -> MeshData:
    """corner_box with a 4x4 texture: each face corner's UV picks a texel of its own colour."""
    box = corner_box()
    texture = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    rng = np.random.default_rng(0)
    uvs = (rng.integers(0, 4, (box.face_count, 3, 2)) + 0.5) / 4.0
    return MeshData(box.vertices, box.faces, box.colors, uvs=uvs, texture=texture)


def test_a_textured_glb_embeds_its_texture_and_splits_only_at_seams(tmp_path):
    mesh = _textured_box()
    path = export_mesh(mesh, tmp_path / "box.glb")
    khronos_validate(path)
    doc, arrays = _read_glb(path)
    assert "COLOR_0" not in arrays  # glTF would multiply the texture by it
    material = doc["materials"][0]["pbrMetallicRoughness"]
    assert material["baseColorTexture"]["index"] == 0
    assert doc["images"][0]["mimeType"] == "image/png"
    faces = arrays["indices"].reshape(-1, 3)
    # Each corner keeps its position and its UV (glTF's v points down).
    np.testing.assert_array_equal(
        arrays["POSITION"][faces],
        z_up_to_y_up(mesh.vertices.reshape(-1, 3)[mesh.faces.reshape(-1)]).reshape(-1, 3, 3),
    )
    uv = arrays["TEXCOORD_0"][faces]
    np.testing.assert_allclose(uv[..., 0], mesh.uvs[..., 0])
    np.testing.assert_allclose(uv[..., 1], 1.0 - mesh.uvs[..., 1])
    corner_keys = {
        (int(v), *map(float, t))
        for v, t in zip(mesh.faces.reshape(-1), mesh.uvs.reshape(-1, 2), strict=True)
    }
    assert len(arrays["POSITION"]) == len(corner_keys)  # one vertex per (vertex, uv) pair
    # trimesh reads the texture back: the colour at each vertex is its texel's.
    scene = trimesh.load(path)
    back = next(iter(scene.geometry.values()))
    image = np.asarray(back.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(image, mesh.texture)


def test_the_texture_png_is_marked_srgb() -> None:
    """An sRGB chunk (perceptual intent) before the pixels: glTF's base colour and Blender's
    Image Texture read the file as sRGB, and the file says so."""
    data = png_bytes(_textured_box().texture)
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    names = [name for name, _ in chunks]
    assert (b"sRGB", b"\x00") in chunks and names.index(b"sRGB") < names.index(b"IDAT")
    assert b"gAMA" not in names and b"iCCP" not in names  # nothing that says otherwise


def test_ply_binary_z_up_with_srgb_bytes(tmp_path):
    mesh = corner_box()
    path = export_mesh(mesh, tmp_path / "box.ply")
    header = path.read_bytes().split(b"end_header\n")[0].decode("ascii")
    assert "format binary_little_endian 1.0" in header
    for channel in ("red", "green", "blue"):
        assert f"property uchar {channel}" in header

    back = trimesh.load(path, process=False)
    np.testing.assert_array_equal(back.vertices.astype(np.float32), mesh.vertices)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_array_equal(back.visual.vertex_colors[:, :3], linear_to_srgb8(mesh.colors))


def test_obj_y_up_with_srgb_float_colours(tmp_path):
    mesh = corner_box()
    path = export_mesh(mesh, tmp_path / "box.obj")
    assert not list(tmp_path.glob("*.mtl"))
    rows = [line.split()[1:] for line in path.read_text().splitlines() if line.startswith("v ")]
    values = np.array(rows, dtype=np.float64)
    assert values.shape == (8, 6)
    v = mesh.vertices.astype(np.float64)
    np.testing.assert_allclose(values[:, :3], np.stack([v[:, 0], v[:, 2], -v[:, 1]], 1), atol=1e-7)
    np.testing.assert_allclose(values[:, 3:], linear_to_srgb8(mesh.colors) / 255.0, atol=1e-7)

    back = trimesh.load(path, process=False)
    np.testing.assert_array_equal(back.faces, mesh.faces)


def test_npz_round_trip(tmp_path):
    mesh = corner_box()
    back = MeshData.load(export_mesh(mesh, tmp_path / "box.npz"))
    np.testing.assert_array_equal(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.colors, mesh.colors)


def test_suffix_is_case_insensitive_and_folders_are_made(tmp_path):
    path = export_mesh(corner_box(), tmp_path / "a" / "b" / "BOX.GLB")
    assert path.exists() and _read_glb(path)[1]["POSITION"].shape == (8, 3)
    assert not list(path.parent.glob("*.part"))


@pytest.mark.parametrize("name", ["box.stl", "box", "box.glb.txt"])
def test_unknown_format_names_the_output_field(tmp_path, name):
    with pytest.raises(ShapEError) as err:
        export_mesh(corner_box(), tmp_path / name)
    assert err.value.code == INVALID_PARAMS and err.value.field == "output"
    assert all(fmt in err.value.hint for fmt in FORMATS)
    assert not list(tmp_path.iterdir())


def test_empty_mesh_is_refused(tmp_path):
    empty = MeshData(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ShapEError, match="empty"):
        export_mesh(empty, tmp_path / "x.glb")


def test_linear_to_srgb8_rounds_to_nearest():
    out = linear_to_srgb8(np.array([0.0, 1.0, 0.5, 0.0031308, 2.0, -1.0]))
    # 0.5 linear is sRGB 187.52: rounding gives 188 where truncation would give 187.
    np.testing.assert_array_equal(out, [0, 255, 188, 10, 255, 0])


def test_variant_paths(tmp_path):
    out = tmp_path / "dir" / "chair.glb"
    assert variant_paths(out, 1) == [out]
    assert variant_paths(str(out), 3) == [
        out.with_name("chair_0.glb"),
        out.with_name("chair_1.glb"),
        out.with_name("chair_2.glb"),
    ]
    with pytest.raises(ShapEError) as err:
        variant_paths(out, 0)
    assert err.value.field == "variants"


def test_an_output_that_cannot_be_written_is_refused_before_the_job(tmp_path):
    """The job used to run for minutes and end in an OSError traceback (and a .part file)."""
    from shape_e_blender.core.errors import ShapEError
    from shape_e_blender.worker.mesh.export import check_output

    (tmp_path / "chair.glb").mkdir()
    (tmp_path / "notes.txt").write_text("a file")
    for output, says in (
        (tmp_path / "chair.glb", "is a folder"),
        (tmp_path / "notes.txt" / "chair.glb", "notes.txt is a file"),
        (tmp_path / "notes.txt" / "deeper" / "chair.glb", "notes.txt is a file"),
    ):
        with pytest.raises(ShapEError) as info:
            check_output(output)
        assert info.value.field == "output" and says in info.value.message, output
    assert check_output(tmp_path / "new" / "folder" / "chair.glb") == ".glb"  # made when written
    assert list(tmp_path.rglob("*.part")) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_in_a_folder_that_takes_no_files_is_refused_even_for_root(tmp_path):
    """/proc lets root pass os.access(W_OK) yet takes no new file: tried, not asked."""
    from shape_e_blender.core.errors import ShapEError
    from shape_e_blender.worker.mesh.export import check_output

    with pytest.raises(ShapEError) as info:
        check_output("/proc/chair.glb")
    assert info.value.field == "output" and "/proc cannot be written to" in info.value.message
    assert check_output(tmp_path / "chair.glb") == ".glb"
    assert list(tmp_path.iterdir()) == []  # the trial file is gone
