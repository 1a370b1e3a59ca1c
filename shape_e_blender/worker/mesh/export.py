"""Mesh files for the CLI: glTF binary, PLY, OBJ and our own npz.

MeshData is in Blender's frame (Z up, front seen from -Y) with LINEAR vertex colours. Each format
gets what its readers expect:

- ``.glb``: glTF is +Y up, so (x, y, z) becomes (x, z, -y); Blender's glTF importer turns it back.
  COLOR_0 is linear by the glTF spec and is written as float32, unchanged. A textured mesh
  (``--texture``) embeds its texture as the material's base colour instead.
- ``.ply`` and ``.obj`` carry the vertex colours only, textured or not (neither embeds an image).
- ``.ply``: Z up as in Blender (Blender's PLY importer defaults to Z up, no conversion). Colours are
  8-bit, which readers take as sRGB, so they are converted linear -> sRGB and rounded.
- ``.obj``: Y up like glTF, the format's convention and what Blender's OBJ importer assumes by
  default (up Y, forward -Z, the same mapping as its own OBJ exporter). Colours follow the vertex
  (``v x y z r g b``, sRGB floats in 0..1, from the same 8-bit values as PLY); no material file.
- ``.npz``: MeshData's own file, loaded by ``MeshData.load``.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import INVALID_PARAMS, NO_SURFACE, ShapEError
from ...core.files import atomic_write
from ...core.mesh import MeshData

FORMATS = (".glb", ".ply", ".obj", ".npz")
GENERATOR = "shape_e_blender"

# glTF enums.
_FLOAT = 5126
_UINT32 = 5125
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_TRIANGLES = 4
_LINEAR = 9729
_LINEAR_MIPMAP_LINEAR = 9987


def export_mesh(mesh: MeshData, path: str | Path) -> Path:
    """Write ``mesh`` to ``path`` in the format named by its suffix; returns the path.

    The file appears atomically (core/files.py), so a reader never sees half of it.
    """
    path = Path(path)
    suffix = check_output(path)
    if mesh.face_count == 0:
        raise ShapEError(
            NO_SURFACE,
            f"the mesh for {path.name} is empty: nothing to export",
            "try another seed or prompt",
        )
    if suffix == ".npz":
        return mesh.save(path)
    writers: dict[str, Callable[[MeshData, str], bytes]] = {
        ".glb": glb_bytes,
        ".ply": ply_bytes,
        ".obj": obj_bytes,
    }
    return atomic_write(path, writers[suffix](mesh, path.stem))


def check_output(path: str | Path) -> str:
    """The output's format suffix; a name we cannot write is refused before any work starts."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ShapEError(
            INVALID_PARAMS,
            f"output: cannot write {path.name!r}: "
            + (f"unknown format {suffix!r}" if suffix else "the name has no format suffix"),
            f"end the output name with one of {', '.join(FORMATS)}, e.g. chair.glb",
            "output",
        )
    if path.is_dir():
        raise ShapEError(
            INVALID_PARAMS,
            f"output: {path} is a folder",
            f"name a file in it, e.g. {path / 'chair.glb'}",
            "output",
        )
    # The nearest folder that exists is where the missing ones would be made.
    parent = next(p for p in (path.absolute().parent, *path.absolute().parents) if p.exists())
    if not parent.is_dir():
        raise ShapEError(
            INVALID_PARAMS,
            f"output: {parent} is a file, so {path} cannot be written",
            "choose an output in a folder",
            "output",
        )
    # A file made and dropped there, rather than os.access: that says yes to root everywhere,
    # including /proc and /sys, where the job then ran to its end and failed on writing.
    # TemporaryFile leaves nothing behind (on Linux it has no name at all).
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise ShapEError(
            INVALID_PARAMS,
            f"output: {parent} cannot be written to ({err.strerror or err})",
            "choose an output in a writable folder",
            "output",
        ) from None
    return suffix


def variant_paths(output: str | Path, variants: int) -> list[Path]:
    """``out.glb`` for one variant; ``out_0.glb`` ... ``out_{N-1}.glb`` for N > 1."""
    output = Path(output)
    if variants < 1:
        raise ShapEError(
            INVALID_PARAMS, f"variants: {variants} is below 1", "ask for 1 to 16", "variants"
        )
    if variants == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(variants)]


def linear_to_srgb8(colors: np.ndarray) -> np.ndarray:
    """Linear RGB in 0..1 -> 8-bit sRGB, rounded to nearest (the IEC 61966-2-1 curve)."""
    c = np.clip(np.asarray(colors, dtype=np.float64), 0.0, 1.0)
    s = np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)
    return np.rint(s * 255.0).astype(np.uint8)


def z_up_to_y_up(xyz: np.ndarray) -> np.ndarray:
    """Blender (x, y, z) -> glTF/OBJ (x, z, -y): a rotation, so winding and normals stay valid."""
    return np.stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]], axis=1)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals; a vertex with no usable face gets +Z."""
    v = vertices.astype(np.float64)
    tri = v[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 x area
    n = np.zeros_like(v)
    flat = faces.ravel()
    for axis in range(3):
        n[:, axis] = np.bincount(flat, np.repeat(face_n[:, axis], 3), minlength=len(v))
    length = np.linalg.norm(n, axis=1)
    ok = length > 1e-20
    n[ok] /= length[ok, None]
    n[~ok] = (0.0, 0.0, 1.0)
    return n


def png_bytes(texture: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 sRGB texture as PNG bytes (the job folder's texture.png, the GLB's),
    marked sRGB (an ``sRGB`` chunk, perceptual intent) rather than left for readers to assume."""
    from PIL import Image, PngImagePlugin  # as trimesh below: only textured meshes need it

    info = PngImagePlugin.PngInfo()
    info.add(b"sRGB", b"\x00")
    buf = io.BytesIO()
    Image.fromarray(texture, "RGB").save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def glb_bytes(mesh: MeshData, name: str = "shape_e") -> bytes:
    """A glTF 2.0 binary with POSITION, NORMAL and uint32 indices, and either float32 linear
    COLOR_0 or, for a textured mesh, TEXCOORD_0 and the texture embedded as a PNG.

    Written here rather than through trimesh: trimesh 5.2 always stores COLOR_0 as 8-bit
    normalised values, and 8 bits of LINEAR colour lose the dark tones (the first step above
    black is already sRGB 13/255). float32 keeps the decoder's colours exactly.

    glTF holds one UV per vertex, so a textured mesh's vertices are split where its UV charts
    meet (the seams); the normals stay those of the welded mesh, so the seams do not show.
    A textured mesh carries no COLOR_0: glTF would multiply the texture by it.
    """
    normals = vertex_normals(mesh.vertices, mesh.faces)
    attributes: dict[str, np.ndarray]
    if mesh.uvs is not None and mesh.texture is not None:
        corner_vertex = mesh.faces.reshape(-1)
        corner_uv = mesh.uvs.reshape(-1, 2)
        keys = np.concatenate([corner_vertex[:, None].view(np.float32), corner_uv], axis=1)
        rows = np.ascontiguousarray(keys).view(np.dtype((np.void, 12))).ravel()
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        source = corner_vertex[first]
        uv = corner_uv[first]
        # glTF's texture coordinates start at the top left: v points down.
        attributes = {"TEXCOORD_0": np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1)}
        indices = inverse.reshape(-1).astype(np.uint32)
    else:
        source = np.arange(mesh.vertex_count)
        attributes = {"COLOR_0": np.clip(mesh.colors, 0.0, 1.0)}
        indices = mesh.faces.astype(np.uint32).ravel()
    positions = z_up_to_y_up(mesh.vertices[source]).astype(np.float32)
    arrays = {
        "POSITION": positions,
        "NORMAL": z_up_to_y_up(normals[source]).astype(np.float32),
        **{k: v.astype(np.float32) for k, v in attributes.items()},
    }

    blobs: list[bytes] = []
    views: list[dict[str, Any]] = []

    def view(data: bytes, target: int | None) -> int:
        offset = sum(len(b) for b in blobs)
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(data)})
        if target is not None:
            views[-1]["target"] = target
        blobs.append(data + b"\0" * (-len(data) % 4))  # every view starts 4-byte aligned
        return len(views) - 1

    accessors: list[dict[str, Any]] = []
    for key, array in arrays.items():
        accessor = {
            "bufferView": view(array.tobytes(), _ARRAY_BUFFER),
            "componentType": _FLOAT,
            "count": len(array),
            "type": f"VEC{array.shape[1]}",
        }
        if key == "POSITION":
            accessor["min"] = [float(x) for x in array.min(axis=0)]
            accessor["max"] = [float(x) for x in array.max(axis=0)]
        accessors.append(accessor)
    accessors.append(
        {
            "bufferView": view(indices.tobytes(), _ELEMENT_ARRAY_BUFFER),
            "componentType": _UINT32,
            "count": len(indices),
            "type": "SCALAR",
        }
    )
    # The base colour (or COLOR_0) shows as made on a white, rough, not metallic surface.
    pbr: dict[str, Any] = {"metallicFactor": 0.0, "roughnessFactor": 1.0}
    doc: dict[str, Any] = {}
    if mesh.texture is not None:
        image_view = view(png_bytes(mesh.texture), None)
        pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
        doc["images"] = [{"bufferView": image_view, "mimeType": "image/png"}]
        doc["samplers"] = [{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR}]
        doc["textures"] = [{"sampler": 0, "source": 0}]
    else:
        pbr["baseColorFactor"] = [1.0, 1.0, 1.0, 1.0]
    doc = {
        "asset": {"version": "2.0", "generator": GENERATOR},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [
            {
                "name": name,
                "primitives": [
                    {
                        "attributes": {k: i for i, k in enumerate(arrays)},
                        "indices": len(arrays),
                        "material": 0,
                        "mode": _TRIANGLES,
                    }
                ],
            }
        ],
        "materials": [
            {
                "name": f"{name}_{'texture' if mesh.texture is not None else 'vertex_colour'}",
                "pbrMetallicRoughness": pbr,
            }
        ],
        **doc,
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": sum(len(b) for b in blobs)}],
    }
    json_chunk = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    json_chunk += b" " * (-len(json_chunk) % 4)  # the spec pads JSON with spaces
    bin_chunk = b"".join(blobs)
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    return b"".join(
        [
            struct.pack("<4sII", b"glTF", 2, total),
            struct.pack("<I4s", len(json_chunk), b"JSON"),
            json_chunk,
            struct.pack("<I4s", len(bin_chunk), b"BIN\0"),
            bin_chunk,
        ]
    )


def _trimesh(mesh: MeshData, vertices: np.ndarray):
    import trimesh  # slow to import, and only the PLY and OBJ writers need it

    rgb = linear_to_srgb8(mesh.colors)
    rgba = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    # process=False: no merging or reordering, the file holds exactly our vertices and faces.
    return trimesh.Trimesh(vertices, mesh.faces, vertex_colors=rgba, process=False)


def ply_bytes(mesh: MeshData, name: str = "shape_e") -> bytes:
    """Binary little-endian PLY, Z up, uchar red/green/blue(/alpha) in sRGB."""
    from trimesh.exchange.ply import export_ply  # as in _trimesh

    del name  # PLY has no object name; the comment line carries the generator
    return export_ply(_trimesh(mesh, mesh.vertices), encoding="binary_little_endian")


def obj_bytes(mesh: MeshData, name: str = "shape_e") -> bytes:
    """Wavefront OBJ, Y up, ``v x y z r g b`` with sRGB colours; no material file."""
    from trimesh.exchange.obj import export_obj  # as in _trimesh

    text = export_obj(
        _trimesh(mesh, z_up_to_y_up(mesh.vertices)),
        include_normals=False,
        include_color=True,
        include_texture=False,
        header=f"{GENERATOR}: {name}",
    )
    return text.encode("utf-8")
