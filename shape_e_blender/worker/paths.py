"""Where the worker puts job folders when its client names no jobs root."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def default_jobs_root() -> Path:
    """A per-user cache folder: used by the server and the CLI without ``--jobs-root``."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "shape_e_blender" / "jobs"
