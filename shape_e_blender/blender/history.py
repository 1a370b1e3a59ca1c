"""Recent Jobs: the jobs folder read back as a list, so that no finished result is lost.

Every generation writes its job folder before Blender imports anything, and the worker finishes
a job even when Blender has gone (core/jobdir.py reads one folder back and says what state it is
in). So a result outlives a Blender crash, a file closed unsaved, an undo past the import, or a
job that ended after Blender quit; this list finds it again. Folders that are not job folders are
left out, with one line on stderr. Only recent() and active_job() read Blender's state (the
preferences and the running task); the panel draws the list (panel.py).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import jobdir
from ..core.errors import ShapEError
from . import prefs, tasks

MAX_JOBS = 20  # the list's length: older jobs stay on disk, reachable through the folder
MAX_TRIED = 200  # folders looked at per scan, so a root full of foreign folders stays cheap
RESCAN_S = 2.0  # the panel draws many times a second; the folder is read at most this often

_skipped: set[str] = set()  # folders already reported as skipped


def scan(
    root: Path, *, active: Path | None = None, active_label: str = "", limit: int = MAX_JOBS
) -> list[jobdir.JobRecord]:
    """The newest ``limit`` job folders under ``root``, newest first; never raises.

    ``active`` is the folder of the add-on's running job (shown as running, not interrupted),
    ``active_label`` its label while the worker has not written its request yet.
    """
    try:
        with os.scandir(root) as it:
            entries = [e for e in it if _is_dir(e)]
    except OSError:
        return []  # no jobs yet (the folder is made with the first job), or unreadable
    started = {e.path: jobdir.started_at(Path(e.path)) for e in entries}
    entries.sort(key=lambda e: (started[e.path], e.name), reverse=True)
    out: list[jobdir.JobRecord] = []
    for entry in entries[:MAX_TRIED]:
        path = Path(entry.path)
        running = active is not None and jobdir.same_folder(path, active)
        try:
            out.append(jobdir.read_job(path, running=running, running_label=active_label))
        except ShapEError as err:
            if str(path) not in _skipped:
                _skipped.add(str(path))
                why = err.message.removeprefix(f"{err.field}: ")
                print(f"shape_e: recent jobs: skipped {path}: {why}", file=sys.stderr)
            continue
        if len(out) >= limit:
            break
    return out


def details(job: jobdir.JobRecord) -> str:
    """A short line for the list: seed, grid and what is on disk."""
    parts = [f"seed {job.seed}"] if job.seed is not None else []
    if job.grid_size is not None:
        parts.append(f"grid {job.grid_size}")
    if job.state == jobdir.DONE:
        n = len(job.meshes)
        parts.append(f"{n} mesh" + ("" if n == 1 else "es"))
        if job.skipped:
            parts.append(f"{len(job.skipped)} without surface")
        if job.missing:
            parts.append(f"{len(job.missing)} missing")
    elif job.variants > 1:
        parts.append(f"{job.variants} variants")
    return ", ".join(parts)


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


@dataclass(frozen=True)
class _Scan:
    key: tuple[Any, ...]
    at: float
    root: Path
    jobs: list[jobdir.JobRecord]


_cache: _Scan | None = None


def recent(context: Any = None) -> tuple[Path, list[jobdir.JobRecord]]:
    """The preferences' jobs folder and its recent jobs, read at most every RESCAN_S seconds.

    A job that starts or ends in this Blender reads the folder again at once. Raises ShapEError
    when the jobs folder preference cannot be used (a relative path in an unsaved file, ...).
    """
    global _cache
    active, label = active_job()
    key = (active, label, id(tasks.last()))
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
    task = tasks.active()
    if task is None or task.kind not in ("generate", "scene"):
        return None, ""
    return task.job_dir, task.label


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
