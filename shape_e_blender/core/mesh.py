"""MeshData: the mesh that crosses from the worker to Blender, and its file format.

File format: an ``.npz`` with three arrays and no pickled objects, so it loads with
``allow_pickle=False``:

- ``vertices``: float32 (N, 3), Blender's frame (Z up, front looks from -Y), inside about [-1, 1]^3;
- ``faces``: int32 (M, 3), counter-clockwise seen from outside (normals point out);
- ``colors``: float32 (N, 3), LINEAR RGB in [0, 1], one per vertex.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_write


@dataclass(frozen=True, eq=False)
class MeshData:
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray

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

    @property
    def vertex_count(self) -> int:
        return len(self.vertices)

    @property
    def face_count(self) -> int:
        return len(self.faces)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vertices.min(axis=0), self.vertices.max(axis=0)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, vertices=self.vertices, faces=self.faces, colors=self.colors)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> MeshData:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(z["vertices"], z["faces"], z["colors"])

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
        with np.load(path, allow_pickle=False) as z:
            return cls(z["vertices"], z["faces"], z["colors"])
