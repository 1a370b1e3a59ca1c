"""Worker protocol: newline-delimited JSON shaped like JSON-RPC 2.0 (docs/protocol.md is the spec).

This module builds and checks messages; it does no I/O.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from .errors import INVALID_REQUEST, PARSE_ERROR, ShapEError, invalid
from .params import SETTINGS, GenerationParams

PROTOCOL_VERSION = 1
# Requests are small but for an inline image (a remote worker's input, base64); results can be
# tens of MB inline, so only requests are capped.
MAX_IMAGE_BYTES = 16 << 20
MAX_REQUEST_BYTES = MAX_IMAGE_BYTES * 4 // 3 + (1 << 20)

# A worker's stderr, in its jobs root: the client copies it there, a detached worker writes it.
WORKER_LOG_FILE = "worker.log"
METHODS = ("hello", "generate", "download", "load", "cancel", "status", "shutdown")
# The params of the methods that name a model (download, load); each is checked as its setting.
MODEL_PARAMS = {
    "download": ("model", "kind", "cache_dir"),
    "load": ("model", "kind", "cache_dir", "device", "precision"),
}
# The params of the methods the reader thread answers itself.
CONTROL_PARAMS: dict[str, tuple[str, ...]] = {
    "hello": (),
    "status": (),
    "cancel": ("id",),
    "shutdown": ("detach",),
}

Id = int | str | None


def encode(message: dict[str, Any]) -> str:
    """One message as one line (no newline inside: JSON escapes them)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n"


def request(id: int | str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}}


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def response(id: Id, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "result": result}


def error_response(id: Id, error: ShapEError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "error": error.to_json()}


@dataclass(frozen=True)
class Request:
    id: Id  # None for a notification, and for a request that sent "id": null
    method: str
    params: dict[str, Any]
    # No "id" member at all: JSON-RPC's notification, which is never answered. A request with
    # "id": null is answered (with id null), errors included.
    notification: bool = False


def parse_request(line: str | bytes) -> Request:
    """Parse one line from a client. Raises ShapEError(PARSE_ERROR or INVALID_REQUEST).

    The error's ``field`` is unused here; the caller answers with the id it could recover
    (``request_id_of``), or null for a parse error.
    """
    if len(line) > MAX_REQUEST_BYTES:
        raise line_too_long(len(line))
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        # ValueError: not JSON, not UTF-8 (JSONDecodeError and UnicodeDecodeError are ones), or
        # an integer past Python's 4300-digit limit; RecursionError: arrays nested too deep.
        raise ShapEError(
            PARSE_ERROR, f"not JSON this worker can read: {str(exc)[:200]}",
            "send one JSON object per line, with numbers of at most 4300 digits and at most "
            "a few hundred levels of nesting",
        ) from None  # fmt: skip
    if not isinstance(obj, dict):
        raise ShapEError(INVALID_REQUEST, "a request must be a JSON object", "see docs/protocol.md")
    if obj.get("jsonrpc") != "2.0":
        raise ShapEError(INVALID_REQUEST, 'missing "jsonrpc": "2.0"', "see docs/protocol.md")
    method = obj.get("method")
    if not isinstance(method, str):
        raise ShapEError(INVALID_REQUEST, '"method" must be a string', "see docs/protocol.md")
    rid = obj.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (int, str))):
        raise ShapEError(
            INVALID_REQUEST, '"id" must be a number or a string', "see docs/protocol.md"
        )
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ShapEError(INVALID_REQUEST, '"params" must be an object', "see docs/protocol.md")
    return Request(rid, method, params, notification="id" not in obj)


def line_too_long(size: int) -> ShapEError:
    return ShapEError(
        INVALID_REQUEST,
        f"request line is {size} bytes; the limit is {MAX_REQUEST_BYTES}",
        "send image and latent inputs as file paths, not inline data",
    )


# A request's id where the whole line is not read (too long): the id as its first member, or
# second after "jsonrpc", as clients (this one too) write it. Anything else answers id null.
_LEADING_ID = re.compile(
    rb'\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*'
    rb'(-?[0-9]{1,18}(?![0-9.eE])|"(?:[^"\\]|\\.)*")'
)


def leading_id(head: bytes) -> Id:
    """Best effort: the id at the start of a line that is not parsed whole; None if none."""
    found = _LEADING_ID.match(head)
    if found is None:
        return None
    try:
        rid = json.loads(found.group(1))
    except ValueError:
        return None
    return rid if isinstance(rid, (int, str)) else None


def request_id_of(line: str | bytes) -> Id:
    """Best effort: the id of a request that failed validation, so the error can name it."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    rid = obj.get("id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else None


def is_path(value: Any) -> bool:
    """Whether the OS can name a file ``value``: text, not empty, no NUL, no lone surrogate."""
    if not isinstance(value, str) or not value or "\0" in value:
        return False
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        return False
    return True


def refuse_unknown(method: str, params: dict[str, Any], known: tuple[str, ...]) -> None:
    """An unknown parameter (a misspelt ``sead``) is refused, never ignored; the hint lists
    the known ones."""
    unknown = sorted(k for k in params if k not in known)
    if unknown:
        raise invalid(
            unknown[0],
            f"is not a parameter of {method}",
            f"the parameters are {', '.join(known)}" if known else f"{method} takes none",
        )


# Beside the generation parameters. ``image_data``: the image file's bytes, base64, for a worker
# that cannot read the client's files (``image`` then only names it).
GENERATE_OPTIONS = ("job_dir", "inline", "allow_download", "image_data")


@dataclass(frozen=True)
class GenerateRequest:
    """``generate``'s params: the generation parameters plus where and how results go."""

    params: GenerationParams
    job_dir: str | None = None  # None: a new folder under the worker's jobs root
    inline: bool = False  # also return each mesh as base64 npz
    allow_download: bool = False  # fetch missing weights from the hub
    image_data: str | None = None  # the image itself, base64 (see GENERATE_OPTIONS)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> GenerateRequest:
        refuse_unknown("generate", obj, (*SETTINGS, *GENERATE_OPTIONS))
        params = GenerationParams.from_json(obj)
        job_dir = obj.get("job_dir")
        if job_dir is not None and not is_path(job_dir):
            raise invalid("job_dir", "must be a folder path", "omit it to use the jobs root")
        flags = {}
        for name in ("inline", "allow_download"):
            value = obj.get(name, False)
            if not isinstance(value, bool):
                raise invalid(name, "must be true or false", f"send {name}: true or false")
            flags[name] = value
        data = obj.get("image_data")
        if data is not None and (not isinstance(data, str) or params.image is None):
            raise invalid(
                "image_data",
                "must be the image file's bytes as base64 text, beside image",
                "send image (its name) and image_data together, or image alone",
            )
        return cls(params, job_dir, image_data=data, **flags)

    def to_json(self, *, data: bool = True) -> dict[str, Any]:
        """The request's params; without ``image_data`` unless ``data`` (what a job folder
        records: the worker keeps the image itself as a file there)."""
        out = self.params.to_json()
        if self.job_dir is not None:
            out["job_dir"] = self.job_dir
        out["inline"] = self.inline
        out["allow_download"] = self.allow_download
        if data and self.image_data is not None:
            out["image_data"] = self.image_data
        return out


@dataclass(frozen=True)
class ModelRequest:
    """``download``'s and ``load``'s params: a model, the pipeline it is for ("text" or
    "image"), and for ``load`` the device and precision it is loaded for."""

    model: str
    kind: str
    cache_dir: str | None = None
    device: str = "auto"
    precision: str = "auto"

    @classmethod
    def from_json(cls, method: str, obj: dict[str, Any]) -> ModelRequest:
        refuse_unknown(method, obj, MODEL_PARAMS[method])
        model = obj.get("model")
        if not isinstance(model, str) or not model:
            raise invalid("model", "must be a hub repo id or a folder", "e.g. openai/shap-e")
        kind = obj.get("kind") or ("image" if model.endswith("img2img") else "text")
        if kind not in ("text", "image"):
            raise invalid("kind", f"{kind!r} is not a model kind", "use text or image")
        cache_dir = obj.get("cache_dir")
        if cache_dir is not None and not is_path(cache_dir):
            raise invalid("cache_dir", "must be a folder path", "omit it to use the hub's cache")
        device = SETTINGS["device"].check(obj.get("device"))
        precision = SETTINGS["precision"].check(obj.get("precision"))
        return cls(model, kind, cache_dir, device, precision)


# A result's timings (seconds per stage), in the order a first job pays them, as people read
# them; ``start`` is added by the client (docs/protocol.md).
TIMING_LABELS = {
    "start": "worker start",
    "import": "imports",
    "load": "model load",
    "encode": "encoding",
    "sample": "sampling",
    "decode": "mesh",
    "write": "writing",
}

# A variant's mesh extraction reports its progress in thousandths: during "decoding", ``step``
# counts thousandths over all variants (variant i runs from i * DECODE_STEPS).
DECODE_STEPS = 1000
THOUSANDTHS = ("decoding", "texturing")  # the stages that count so (texturing: the same way)


def count_text(stage: str, step: int, total: int) -> str:
    """How far a stage is, in its own unit (megabytes, a share of the meshes, steps); "" where a
    count says nothing (a stage of one step)."""
    if stage == "downloading":
        return f"{step / 2**20:.0f}/{total / 2**20:.0f} MB" if total else ""
    if stage in THOUSANDTHS and total >= DECODE_STEPS and total % DECODE_STEPS == 0:
        meshes = total // DECODE_STEPS
        share = f"{100 * step / total:.1f}%"
        return share if meshes == 1 else f"{share} of {meshes} meshes"
    return f"{step}/{total}" if total > 1 else ""


def duration_text(seconds: float) -> str:
    """A time left as people say it: "<1 s", "40 s", "12 min", "1.5 h"."""
    if seconds < 0.5:
        return "<1 s"
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Progress:
    """One progress notification. During sampling, one per prior call."""

    id: Id
    stage: str
    step: int
    total: int
    eta_s: float | None = None
    variant: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.eta_s is not None:
            out["eta_s"] = round(self.eta_s, 2) if math.isfinite(self.eta_s) else None
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Progress:
        eta = obj.get("eta_s")
        return cls(
            id=obj.get("id"),
            stage=str(obj.get("stage", "")),
            step=int(obj.get("step", 0)),
            total=int(obj.get("total", 0)),
            eta_s=float(eta) if isinstance(eta, (int, float)) else None,
            variant=obj.get("variant") if isinstance(obj.get("variant"), int) else None,
        )

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total > 0 else 0.0
