"""Job keys: what decides a job's meshes, hashed, so that a finished job folder is a cache.

A key hashes the model's identity, the source (the prompt's text, or the image file's bytes),
the seed, steps, guidance, grid size, variants, precision and the device class (cuda:1 and cuda
are one class: the same model on two GPUs of a kind makes the same mesh). Where an object goes
(location, rotation, size, collection) is not in it: moving an object regenerates nothing.

The client writes the key into the job folder (``key.json``, next to the worker's files) before
it sends the request. ``find_done`` then finds the newest finished folder with that key, so a
scene can be built again, anywhere that sees the jobs root, without starting the worker.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ShapEError
from .files import write_json
from .jobdir import DONE, KEY_FILE, read_job
from .params import GenerationParams

# Raised when the worker's mesh path changes what the same inputs make: old folders are then
# no longer reused.
KEY_VERSION = 1


@dataclass(frozen=True)
class JobKey:
    """The key and the values it was made of (kept beside it, to explain a regeneration)."""

    key: str
    made_of: dict[str, Any]


def job_key(params: GenerationParams) -> JobKey:
    """The key of a prompt or image job (a latent's re-mesh is never cached by key)."""
    r = params.resolved()
    if r.prompt is not None:
        source: dict[str, Any] = {"prompt": r.prompt}
    elif r.image is not None:
        source = {"image_sha256": _file_sha256(Path(r.image))}
    else:
        raise ValueError("a latent job has no key: only prompt and image jobs are cached")
    made_of = {
        "version": KEY_VERSION,
        "model": model_identity(r.model or ""),
        **source,
        "seed": r.seed,
        "steps": r.steps,
        "guidance_scale": r.guidance_scale,
        "grid_size": r.grid_size,
        "variants": r.variants,
        "precision": r.precision,
        "device": device_class(r.device),
    }
    text = json.dumps(made_of, sort_keys=True, separators=(",", ":"))
    return JobKey(hashlib.sha256(text.encode()).hexdigest()[:32], made_of)


def device_class(device: str) -> str:
    """cuda:N -> cuda; the others are their own class."""
    return device.split(":", 1)[0]


def model_identity(model: str) -> dict[str, Any]:
    """A hub repo id as it is; a local folder by its path and its files' names, sizes and times
    (replaced weights change the key; reading them whole would cost seconds per build)."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return {"hub": model}
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        st = file.stat()
        digest.update(
            f"{file.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
        )
    return {"folder": str(path.resolve()), "files": digest.hexdigest()[:32]}


def write_key(job_dir: Path, key: JobKey) -> None:
    write_json(job_dir / KEY_FILE, {"key": key.key, "made_of": key.made_of})


def read_key(job_dir: Path) -> str | None:
    try:
        with (job_dir / KEY_FILE).open("rb") as f:
            body = json.loads(f.read())
    except (OSError, ValueError):
        return None
    key = body.get("key") if isinstance(body, dict) else None
    return key if isinstance(key, str) else None


def find_done(root: str | os.PathLike[str], key: str) -> Path | None:
    """The newest finished, importable job folder under ``root`` with this key, else None."""
    best: tuple[float, Path] | None = None
    for folder in _folders(Path(root)):
        if read_key(folder) != key:
            continue
        try:
            job = read_job(folder)
        except ShapEError:
            continue
        usable = job.state == DONE and job.importable and not job.missing
        if usable and (best is None or job.started > best[0]):
            best = (job.started, folder)
    return best[1] if best is not None else None


def _folders(root: Path) -> Iterator[Path]:
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
