"""Files that appear whole or not at all: written beside their place, then renamed into it.

A reader (Blender's Recent Jobs, a second process, a user's file browser) never sees half a file,
even when the writer dies mid-write. The job folder, the mesh files and the CLI's exports all go
through here. A failed write removes its partial file; a writer killed mid-write (SIGKILL, a
crash, the OOM killer) cannot, and leaves its ``.part`` behind. A writer holds the folder it
writes into (``writing``), so that ``remove_stale_parts`` can tell those leftovers from the
``.part`` of a write still under way (a worker finishing a job after Blender quit, another
Blender's job) and remove only the first.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: a file open for writing cannot be deleted there
    fcntl = None  # type: ignore[assignment]

PART_SUFFIX = ".part"
# What ``probe`` says a path names.
FILE, FOLDER, OTHER, MISSING = "file", "folder", "other", "missing"


def probe(path: str | os.PathLike[str]) -> tuple[str, str]:
    """What ``path`` names, following links, without raising: (FILE, FOLDER, OTHER or MISSING,
    why). OTHER is a FIFO, a device or a socket: opening one can block for ever. MISSING comes
    with the OS's reason ("does not exist", "is a link that loops", "File name too long", ...).

    pathlib's is_file(), is_dir() and exists() raise for a name that is too long or a folder on
    the way that cannot be searched (Python 3.11 to 3.13), so a path a user typed is asked here.
    """
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return MISSING, "does not exist"
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
            return MISSING, "is a link that loops"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return MISSING, f"cannot be looked up ({reason})"
    if stat.S_ISREG(mode):
        return FILE, ""
    if stat.S_ISDIR(mode):
        return FOLDER, ""
    return OTHER, "is not a regular file (a device, a FIFO or a socket)"


def is_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file (after links); False where it cannot be looked up."""
    return probe(path)[0] == FILE


def is_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder (after links); False where it cannot be looked up."""
    return probe(path)[0] == FOLDER


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


@contextlib.contextmanager
def writing(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``folder`` (a shared lock on it) while writing into it.

    The lock goes with the process: a writer that is killed lets go of it at once. Where no
    lock can be taken (Windows, a file system without locks) the write goes on unheld.
    """
    fd = _open_folder(folder)
    try:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def claimed(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the file ``path`` (made if missing) for this writer alone while the block runs: a
    second claim of it, by this process or another, raises BlockingIOError at once. A job claims
    its folder's log, so that two jobs sent the same folder cannot mix their files in it.

    The claim goes with the process. Where there are no locks (Windows, a file system without
    them) or the file cannot be opened, the block runs unclaimed.
    """
    fd = None
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held: by another job, in this process or another
                raise
            except OSError:  # no locks on this file system
                pass
        yield
    finally:
        if fd is not None:
            os.close(fd)


def remove_stale_parts(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the ``.part`` files in ``folder`` and its subfolders that no writer holds.

    Returns what was removed; nothing while a writer holds the folder (see ``writing``), or
    where that cannot be told (a file system without locks). On Windows, where there are no
    such locks, a file still open for writing refuses to go and is kept.
    """
    folder = Path(folder)
    fd = _open_folder(folder)
    if fd is None and fcntl is not None:
        return []
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a live writer
                return []
        removed = []
        for part in (*folder.glob(f"*{PART_SUFFIX}"), *folder.glob(f"*/*{PART_SUFFIX}")):
            try:
                if not part.is_dir():
                    part.unlink()
                    removed.append(part)
            except OSError:
                continue
        return removed
    finally:
        if fd is not None:
            os.close(fd)


def _open_folder(folder: str | os.PathLike[str]) -> int | None:
    """A descriptor of ``folder`` to lock, or None where there are no locks or no folder."""
    if fcntl is None:
        return None
    try:
        return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
