"""Job folders: where a job's request, log, latents and meshes go (layout in docs/protocol.md)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import INVALID_PARAMS, JOB_FAILED, ShapEError

REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"  # instead of result.json when the job failed or was cancelled
LOG_FILE = "job.log"
LATENT_FILE = "latent.npy"
INPUT_IMAGE = "input.png"


def default_jobs_root() -> Path:
    """A per-user cache folder, used when the client names no jobs root."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "shape_e_blender" / "jobs"


def slug(text: str, limit: int = 32) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "job"


def new_job_dir(root: Path, label: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{slug(label)}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def prepare_job_dir(job_dir: str | os.PathLike[str]) -> Path:
    path = Path(job_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ShapEError(
            JOB_FAILED,
            f"cannot create the job folder {path}: {exc.strerror or exc}",
            "choose a writable folder for job_dir (or the jobs folder preference)",
            "job_dir",
        ) from None
    return path


def variant_dir(job_dir: Path, index: int) -> Path:
    path = job_dir / str(index)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def save_latent(path: Path, latent: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".part.npy")
    np.save(tmp, np.ascontiguousarray(latent, dtype=np.float32), allow_pickle=False)
    tmp.replace(path)


def save_image(path: Path, image: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    image.save(tmp, format="PNG")
    tmp.replace(path)


def load_latents(path: str | os.PathLike[str]) -> np.ndarray:
    """A saved latent as (N, rows, cols) float32; a (rows, cols) file is one variant."""
    p = Path(path).expanduser()
    hint = "pass the latent.npy of an earlier job (in its variant folder)"
    if not p.is_file():
        raise ShapEError(INVALID_PARAMS, f"latent file not found: {p}", hint, "latent")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ShapEError(
            INVALID_PARAMS, f"cannot read {p} as a .npy array: {exc}", hint, "latent"
        ) from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.floating):
        raise ShapEError(
            INVALID_PARAMS,
            f"{p} holds a {arr.dtype} array of shape {arr.shape}, not latents",
            hint,
            "latent",
        )
    return arr.astype(np.float32, copy=False)


class _ThreadFilter(logging.Filter):
    def __init__(self, thread_id: int) -> None:
        super().__init__()
        self.thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread_id


@contextlib.contextmanager
def job_log(job_dir: Path) -> Iterator[logging.Logger]:
    """Copy this thread's log records into the job's log file while the job runs."""
    handler = logging.FileHandler(job_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ThreadFilter(threading.get_ident()))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield logging.getLogger("shape_e_blender.job")
    finally:
        root.removeHandler(handler)
        handler.close()
