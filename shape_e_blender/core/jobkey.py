"""Job keys: what decides a job's meshes, hashed, so that a finished job folder is a cache.

A key hashes the model's identity, the source (the prompt's text, or the image file's bytes),
the seed, steps, guidance, grid size and variants, and the face count and texture size where
they are set. Where an object goes (location, rotation,
size, collection) is not in it: moving an object regenerates nothing.

The device class and the precision decide the mesh too, but a request often leaves them to the
worker ("auto": CUDA with fp16 where there is a GPU), and only the worker can resolve that. So
they are matched, not hashed: ``find_done`` takes a folder whose result was made on the device
class (cuda:1 and cuda are one class) and at the precision that the request names, and any
folder when it says auto. A scene generated on a GPU cluster with ``cuda:N`` is then reused by
a Blender build that asks for "auto", and a request for the CPU never takes a GPU's mesh.

The client writes the key into the job folder (``key.json``, next to the worker's files) before
it sends the request, so a scene can be built again, anywhere that sees the jobs root, without
starting the worker.
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
from .jobdir import KEY_FILE, load_result, new_job_dir
from .params import GenerationParams

# Raised when the worker's mesh path changes what the same inputs make: old folders are then
# no longer reused.
KEY_VERSION = 1
ASSET_FIELDS = ("faces", "texture_size")


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
    }
    # Asset options came later: left out when off, so that earlier folders keep their keys.
    made_of |= {n: getattr(r, n) for n in ASSET_FIELDS if getattr(r, n)}
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


def new_keyed_dir(root: str | os.PathLike[str], key: JobKey, label: str) -> Path:
    """A new job folder that holds its key before the worker is asked for anything."""
    folder = new_job_dir(root, label)
    write_key(folder, key)
    return folder


def read_key(job_dir: Path) -> str | None:
    try:
        with (job_dir / KEY_FILE).open("rb") as f:
            body = json.loads(f.read())
    except (OSError, ValueError):
        return None
    key = body.get("key") if isinstance(body, dict) else None
    return key if isinstance(key, str) else None


def find_done(
    root: str | os.PathLike[str], key: str, device: str = "auto", precision: str = "auto"
) -> Path | None:
    """The newest finished job folder under ``root`` with this key, every mesh on disk, made on
    ``device``'s class at ``precision`` (either "auto": any); else None."""
    best: tuple[float, str, Path] | None = None  # the newest; of one second, the last name
    for folder in _folders(Path(root)):
        if read_key(folder) != key:
            continue
        try:
            job, result = load_result(folder)
        except ShapEError:  # failed, cancelled, interrupted, or its files are gone
            continue
        made = result.params
        if device != "auto" and device_class(str(made.get("device"))) != device_class(device):
            continue
        if precision != "auto" and made.get("precision") != precision:
            continue
        if best is None or (job.started, folder.name) > best[:2]:
            best = (job.started, folder.name, folder)
    return best[2] if best is not None else None


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
