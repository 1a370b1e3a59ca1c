"""The worker's answer to ``generate``: a JobResult with one MeshEntry per variant.

The same object is the protocol's result and the job folder's ``result.json`` (without the inline
meshes). It is parsed once, where it crosses into a client (``JobResult.from_dict``); nothing
downstream looks at its dict keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

from .errors import JOB_FAILED, ShapEError
from .mesh import MeshData

_UPDATE_HINT = "update the worker environment so that it matches the add-on"


@dataclass(frozen=True)
class MeshEntry:
    """One variant of a result: its mesh file (and latent), or the error that left it out."""

    variant: int
    seed: int | None = None  # None: decoded from a latent file, which holds no seed
    path: str | None = None  # the mesh.npz; None when ``error`` is set
    latent: str | None = None  # the saved latent.npy (not for re-decoded latents)
    vertices: int = 0
    faces: int = 0
    bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    npz_b64: str | None = None  # the mesh itself, when the request asked for inline results
    latent_b64: str | None = None  # and its latent.npy's bytes (a remote worker's re-mesh input)
    error: ShapEError | None = None  # e.g. no surface at this seed
    warnings: tuple[str, ...] = ()  # made, but not quite as asked (faces: kept whole)

    @property
    def made(self) -> bool:
        return self.error is None

    def load(self) -> MeshData:
        """The mesh: inline when the worker sent it inline, else from its file (whose errors
        name it: MeshData.load)."""
        if self.npz_b64:
            try:
                return MeshData.from_base64(self.npz_b64)
            except ValueError as exc:  # binascii.Error is one too
                raise ShapEError(
                    JOB_FAILED,
                    f"the worker's inline mesh of variant {self.variant} cannot be read: {exc}",
                    "generate again; if it happens again, " + _UPDATE_HINT,
                ) from exc
        if self.path is None:
            raise _malformed(f"variant {self.variant} names no mesh file")
        return MeshData.load(self.path)

    def skipped_error(self) -> ShapEError:
        """This variant's error, saying which variant (and seed) it is."""
        err = self.error or ShapEError(JOB_FAILED, "no mesh", "")
        which = f"variant {self.variant}" + (
            f" (seed {self.seed})" if self.seed is not None else ""
        )
        return ShapEError(err.code, f"{which}: {err.message}", err.hint, err.field)

    def to_dict(self, *, inline: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"variant": self.variant}
        if self.seed is not None:
            out["seed"] = self.seed
        if self.error is not None:
            out["error"] = self.error.to_json()
            return out
        out.update(path=self.path, vertices=self.vertices, faces=self.faces)
        if self.bounds is not None:
            out["bounds"] = [list(self.bounds[0]), list(self.bounds[1])]
        if self.latent is not None:
            out["latent"] = self.latent
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if inline and self.npz_b64:
            out["npz_b64"] = self.npz_b64
        if inline and self.latent_b64:
            out["latent_b64"] = self.latent_b64
        return out

    @classmethod
    def from_dict(cls, obj: Any, index: int) -> MeshEntry:
        """Parse one entry (``index`` is its place in the list, the variant when it names none)."""
        if not isinstance(obj, dict):
            raise _malformed(f"mesh entry {index} is not an object")
        variant = obj.get("variant", index)
        if not is_int(variant) or variant < 0:
            raise _malformed(f"mesh entry {index} has no variant number")
        seed = obj.get("seed")
        base = cls(variant=variant, seed=seed if is_int(seed) else None)
        if "error" in obj:
            return replace(base, error=ShapEError.from_json(obj["error"]))
        path, latent, inline = obj.get("path"), obj.get("latent"), obj.get("npz_b64")
        if not (isinstance(path, str) and path) and not (isinstance(inline, str) and inline):
            raise _malformed(f"mesh entry {index} names no mesh file")
        bounds = obj.get("bounds")
        warnings = obj.get("warnings")
        return replace(
            base,
            path=path if isinstance(path, str) and path else None,
            latent=latent if isinstance(latent, str) and latent else None,
            vertices=obj["vertices"] if is_int(obj.get("vertices")) else 0,
            faces=obj["faces"] if is_int(obj.get("faces")) else 0,
            bounds=_bounds(bounds),
            npz_b64=inline if isinstance(inline, str) and inline else None,
            latent_b64=obj["latent_b64"] if isinstance(obj.get("latent_b64"), str) else None,
            warnings=tuple(w for w in warnings if isinstance(w, str))
            if isinstance(warnings, list)
            else (),
        )


@dataclass(frozen=True)
class JobResult:
    """A finished generation: the resolved parameters and its variants' meshes."""

    job_dir: str
    params: dict[str, Any]  # every default resolved (the device really used, the model loaded)
    meshes: tuple[MeshEntry, ...]
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def made(self) -> list[MeshEntry]:
        return [m for m in self.meshes if m.made]

    @property
    def skipped(self) -> list[MeshEntry]:
        return [m for m in self.meshes if not m.made]

    @property
    def partial(self) -> bool:
        """Some variants are missing: skipped, or left out when the job was imported in part."""
        asked = self.params.get("variants")
        return bool(self.skipped) or (is_int(asked) and len(self.made) < asked)

    def variant(self, number: int) -> MeshEntry | None:
        return next((m for m in self.meshes if m.variant == number), None)

    def to_dict(self, *, inline: bool = True) -> dict[str, Any]:
        return {
            "job_dir": self.job_dir,
            "params": dict(self.params),
            "meshes": [m.to_dict(inline=inline) for m in self.meshes],
            "timings": dict(self.timings),
            "versions": dict(self.versions),
        }

    @classmethod
    def from_dict(cls, obj: Any) -> JobResult:
        """Parse a result; raises ShapEError(JOB_FAILED) when it is not one."""
        if not isinstance(obj, dict) or not isinstance(obj.get("meshes"), list):
            raise _malformed(f"it has no mesh list: {str(obj)[:200]}")
        params = obj.get("params")
        return cls(
            job_dir=str(obj.get("job_dir") or ""),
            params=dict(params) if isinstance(params, dict) else {},
            meshes=tuple(MeshEntry.from_dict(m, i) for i, m in enumerate(obj["meshes"])),
            timings=_dict_of(obj.get("timings"), (int, float)),
            versions=_dict_of(obj.get("versions"), str),
        )


def _malformed(what: str) -> ShapEError:
    return ShapEError(JOB_FAILED, f"the worker's result is malformed: {what}", _UPDATE_HINT)


def is_int(value: Any) -> TypeGuard[int]:
    """An int read from JSON (bool is an int to Python, not to us)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _bounds(value: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    try:
        lo, hi = value
        return tuple(float(x) for x in lo), tuple(float(x) for x in hi)
    except (TypeError, ValueError):
        return None


def _dict_of(value: Any, kinds: type | tuple[type, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, kinds)}
