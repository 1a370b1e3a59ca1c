"""Files that appear whole or not at all: written beside their place, then renamed into it.

A reader (Blender's Recent Jobs, a second process, a user's file browser) never sees half a file,
even when the writer dies mid-write. The job folder, the mesh files and the CLI's exports all go
through here. A failed write removes its partial file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PART_SUFFIX = ".part"


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + PART_SUFFIX)
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, text.encode("utf-8"))
