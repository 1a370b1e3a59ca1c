"""The job folder: its layout, its name, how it is written, and how it is read back.

One folder per generation, written by the worker before it answers and read by the add-on (the
import, Recent Jobs, Re-mesh), the CLI and any other client. The layout is the protocol's
(docs/protocol.md, "Job folder")::

    <jobs root>/<YYYYmmdd-HHMMSS>-<slug>-<6 hex>/
      request.json   {"request": <generate params as received>, "resolved": <with defaults>}
      job.log        the worker's log lines for this job
      input.png      the prepared square image (image jobs)
      <i>/mesh.npz   variant i's mesh (core/mesh.py); <i>/latent.npy its latent
      <i>/texture.png  its baked base-colour texture, sRGB (with texture_size; also in mesh.npz)
      result.json    written last: the JobResult (core/results.py) without inline meshes
      error.json     instead of result.json when the job failed or was cancelled
      key.json       the job key (core/jobkey.py), written by the client that made the folder
      blend.npy      a blend's in-between latents (shape_e.blend_shapes), decoded as a latent job

Every file is written beside its place and renamed into it (core/files.py). Read back, a folder
is done (result.json), failed or cancelled (error.json; its code says which), running (the
caller's own current job), or interrupted (neither: the worker was killed, or it is still
finishing a job whose Blender quit, and will show as done once it has written its result).
Read back without a result, a folder loses the ``.part`` files of a writer that was killed
mid-write; a live worker holds its folder (core/files.py), so its own are kept.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from .errors import CANCELLED as CANCELLED_CODE
from .errors import JOB_FAILED, ShapEError, invalid
from .files import atomic_write, is_dir, remove_stale_parts, write_json
from .results import JobResult, is_int

REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
LOG_FILE = "job.log"
INPUT_IMAGE = "input.png"
MESH_FILE = "mesh.npz"
LATENT_FILE = "latent.npy"
TEXTURE_FILE = "texture.png"
BLEND_LATENTS = "blend.npy"  # shape_e.blend_shapes: the in-betweens' latents, one per variant
KEY_FILE = "key.json"

STATES = ("done", "failed", "cancelled", "running", "interrupted")
DONE, FAILED, CANCELLED, RUNNING, INTERRUPTED = STATES
_STAMP_FORMAT = "%Y%m%d-%H%M%S"
_STAMP = re.compile(r"^(\d{8}-\d{6})")


# -- layout and names ------------------------------------------------------------------------


def variant_dir(job_dir: str | os.PathLike[str], variant: int) -> Path:
    return Path(job_dir) / str(variant)


def mesh_path(job_dir: str | os.PathLike[str], variant: int) -> Path:
    return variant_dir(job_dir, variant) / MESH_FILE


def latent_path(job_dir: str | os.PathLike[str], variant: int) -> Path:
    return variant_dir(job_dir, variant) / LATENT_FILE


def texture_path(job_dir: str | os.PathLike[str], variant: int) -> Path:
    return variant_dir(job_dir, variant) / TEXTURE_FILE


def slug(text: str, limit: int = 32) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "job"


def new_job_dir(root: str | os.PathLike[str], label: str) -> Path:
    """A new, empty folder for one job: a time stamp, a readable slug and a random suffix."""
    name = f"{time.strftime(_STAMP_FORMAT)}-{slug(label)}-{uuid.uuid4().hex[:6]}"
    return ensure_dir(Path(root) / name, "the job folder", exist_ok=False)


def ensure_dir(
    path: Path, what: str, hint: str = "", field: str | None = "job_dir", exist_ok: bool = True
) -> Path:
    """``path`` made if missing; raises ShapEError naming ``what`` when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except OSError as exc:
        raise ShapEError(
            JOB_FAILED,
            f"{what} {path} could not be created: {exc.strerror or exc}",
            hint or "choose a writable folder for job_dir (or the jobs folder preference)",
            field,
        ) from None
    return path


# -- writing (the worker) ----------------------------------------------------------------------


def start_job(job_dir: Path, request: dict[str, Any]) -> None:
    """A job's first write: an earlier job's result or error goes before its request is written,
    so the folder reads as this job (running; interrupted if killed), never as the earlier one."""
    for outcome in (RESULT_FILE, ERROR_FILE):
        (job_dir / outcome).unlink(missing_ok=True)
    write_request(job_dir, request)


def write_request(job_dir: Path, request: dict[str, Any], resolved: dict | None = None) -> None:
    body: dict[str, Any] = {"request": request}
    if resolved is not None:
        body["resolved"] = resolved
    write_json(job_dir / REQUEST_FILE, body)


def write_result(job_dir: Path, result: JobResult) -> None:
    """The last file of a finished job; an error.json of an earlier run of the folder goes."""
    write_json(job_dir / RESULT_FILE, result.to_dict(inline=False))
    (job_dir / ERROR_FILE).unlink(missing_ok=True)


def write_error(job_dir: Path, err: ShapEError) -> None:
    """The error of a failed or cancelled job, in place of a result (of an earlier run too)."""
    (job_dir / RESULT_FILE).unlink(missing_ok=True)
    write_json(job_dir / ERROR_FILE, {"error": err.to_json()})


def save_latent(path: Path, latent: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(latent, dtype=np.float32), allow_pickle=False)
    atomic_write(path, buf.getvalue())


# -- reading back (the add-on, any client) -----------------------------------------------------


@dataclass(frozen=True)
class JobRecord:
    """One job folder as read back: its state and what it was made from."""

    path: Path
    state: str  # DONE | FAILED | CANCELLED | RUNNING | INTERRUPTED
    label: str  # what it was made from: the prompt, an image's file name, "Re-mesh of ..."
    name_source: str  # what its objects are named after (importer.object_name_for's input)
    started: float  # seconds since the epoch
    seed: int | None = None
    grid_size: int | None = None
    variants: int = 1  # asked for
    meshes: tuple[int, ...] = ()  # variants whose mesh file is on disk
    missing: tuple[int, ...] = ()  # variants the result lists whose mesh file is gone
    skipped: tuple[int, ...] = ()  # variants the worker made no mesh for (no surface)
    message: str = ""  # failed or cancelled: the worker's error, from its error.json

    @property
    def importable(self) -> bool:
        return self.state == DONE and bool(self.meshes)


def read_job(path: Path, *, running: bool = False, running_label: str = "") -> JobRecord:
    """One job folder; raises ShapEError (field ``job_dir``) when it is not a readable one."""
    return _read(path, running, running_label)[0]


def load_result(
    job_dir: str | os.PathLike[str], variant: int = -1, *, active: Path | None = None
) -> tuple[JobRecord, JobResult]:
    """A finished job's result, ready for the import, or an error naming the field at fault.

    The result's mesh and latent paths are pointed at this folder (the layout above), so a jobs
    folder that was moved or copied still imports. ``variant`` -1 keeps every variant, otherwise
    only that one. ``active`` is the folder of the caller's running job. Every check runs here,
    before anything is imported.
    """
    if not str(job_dir).strip():
        raise invalid(
            "job_dir", "no job folder given", "pass the folder of a finished job (its job_dir)"
        )
    path = Path(job_dir).expanduser()
    if not is_dir(path):
        raise invalid(
            "job_dir",
            f"there is no folder {path}",
            "pass an existing job folder; the panel's Recent Jobs list shows them",
        )
    running = active is not None and same_folder(active, path)
    job, result = _read(path, running, "")
    if job.state != DONE or result is None:
        raise _not_done(job)
    if variant >= 0:
        if result.variant(variant) is None:
            made = ", ".join(str(v) for v in sorted((*job.meshes, *job.missing, *job.skipped)))
            raise invalid(
                "variant",
                f"the job in {path} has no variant {variant} (it has {made or 'none'})",
                "pass one of those, or -1 for all of them",
            )
        result = _keep(result, [variant])
    elif variant != -1:
        raise invalid("variant", f"{variant} is not a variant", "pass -1 (all) or 0, 1, ...")
    gone = [m.path for m in result.made if m.path and not Path(m.path).is_file()]
    if gone:
        raise invalid(
            "job_dir",
            f"the mesh files {', '.join(gone)} are missing from {path}",
            "the folder was changed after the job finished; generate again with the same seed",
        )
    return job, result


def started_at(path: Path) -> float:
    """When a job started: its folder's time stamp, else its request's (or folder's) mtime."""
    match = _STAMP.match(path.name)
    if match:
        with contextlib.suppress(ValueError, OverflowError):
            return time.mktime(time.strptime(match.group(1), _STAMP_FORMAT))
    for candidate in (path / REQUEST_FILE, path):
        with contextlib.suppress(OSError):
            return candidate.stat().st_mtime
    return 0.0


def _read(path: Path, running: bool, running_label: str) -> tuple[JobRecord, JobResult | None]:
    request = _json(path / REQUEST_FILE)
    raw = _json(path / RESULT_FILE)
    if isinstance(raw, _Unreadable):
        raise _foreign(f"{path / RESULT_FILE} cannot be read: {raw.why}")
    result = None
    if raw is not None:
        try:
            result = _in_folder(JobResult.from_dict(raw), path)
        except ShapEError:
            raise _foreign(
                f"{path / RESULT_FILE} is not a Shap-E result (it has no mesh list)"
            ) from None
    sent = resolved = None
    if isinstance(request, dict) and isinstance(request.get("request"), dict):
        sent = request["request"]
        resolved = request.get("resolved") if isinstance(request.get("resolved"), dict) else None
    elif result is None:
        if running:  # the worker has not reached it yet (starting, loading, queued)
            return _record(path, RUNNING, {}, running_label or path.name), None
        why = (
            f"{REQUEST_FILE} cannot be read: {request.why}"
            if isinstance(request, _Unreadable)
            else f"it has no {REQUEST_FILE}"
            if request is None
            else f"{REQUEST_FILE} is not a Shap-E request"
        )
        raise invalid(
            "job_dir",
            f"{path} is not a Shap-E job folder ({why})",
            "pass a folder the worker wrote a job into (it holds request.json and result.json)",
        )
    params = next(
        (p for p in (result.params if result else None, resolved, sent) if isinstance(p, dict)),
        {},
    )
    if result is not None:
        return _done(path, params, result), result
    if not running:
        remove_stale_parts(path)
    written = _json(path / ERROR_FILE)
    if isinstance(written, dict) and isinstance(written.get("error"), dict):
        failure = ShapEError.from_json(written["error"])
        state = CANCELLED if failure.code == CANCELLED_CODE else FAILED
        return _record(path, state, params, message=str(failure)), None
    return _record(path, RUNNING if running else INTERRUPTED, params), None


def _in_folder(result: JobResult, job_dir: Path) -> JobResult:
    """``result`` with its files where this folder's layout puts them."""
    meshes = tuple(
        replace(
            m,
            path=str(mesh_path(job_dir, m.variant)),
            latent=str(latent_path(job_dir, m.variant)) if m.latent else None,
        )
        if m.made
        else m
        for m in result.meshes
    )
    return replace(result, job_dir=str(job_dir), meshes=meshes)


def _keep(result: JobResult, variants: list[int]) -> JobResult:
    return replace(result, meshes=tuple(m for m in result.meshes if m.variant in variants))


def _done(path: Path, params: dict[str, Any], result: JobResult) -> JobRecord:
    made = [m.variant for m in result.made if m.path and Path(m.path).is_file()]
    missing = [m.variant for m in result.made if m.variant not in made]
    skipped = [m.variant for m in result.skipped]
    if not made and not missing and skipped:  # not written by today's worker, but readable
        message = result.skipped[0].error.message if result.skipped[0].error else ""
        return _record(path, FAILED, params, message=message, skipped=tuple(skipped))
    return _record(
        path, DONE, params, meshes=tuple(made), missing=tuple(missing), skipped=tuple(skipped)
    )


def _record(
    path: Path, state: str, params: dict[str, Any], label: str = "", **fields: Any
) -> JobRecord:
    shown, name_source = (label, label) if label else _label(path, params)
    seed, grid, variants = params.get("seed"), params.get("grid_size"), params.get("variants")
    return JobRecord(
        path=path,
        state=state,
        label=shown,
        name_source=name_source,
        started=started_at(path),
        seed=seed if is_int(seed) else None,
        grid_size=grid if is_int(grid) else None,
        variants=variants if is_int(variants) and variants > 0 else 1,
        **fields,
    )


def _label(path: Path, params: dict[str, Any], depth: int = 0) -> tuple[str, str]:
    """(what a list shows, what the objects are named after), from the job's settings."""
    prompt, image, latent = params.get("prompt"), params.get("image"), params.get("latent")
    if isinstance(prompt, str) and prompt.strip():
        text = " ".join(prompt.split())
        return text, text
    if isinstance(image, str) and image:
        # A camera job's render is named "<camera> view.png": the objects are named after it.
        return file_name(image), image
    if isinstance(latent, str) and latent:
        # A re-mesh decodes <job>/<variant>/latent.npy: name it after that job (read once).
        source = Path(latent).parent.parent
        request = _json(source / REQUEST_FILE) if depth == 0 else None
        if isinstance(request, dict) and isinstance(request.get("request"), dict):
            shown, name_source = _label(source, request["request"], depth + 1)
            return f"Re-mesh of {shown}", name_source
        return f"Latent {file_name(latent)}", latent
    return path.name, path.name


_NOT_DONE = {  # why a folder cannot be imported, by its state: (what happened, what to do)
    FAILED: ("failed: {message}", "it left no mesh to import; generate again (its job.log holds "
             "the details)"),
    CANCELLED: ("was cancelled before it finished", "it left no mesh to import; generate again"),
    RUNNING: ("has not finished yet", "wait until it is done, then import it"),
    INTERRUPTED: ("has no result: it stopped before it finished", "if Blender quit while it ran, "
                  "its worker may still be finishing it: try again in a while; otherwise "
                  "generate again{again}"),
}  # fmt: skip


def _not_done(job: JobRecord) -> ShapEError:
    what, hint = _NOT_DONE.get(job.state, _NOT_DONE[INTERRUPTED])
    again = f" with seed {job.seed}" if job.seed is not None else ""
    return invalid(
        "job_dir",
        f"the job in {job.path} " + what.format(message=job.message),
        hint.format(again=again),
    )


def _foreign(what: str) -> ShapEError:
    return invalid(
        "job_dir", what, "this folder was not written by the Shap-E worker, or it was damaged"
    )


@dataclass(frozen=True)
class _Unreadable:
    why: str


def _json(path: Path) -> Any:
    """A JSON file's content; None when there is no such file, _Unreadable when it is broken."""
    try:
        with path.open("rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _Unreadable(str(exc))


def same_folder(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one folder (links resolved; case-blind where the system is)."""
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def file_name(path_text: str) -> str:
    """The last part of a path written on any system (a job from Windows read on Linux)."""
    return PurePath(path_text.replace("\\", "/")).name
