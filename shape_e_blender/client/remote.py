"""A worker reached by any command that speaks the protocol on its stdio, e.g.

    ssh gpu-box ~/shape-e/bin/python -m shape_e_blender.worker

The remote machine keeps its own jobs root; nothing is shared with this one (no disk, no port:
the command's stdin and stdout are the connection). Every generate request asks for inline
results (the meshes and their latents, base64, in the answer) and carries an image job's file
inline too (``image_data``). The answer is written into this machine's own job folder before
anyone sees it, as a local worker would have written it: the import, Recent Jobs and the scene
cache then work unchanged. A connection that drops fails the running jobs with WORKER_EXITED,
saying so. Re-mesh, whose input is a latent file here, runs on the local worker.
"""

from __future__ import annotations

import base64
import io
import os
import shlex
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core import jobdir
from ..core.errors import JOB_FAILED, ShapEError, invalid
from ..core.files import writing
from ..core.mesh import MeshData
from ..core.protocol import MAX_IMAGE_BYTES, GenerateRequest
from ..core.results import JobResult, MeshEntry
from .client import WorkerClient
from .handle import JobHandle

HINT = "e.g. ssh gpu-box ~/shape-e/bin/python -m shape_e_blender.worker (see the README)"


def split_command(command: str | Sequence[str]) -> list[str]:
    """The command's words (shell quoting rules); raises naming ``worker_command``."""
    try:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
    except ValueError as exc:
        raise invalid("worker_command", f"cannot be read: {exc}", HINT) from None
    if not argv:
        raise invalid("worker_command", "is empty", HINT)
    return argv


class RemoteWorkerClient(WorkerClient):
    """A WorkerClient whose worker is ``command`` (a string is split by shell rules)."""

    EXITED = "the connection to the worker command was lost (status {status}) before it answered"
    CHECK = "or check the worker command and the remote machine (is the worker installed there?)"

    def __init__(
        self, command: str | Sequence[str], jobs_root: str | os.PathLike[str], **kwargs: Any
    ) -> None:
        self.argv = split_command(command)
        # The first word is what must exist here (ssh, or a local wrapper script).
        super().__init__(self.argv[0], jobs_root, **kwargs)

    def command(self) -> list[str]:
        return list(self.argv)

    def generate(self, req: GenerateRequest) -> JobHandle:
        if req.params.latent is not None:
            raise invalid(
                "latent",
                "a worker reached through a command cannot read this machine's latent files",
                "clear the worker command in the preferences to re-mesh on the local worker",
            )
        # The remote machine has its own jobs root, and gets the image itself, inline.
        sent = replace(req, job_dir=None, inline=True, image_data=_image_data(req))
        label = req.params.prompt or jobdir.file_name(req.params.image or "")
        local = Path(req.job_dir or jobdir.new_job_dir(self.jobs_root, label))
        # As a local worker does when a job starts: the folder reads as this job from now on.
        jobdir.ensure_dir(local, "the job folder")
        jobdir.start_job(local, {**sent.to_json(data=False), "job_dir": str(local)})
        job = self._send(self._started(), "generate", sent.to_json())
        job.local_dir = str(local)
        return job

    def _finish(
        self, job: JobHandle, *, result: Any = None, error: ShapEError | None = None
    ) -> None:
        if job.method == "generate" and job.local_dir:
            folder = Path(job.local_dir)
            try:
                if error is None:
                    try:
                        result = store_inline(folder, job.params, result)
                    except ShapEError as malformed:  # it says which field, and what to do
                        error = malformed
                if error is not None:  # the folder reads as failed, not interrupted
                    with writing(folder):
                        jobdir.write_error(folder, error)
            except OSError as exc:
                error = ShapEError(
                    JOB_FAILED,
                    f"the worker's result could not be written to {folder}: {exc}",
                    "check that the jobs folder is writable and has room, then generate again",
                )
        super()._finish(job, result=result if error is None else None, error=error)


def _image_data(req: GenerateRequest) -> str | None:
    """The request's image file, base64, or None for a text job."""
    if req.params.image is None:
        return None
    path = Path(req.params.image)
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise invalid(
                "image",
                f"{path} is {size / 2**20:.0f} MB; a worker reached through a command takes "
                f"images up to {MAX_IMAGE_BYTES >> 20} MB",
                "save a smaller copy (the model sees 256 x 256 pixels)",
            )
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as exc:
        raise invalid(
            "image", f"cannot read {path}: {exc.strerror or exc}", "pick the image again"
        ) from None


def store_inline(job_dir: Path, sent: dict[str, Any], raw: Any) -> dict[str, Any]:
    """An inline result written into ``job_dir`` as the worker lays out a job folder; returns
    the result as a local worker would have answered it (file paths, no inline data).

    Every inline mesh and latent is read before anything is written: a malformed answer raises
    ShapEError naming its field and leaves the folder as it was. The folder is held while it is
    written (files.writing), as a worker holds its own, so a reader keeps its ``.part`` files.
    """
    result = JobResult.from_dict(raw)
    sent = {k: v for k, v in sent.items() if k != "image_data"}
    if "image" in sent:  # the worker names its own copy; the objects name the user's file
        result = replace(result, params={**result.params, "image": sent["image"]})
    read = [(i, m, *_inline_files(i, m)) for i, m in enumerate(result.meshes) if m.made]
    jobdir.ensure_dir(job_dir, "the job folder")
    entries = list(result.meshes)
    with writing(job_dir):
        jobdir.write_request(job_dir, {**sent, "job_dir": str(job_dir)}, result.params)
        for i, m, mesh, latent in read:
            path = mesh.save(jobdir.mesh_path(job_dir, m.variant))
            saved = None
            if latent is not None:
                saved = jobdir.latent_path(job_dir, m.variant)
                jobdir.save_latent(saved, latent)
            entries[i] = replace(
                m, path=str(path), latent=str(saved) if saved else None, npz_b64=None,
                latent_b64=None,
            )  # fmt: skip
        local = replace(result, job_dir=str(job_dir), meshes=tuple(entries))
        jobdir.write_result(job_dir, local)
    return local.to_dict(inline=False)


def _inline_files(index: int, m: MeshEntry) -> tuple[MeshData, np.ndarray | None]:
    """Entry ``index``'s inline mesh and latent, read; a ShapEError naming the field that is
    missing or cannot be read."""

    def malformed(name: str, what: str, why: str) -> ShapEError:
        return ShapEError(
            JOB_FAILED,
            f"the worker's result is malformed: meshes[{index}].{name} (variant {m.variant}'s "
            f"{what}) {why}",
            "generate again; if it happens again, update the worker environment on the remote "
            "machine (the one the worker command runs) so that it matches the add-on",
        )

    if not m.npz_b64:
        raise malformed("npz_b64", "mesh", "is missing, though the worker was asked for it")
    try:
        mesh = MeshData.from_bytes(base64.b64decode(m.npz_b64, validate=True))
    except ValueError as exc:  # binascii.Error is one too
        raise malformed("npz_b64", "mesh", f"cannot be read: {exc}") from exc
    if not m.latent_b64:
        return mesh, None
    try:
        data = base64.b64decode(m.latent_b64, validate=True)
        latent = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:  # not base64, pickled, cut short, ...
        raise malformed("latent_b64", "latent", f"cannot be read as a .npy array: {exc}") from exc
    if not isinstance(latent, np.ndarray) or latent.ndim != 2 or latent.dtype.kind != "f":
        raise malformed("latent_b64", "latent", "is not a latent (a 2-D float array)")
    return mesh, latent
