"""One error type that crosses the process boundary unchanged."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

# JSON-RPC 2.0 reserved codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# Application codes (JSON-RPC leaves -32000..-32099 to the server).
CANCELLED = -32000
NO_SURFACE = -32001
MODEL_UNAVAILABLE = -32002
OUT_OF_MEMORY = -32003
DEVICE_UNAVAILABLE = -32004
JOB_FAILED = -32005
WORKER_EXITED = -32006
PROTOCOL_MISMATCH = -32007
ENVIRONMENT_INCOMPLETE = -32008

CODE_NAMES = {
    PARSE_ERROR: "parse_error",
    INVALID_REQUEST: "invalid_request",
    METHOD_NOT_FOUND: "method_not_found",
    INVALID_PARAMS: "invalid_params",
    INTERNAL_ERROR: "internal_error",
    CANCELLED: "cancelled",
    NO_SURFACE: "no_surface",
    MODEL_UNAVAILABLE: "model_unavailable",
    OUT_OF_MEMORY: "out_of_memory",
    DEVICE_UNAVAILABLE: "device_unavailable",
    JOB_FAILED: "job_failed",
    WORKER_EXITED: "worker_exited",
    PROTOCOL_MISMATCH: "protocol_mismatch",
    ENVIRONMENT_INCOMPLETE: "environment_incomplete",
}


@dataclass
class ShapEError(Exception):
    """An error with a code, what happened, and what to do next.

    ``field`` names the offending request parameter where there is one.
    """

    code: int
    message: str
    hint: str = ""
    field: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": CODE_NAMES.get(self.code, "error"), "hint": self.hint}
        if self.field is not None:
            data["field"] = self.field
        return {"code": self.code, "message": self.message, "data": data}

    @classmethod
    def from_json(cls, obj: Any) -> ShapEError:
        if not isinstance(obj, dict):
            return cls(INTERNAL_ERROR, f"malformed error object: {obj!r}")
        raw = obj.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        code = obj.get("code")
        return cls(
            code=code if isinstance(code, int) else INTERNAL_ERROR,
            message=str(obj.get("message", "unknown error")),
            hint=str(data.get("hint", "")),
            field=data.get("field") if isinstance(data.get("field"), str) else None,
        )


def invalid(field: str, message: str, hint: str) -> ShapEError:
    return ShapEError(INVALID_PARAMS, f"{field}: {message}", hint, field)


def unexpected(exc: BaseException) -> ShapEError:
    """What an exception the worker did not expect becomes, for the client and the job folder."""
    return ShapEError(
        INTERNAL_ERROR,
        f"{type(exc).__name__}: {exc}",
        "this is a bug in the worker; the traceback is in the job log and on stderr",
    )


# What a file the job writes can fail with that is the disk's doing, not the worker's.
DISK_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
)


def disk_error(exc: OSError, folder: str | os.PathLike[str]) -> ShapEError | None:
    """The error of a job whose files in ``folder`` could not be written (a full disk, a
    read-only or forbidden folder); None for an OSError that says nothing about the disk."""
    if exc.errno not in DISK_ERRNOS:
        return None
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    what = "free some space on that disk" if full else "make the folder writable"
    return ShapEError(
        JOB_FAILED,
        f"could not write the job's files in {folder}: {exc.strerror or exc}",
        f"{what}, or choose a jobs folder on another disk (jobs_dir in the add-on's "
        "preferences, --jobs-root on the command line), then run the job again",
        "jobs_dir",
    )


def cancelled() -> ShapEError:
    """The one error every cancelled job answers with, wherever it stopped."""
    return ShapEError(CANCELLED, "cancelled", "the job was stopped on request; run it again")


def environment_incomplete(exc: ImportError, python: str) -> ShapEError:
    """What a worker Python that lacks a library it needs (torch, numpy, ...) answers."""
    return ShapEError(
        ENVIRONMENT_INCOMPLETE,
        f"the worker's Python cannot import {exc.name or exc}: {python}",
        "set up the worker environment in the add-on's preferences, or point worker_python at "
        "a Python with vendor/worker/*.txt installed",
        "worker_python",
    )
