"""MeshData: the mesh that crosses from the worker to Blender, and its file format.

File format: an ``.npz`` with three arrays and no pickled objects, so it loads with
``allow_pickle=False``:

- ``vertices``: float32 (N, 3), Blender's frame (Z up, front looks from -Y), inside about [-1, 1]^3;
- ``faces``: int32 (M, 3), counter-clockwise seen from outside (normals point out);
- ``colors``: float32 (N, 3), LINEAR RGB in [0, 1], one per vertex;
- with a texture (``texture_size``), also ``uvs``: float32 (M, 3, 2), each face corner's (u, v)
  in [0, 1], v up; and ``texture``: uint8 (S, S, 3), sRGB, row 0 at the top (as in a PNG). The
  texture travels inside the file, so a mesh sent inline from a remote worker keeps it.
"""

from __future__ import annotations

import base64
import io
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import JOB_FAILED, ShapEError, invalid
from .files import atomic_write

_ARRAYS = ("vertices", "faces", "colors")
_TEXTURE = ("uvs", "texture")
# What numpy and zipfile raise for bytes that are not a whole .npz: cut short, or not one at all.
_NOT_WHOLE = (EOFError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True, eq=False)
class MeshData:
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype=np.float32)
        f = np.ascontiguousarray(self.faces, dtype=np.int32)
        c = np.ascontiguousarray(self.colors, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"vertices must be (N, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"faces must be (M, 3), got {f.shape}")
        if c.shape != v.shape:
            raise ValueError(f"colors must match vertices {v.shape}, got {c.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError("faces index past the vertex array")
        if not (np.isfinite(v).all() and np.isfinite(c).all()):
            raise ValueError("vertices or colours hold NaN or infinite values")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        object.__setattr__(self, "colors", c)
        if (self.uvs is None) != (self.texture is None):
            raise ValueError("uvs and texture come together")
        if self.uvs is not None and self.texture is not None:
            uv = np.ascontiguousarray(self.uvs, dtype=np.float32)
            tex = np.ascontiguousarray(self.texture)
            if uv.shape != (len(f), 3, 2):
                raise ValueError(f"uvs must be ({len(f)}, 3, 2), got {uv.shape}")
            if not np.isfinite(uv).all():
                raise ValueError("uvs hold NaN or infinite values")
            if tex.dtype != np.uint8 or tex.ndim != 3 or tex.shape[2] != 3 or not tex.size:
                raise ValueError(f"texture must be uint8 (H, W, 3), got {tex.dtype} {tex.shape}")
            object.__setattr__(self, "uvs", uv)
            object.__setattr__(self, "texture", tex)

    @property
    def textured(self) -> bool:
        return self.texture is not None

    @property
    def vertex_count(self) -> int:
        return len(self.vertices)

    @property
    def face_count(self) -> int:
        return len(self.faces)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vertices.min(axis=0), self.vertices.max(axis=0)

    def to_bytes(self) -> bytes:
        arrays: dict[str, Any] = {
            "vertices": self.vertices,
            "faces": self.faces,
            "colors": self.colors,
        }
        if self.uvs is not None:
            arrays |= {"uvs": self.uvs, "texture": self.texture}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> MeshData:
        return cls._read(io.BytesIO(data))

    @classmethod
    def _read(cls, source: Any) -> MeshData:
        """The mesh in ``source``; ValueError saying what is wrong with it when it is not one."""
        try:
            z = np.load(source, allow_pickle=False)
        except (*_NOT_WHOLE, ValueError) as exc:
            # A file cut before its zip header is taken for a pickle by numpy: refused the same.
            raise ValueError("it is not a whole .npz file") from exc
        if isinstance(z, np.ndarray):  # a lone .npy
            raise ValueError("it is a single array, not a mesh's .npz file")
        with z:
            missing = [k for k in _ARRAYS if k not in z.files]
            if missing:
                raise ValueError(f"it has no {', '.join(missing)} array")
            try:
                arrays = {k: z[k] for k in (*_ARRAYS, *_TEXTURE) if k in z.files}
            except (*_NOT_WHOLE, ValueError) as exc:
                raise ValueError(f"its arrays are damaged ({exc})") from exc
        return cls(**arrays)

    def scaled_to(self, size: float) -> MeshData:
        """The mesh scaled about the origin so that its largest dimension is ``size`` metres
        (unchanged for size 0)."""
        factor = size_factor(self.vertices, size)
        if factor == 1.0:
            return self
        return replace(self, vertices=self.vertices * np.float32(factor))

    def to_base64(self) -> str:
        return base64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_base64(cls, text: str) -> MeshData:
        return cls.from_bytes(base64.b64decode(text))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically: a reader never sees half a file, even if the worker dies."""
        return atomic_write(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MeshData:
        """The mesh in the file ``path``; a ShapEError naming it when it cannot be read whole."""
        try:
            return cls._read(path)
        except FileNotFoundError:
            raise ShapEError(
                JOB_FAILED,
                f"the mesh file {path} is missing",
                "its job folder was moved or changed; generate again with the same seed",
            ) from None
        except OSError as exc:
            raise ShapEError(
                JOB_FAILED,
                f"the mesh file {path} cannot be read: {exc.strerror or exc}",
                "check that the jobs folder is readable, then import again",
            ) from exc
        except ValueError as exc:
            raise ShapEError(
                JOB_FAILED,
                f"the mesh file {path} is cut short or damaged: {exc}",
                "it was not written whole (a full disk, a worker killed while writing, a copy "
                "that stopped): generate again with the same seed, which gives the same shape",
            ) from exc


SIZE_HELP = "metres of the largest dimension (0: the model's native size, up to 2 units)"
SIZE_MAX = 10_000.0


def check_size(value: Any) -> float:
    """A ``size`` as given to a CLI or an operator: a number of metres, 0 for native."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid("size", f"{value!r} is not a number of metres", "e.g. 1.5, or 0 for native")
    if not 0 <= value <= SIZE_MAX:
        raise invalid(
            "size", f"{value:g} is outside 0..{SIZE_MAX:g}", "give the largest dimension in metres"
        )
    return float(value)


def size_factor(vertices: np.ndarray, size: float) -> float:
    """The uniform scale that makes the largest dimension of ``vertices``' bounding box ``size``
    metres: the one rule behind the operators' ``size``, the spec's and the CLI's ``--size``.
    1.0 for size 0 (the model's native size) or a mesh with no extent."""
    if size <= 0 or len(vertices) == 0:
        return 1.0
    largest = float((vertices.max(axis=0) - vertices.min(axis=0)).max())
    return size / largest if largest > 0 else 1.0
