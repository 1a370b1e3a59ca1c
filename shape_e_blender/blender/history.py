"""The jobs folder read back as a list of recent jobs, so that no finished result is lost.

Every generation writes its job folder (docs/protocol.md, "Job folder") before Blender imports
anything, and the worker finishes a job even when Blender has gone. A result therefore outlives a
Blender crash, a file closed unsaved, an undo past the import, or a job that ended after Blender
quit; this module finds it again. What the worker leaves behind tells each job's state:

- ``result.json`` (written last): done, with its variants' ``N/mesh.npz`` files;
- ``error.json`` instead of a result: failed, or cancelled (its code says which), with the
  worker's message and hint;
- no result and no failure: running when it is the add-on's current job, else interrupted (the
  worker was killed, or Blender quit and the worker is still finishing it: it shows as done once
  the worker wrote its result).

Folders that are not job folders (empty ones, foreign files, a result that cannot be read) are
skipped with one line on stderr. The scanning is plain Python; only recent() and active_job()
read Blender's state (the preferences and the running job).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from ..core.errors import CANCELLED as CANCELLED_CODE
from ..core.errors import ShapEError, invalid

REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
MESH_FILE = "mesh.npz"
LATENT_FILE = "latent.npy"

DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
RUNNING = "running"
INTERRUPTED = "interrupted"

MAX_JOBS = 20  # the list's length: older jobs stay on disk, reachable through the folder
MAX_TRIED = 200  # folders looked at per scan, so a root full of foreign folders stays cheap
RESCAN_S = 2.0  # the panel draws many times a second; the folder is read at most this often

_STAMP = re.compile(r"^(\d{8}-\d{6})")  # both sides name job folders "YYYYmmdd-HHMMSS-..."


@dataclass(frozen=True)
class RecentJob:
    """One job folder as the list shows it."""

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

    def details(self) -> str:
        """A short line: seed, grid and what is on disk."""
        parts = [f"seed {self.seed}"] if self.seed is not None else []
        if self.grid_size is not None:
            parts.append(f"grid {self.grid_size}")
        if self.state == DONE:
            n = len(self.meshes)
            parts.append(f"{n} mesh" + ("" if n == 1 else "es"))
            if self.skipped:
                parts.append(f"{len(self.skipped)} without surface")
            if self.missing:
                parts.append(f"{len(self.missing)} missing")
        elif self.variants > 1:
            parts.append(f"{self.variants} variants")
        return ", ".join(parts)


def scan(
    root: Path,
    *,
    active: Path | None = None,
    active_label: str = "",
    limit: int = MAX_JOBS,
) -> list[RecentJob]:
    """The newest ``limit`` job folders under ``root``, newest first; never raises.

    ``active`` is the folder of the add-on's running job (shown as running, not interrupted),
    ``active_label`` its label while the worker has not written its request yet.
    """
    try:
        with os.scandir(root) as it:
            entries = [e for e in it if _is_dir(e)]
    except OSError:
        return []  # no jobs yet (the folder is made with the first job), or unreadable
    started = {e.path: _started(Path(e.path)) for e in entries}
    entries.sort(key=lambda e: (started[e.path], e.name), reverse=True)
    active_real = _real(active) if active is not None else None
    out: list[RecentJob] = []
    for entry in entries[:MAX_TRIED]:
        path = Path(entry.path)
        is_active = active_real is not None and _real(path) == active_real
        try:
            out.append(read_job(path, running=is_active, running_label=active_label))
        except ShapEError as err:
            _note_skipped(path, err.message.removeprefix(f"{err.field}: "))
            continue
        if len(out) >= limit:
            break
    return out


def read_job(path: Path, *, running: bool = False, running_label: str = "") -> RecentJob:
    """One job folder; raises ShapEError (field ``job_dir``) when it is not a readable one.

    ``running``: the add-on's current job is in this folder.
    """
    return _read(path, running, running_label)[0]


def load_result(
    job_dir: str | os.PathLike[str], variant: int = -1, *, active: Path | None = None
) -> tuple[RecentJob, dict[str, Any]]:
    """A finished job's result, ready for the import, or an error naming the field at fault.

    The result's mesh and latent paths are pointed at this folder (the protocol's layout), so a
    jobs folder that was moved or copied still imports. ``variant`` -1 keeps every variant,
    otherwise only that one. ``active`` is the folder of the add-on's running job. Every check
    runs here, before anything is imported.
    """
    if not str(job_dir).strip():
        raise invalid(
            "job_dir", "no job folder given", "pass the folder of a finished job (its job_dir)"
        )
    path = Path(job_dir).expanduser()
    if not path.is_dir():
        raise invalid(
            "job_dir",
            f"there is no folder {path}",
            "pass an existing job folder; the panel's Recent Jobs list shows them",
        )
    running = active is not None and _real(active) == _real(path)
    job, result = _read(path, running, "")
    if job.state != DONE or result is None:
        raise _not_done(job)
    entries = _mesh_entries(result, path)
    if variant >= 0:
        entries = [m for m in entries if m.get("variant") == variant]
        if not entries:
            made = ", ".join(str(v) for v in sorted((*job.meshes, *job.missing, *job.skipped)))
            raise invalid(
                "variant",
                f"the job in {path} has no variant {variant} (it has {made or 'none'})",
                "pass one of those, or -1 for all of them",
            )
    elif variant != -1:
        raise invalid("variant", f"{variant} is not a variant", "pass -1 (all) or 0, 1, ...")
    gone = [m["path"] for m in entries if "error" not in m and not Path(m["path"]).is_file()]
    if gone:
        raise invalid(
            "job_dir",
            f"the mesh files {', '.join(gone)} are missing from {path}",
            "the folder was changed after the job finished; generate again with the same seed",
        )
    return job, {**result, "job_dir": str(path), "meshes": entries}


def age_text(started: float, now: float | None = None) -> str:
    """How long ago, in a few characters: "just now", "5 min ago", "3 h ago", "2 days ago"."""
    seconds = (time.time() if now is None else now) - started
    if seconds < 60:
        return "just now"  # also a clock that moved backwards
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


# -- Blender's side: the preferences' jobs folder and the running job, cached ---------------------


@dataclass(frozen=True)
class _Scan:
    key: tuple[Any, ...]
    at: float
    root: Path
    jobs: list[RecentJob]


_cache: _Scan | None = None
_skipped: set[str] = set()  # folders already reported as skipped


def recent(context: Any = None) -> tuple[Path, list[RecentJob]]:
    """The preferences' jobs folder and its recent jobs, read at most every RESCAN_S seconds.

    A job that starts or ends in this Blender reads the folder again at once. Raises ShapEError
    when the jobs folder preference cannot be used (a relative path in an unsaved file, ...).
    """
    global _cache
    from . import jobs, prefs

    active, label = active_job()
    key = (active, label, id(jobs.last()))
    now = time.monotonic()
    if _cache is not None and _cache.key == key and now - _cache.at < RESCAN_S:
        return _cache.root, _cache.jobs
    root = prefs.jobs_root(prefs.get(context))
    found = scan(root, active=active, active_label=label)
    _cache = _Scan(key, now, root, found)
    return root, found


def forget() -> None:
    """Read the folder again on the next recent() (a changed preference, a test)."""
    global _cache
    _cache = None


def active_job() -> tuple[Path | None, str]:
    """The folder and label of the generation this Blender is running, if any."""
    from . import jobs

    job = jobs.active()
    if job is None or job.kind != "generate":
        return None, ""
    for request in job.requests:
        folder = request.params.get("job_dir") if isinstance(request.params, dict) else None
        if isinstance(folder, str) and folder:
            return Path(folder), job.label
    return None, job.label


# -- reading one folder -----------------------------------------------------------------------


def _read(path: Path, running: bool, running_label: str) -> tuple[RecentJob, dict | None]:
    request = _json(path / REQUEST_FILE)
    result = _json(path / RESULT_FILE)
    if isinstance(result, _Unreadable):
        raise invalid(
            "job_dir",
            f"{path / RESULT_FILE} cannot be read: {result.why}",
            "this folder was not written by the Shap-E worker, or it was damaged",
        )
    if result is not None and not (
        isinstance(result, dict) and isinstance(result.get("meshes"), list)
    ):
        raise invalid(
            "job_dir",
            f"{path / RESULT_FILE} is not a Shap-E result (it has no mesh list)",
            "this folder was not written by the Shap-E worker, or it was damaged",
        )
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

    params = _params(result, resolved, sent)
    if result is not None:
        return _done(path, params, result), result
    failure = _failure(path / ERROR_FILE)
    if failure is not None:
        state = CANCELLED if failure.code == CANCELLED_CODE else FAILED
        return _record(path, state, params, message=str(failure)), None
    return _record(path, RUNNING if running else INTERRUPTED, params), None


def _params(result: Any, resolved: Any, sent: Any) -> dict[str, Any]:
    """The job's settings: the result's resolved ones, else the request's."""
    for source in (result.get("params") if isinstance(result, dict) else None, resolved, sent):
        if isinstance(source, dict):
            return source
    return {}


def _done(path: Path, params: dict[str, Any], result: dict[str, Any]) -> RecentJob:
    meshes, missing, skipped = [], [], []
    first_error = ""
    for m in _mesh_entries(result, path):
        if "error" in m:
            skipped.append(m["variant"])
            err = m["error"]
            if not first_error and isinstance(err, dict):
                first_error = str(err.get("message", ""))
        elif Path(m["path"]).is_file():
            meshes.append(m["variant"])
        else:
            missing.append(m["variant"])
    if not meshes and not missing and skipped:  # not written by today's worker, but readable
        return _record(path, FAILED, params, message=first_error, skipped=tuple(skipped))
    return _record(
        path, DONE, params, meshes=tuple(meshes), missing=tuple(missing), skipped=tuple(skipped)
    )


def _mesh_entries(result: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The result's mesh entries, with their files where the protocol puts them in ``path``."""
    out = []
    for i, m in enumerate(result.get("meshes") or []):
        if not isinstance(m, dict):
            continue
        variant = m.get("variant", i)
        if not isinstance(variant, int) or isinstance(variant, bool) or variant < 0:
            continue
        m = {**m, "variant": variant}
        if "error" not in m:
            m["path"] = str(path / str(variant) / MESH_FILE)
            if m.get("latent"):
                m["latent"] = str(path / str(variant) / LATENT_FILE)
        out.append(m)
    return out


def _record(
    path: Path, state: str, params: dict[str, Any], label: str = "", **fields: Any
) -> RecentJob:
    shown, name_source = (label, label) if label else _label(path, params)
    seed, grid, variants = params.get("seed"), params.get("grid_size"), params.get("variants")
    return RecentJob(
        path=path,
        state=state,
        label=shown,
        name_source=name_source,
        started=_started(path),
        seed=seed if _is_int(seed) else None,
        grid_size=grid if _is_int(grid) else None,
        variants=variants if _is_int(variants) and variants > 0 else 1,
        **fields,
    )


def _label(path: Path, params: dict[str, Any], depth: int = 0) -> tuple[str, str]:
    """(what the list shows, what the objects are named after), from the job's settings."""
    prompt, image, latent = params.get("prompt"), params.get("image"), params.get("latent")
    if isinstance(prompt, str) and prompt.strip():
        text = " ".join(prompt.split())
        return text, text
    if isinstance(image, str) and image:
        # A camera job's render is named "<camera> view.png": the objects are named after it.
        return _file_name(image), image
    if isinstance(latent, str) and latent:
        # A re-mesh decodes <job>/<variant>/latent.npy: name it after that job (read once).
        source = Path(latent).parent.parent
        request = _json(source / REQUEST_FILE) if depth == 0 else None
        if isinstance(request, dict) and isinstance(request.get("request"), dict):
            shown, name_source = _label(source, request["request"], depth + 1)
            return f"Re-mesh of {shown}", name_source
        return f"Latent {_file_name(latent)}", latent
    return path.name, path.name


def _failure(path: Path) -> ShapEError | None:
    """The worker's error for a job that failed or was cancelled (its error.json), else None."""
    written = _json(path)
    if isinstance(written, dict) and isinstance(written.get("error"), dict):
        return ShapEError.from_json(written["error"])
    return None


def _not_done(job: RecentJob) -> ShapEError:
    where = job.path
    if job.state == FAILED:
        return invalid(
            "job_dir",
            f"the job in {where} failed: {job.message}",
            "it left no mesh to import; generate again (its job.log holds the details)",
        )
    if job.state == CANCELLED:
        return invalid(
            "job_dir",
            f"the job in {where} was cancelled before it finished",
            "it left no mesh to import; generate again",
        )
    if job.state == RUNNING:
        return invalid(
            "job_dir",
            f"the job in {where} has not finished yet",
            "wait until it is done, then import it",
        )
    again = f" with seed {job.seed}" if job.seed is not None else ""
    return invalid(
        "job_dir",
        f"the job in {where} has no result: it stopped before it finished",
        "if Blender quit while it ran, its worker may still be finishing it: try again in a "
        f"while; otherwise generate again{again}",
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


def _started(path: Path) -> float:
    """When a job started: its folder's time stamp, else its request's (or folder's) mtime."""
    match = _STAMP.match(path.name)
    if match:
        with contextlib.suppress(ValueError, OverflowError):
            return time.mktime(time.strptime(match.group(1), "%Y%m%d-%H%M%S"))
    for candidate in (path / REQUEST_FILE, path):
        with contextlib.suppress(OSError):
            return candidate.stat().st_mtime
    return 0.0


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _real(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def _file_name(path_text: str) -> str:
    """The last part of a path written on any system (a job from Windows read on Linux)."""
    return PurePath(path_text.replace("\\", "/")).name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _note_skipped(path: Path, why: str) -> None:
    key = str(path)
    if key not in _skipped:
        _skipped.add(key)
        print(f"shape_e: recent jobs: skipped {path}: {why}", file=sys.stderr)
