"""The worker's side of job folders (core/jobdir.py): where they go, the log, the inputs."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..core import jobdir
from ..core.errors import INVALID_PARAMS, ShapEError
from ..core.files import atomic_write


def default_jobs_root() -> Path:
    """A per-user cache folder, used when the client names no jobs root."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "shape_e_blender" / "jobs"


def prepare_job_dir(job_dir: str | os.PathLike[str]) -> Path:
    """The folder a request names for its job, made if missing."""
    return jobdir.ensure_dir(Path(job_dir).expanduser(), "the job folder")


def save_image(path: Path, image: Any) -> None:
    """A PIL image as a PNG file in the job folder."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())


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
    handler = logging.FileHandler(job_dir / jobdir.LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ThreadFilter(threading.get_ident()))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield logging.getLogger("shape_e_blender.job")
    finally:
        root.removeHandler(handler)
        handler.close()
