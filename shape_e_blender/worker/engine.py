"""One generation or one download, start to finish: resolve the model, sample latents, extract
meshes, write files.

The worker's server and the headless CLI both call Engine.generate and Engine.download; only the
way progress is shown differs. Everything a job produces is on disk (in its job folder) before it
is reported. The engine knows nothing of the protocol loop or the command line: they import it
(lazily: it imports torch), never the other way round.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import jobdir, protocol
from ..core.errors import JOB_FAILED, NO_SURFACE, ShapEError, cancelled, disk_error, unexpected
from ..core.files import atomic_write, is_dir, is_file
from ..core.mesh import MeshData
from ..core.params import GenerationParams
from ..core.results import JobResult, MeshEntry
from .clock import Emit, StageClock, Timings, download_progress
from .hub.download import Kind, resolve_model
from .inputs import load_latents, prepare_image, save_image, save_inline_image
from .logs import job_log
from .mesh.export import png_bytes
from .mesh.field import LatentField
from .mesh.stf import extract_mesh
from .mesh.texture import decimate, textured
from .models.cache import ModelCache
from .models.devices import DeviceChoice, map_runtime_error, resolve_device, versions
from .sampling import sample_latents

log = logging.getLogger("shape_e_blender.engine")


@dataclass(frozen=True)
class Downloaded:
    """The answer to a download: where the model's files are, and how many bytes they take."""

    model: str
    kind: str
    path: Path
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "kind": self.kind, "path": str(self.path), "bytes": self.bytes}


class Engine:
    """Holds the model cache, so models stay loaded from one job to the next."""

    def __init__(
        self, jobs_root: Path, *, cache_dir: Path | None = None, imported_in: float = 0.0
    ) -> None:
        self.jobs_root = Path(jobs_root)
        self.cache_dir = cache_dir
        self.models = ModelCache()
        # What the first job waited for before the engine existed: its timings show it.
        self._unbilled = {"import": imported_in} if imported_in else {}

    def _bill(self, timings: Timings) -> None:
        for stage, seconds in self._unbilled.items():
            timings.add(stage, seconds)
        self._unbilled = {}

    def load(
        self,
        request: protocol.ModelRequest,
        folder: Path,
        *,
        request_id: protocol.Id = None,
        emit: Emit | None = None,
    ) -> dict[str, Any]:
        """``request.kind``'s pipeline (its renderer too) from ``folder``, loaded and moved to
        the device: the next generate with it pays no load."""
        timings = Timings()
        self._bill(timings)
        choice = resolve_device(request.device, request.precision)
        clock = StageClock(request_id, emit or (lambda _p: None))
        self._load(clock, timings, request.kind, folder, choice)
        return {
            "model": request.model,
            "kind": request.kind,
            "path": str(folder),
            "device": choice.device,
            "precision": choice.precision,
            "timings": timings.values,
        }

    def download(
        self,
        model: str,
        *,
        kind: Kind,
        cache_dir: str | Path | None = None,
        request_id: protocol.Id = None,
        emit: Emit | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Downloaded:
        """The model's files for ``kind`` in the cache (or its local folder), fetched if missing."""
        self._unbilled = {}  # a download's answer has no timings: the import is nobody's now
        clock = StageClock(request_id, emit or (lambda _p: None))
        path = resolve_model(
            model,
            kind=kind,
            allow_download=True,
            cache_dir=cache_dir or self.cache_dir,
            progress=download_progress(clock, cancel or (lambda: False)),
        )
        # stat() follows the hub cache's links to the blobs: the bytes really on disk.
        size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
        return Downloaded(model, kind, Path(path), size)

    # -- the generation itself ----------------------------------------------------------------

    def generate(
        self,
        request: protocol.GenerateRequest,
        *,
        request_id: protocol.Id = None,
        emit: Emit | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> JobResult:
        params = request.params.resolved()
        job_dir = (
            # Absolute: the answer's paths are read by a client that may run in another folder.
            jobdir.ensure_dir(Path(request.job_dir).expanduser().absolute(), "the job folder")
            if request.job_dir
            else jobdir.new_job_dir(self.jobs_root, params.prompt or Path(params.image or "x").stem)
        )
        clock = StageClock(request_id, emit or (lambda _p: None))
        should_cancel = cancel or (lambda: False)
        with job_log(job_dir) as jlog:
            jlog.info("job %s in %s: %s", request_id, job_dir, params.to_json())
            try:
                jobdir.start_job(job_dir, request.to_json(data=False))
                if request.image_data is not None:  # a client whose files this machine lacks
                    path = save_inline_image(job_dir, params.image or "", request.image_data)
                    params = replace(params, image=str(path))
                result = self._generate(params, request, job_dir, clock, should_cancel)
                _still_there(job_dir)
                jobdir.write_result(job_dir, result)
            except KeyboardInterrupt:  # Ctrl+C in the CLI (SIGTERM too, see cli.py)
                jlog.info("job interrupted")
                _write_error(job_dir, cancelled())
                raise
            except ShapEError as err:
                jlog.error("job failed: %s", err)
                _write_error(job_dir, err)
                raise
            except OSError as exc:
                jlog.exception("job failed")
                err = disk_error(exc, job_dir)
                _write_error(job_dir, err or unexpected(exc))
                if err is None:
                    raise
                raise err from exc
            except Exception as exc:
                jlog.exception("job failed")
                _write_error(job_dir, unexpected(exc))
                raise
            jlog.info("job done: %s", result.timings)
        return result

    def _generate(
        self,
        params: GenerationParams,
        request: protocol.GenerateRequest,
        job_dir: Path,
        clock: StageClock,
        should_cancel: Callable[[], bool],
    ) -> JobResult:
        timings = Timings()
        self._bill(timings)
        choice = resolve_device(params.device, params.precision)
        # Inputs first: a missing image or a bad latent file is reported before any model loads.
        image = latents = None
        if params.mode == "image":
            image = prepare_image(params.image or "")
            save_image(job_dir / jobdir.INPUT_IMAGE, image)
        elif params.mode == "latent":
            latents = load_latents(params.latent or "")
        kind = {"text": "text", "image": "image", "latent": "renderer"}[params.mode]
        folder = resolve_model(
            params.effective_model,
            kind=kind,
            allow_download=request.allow_download,
            cache_dir=self.cache_dir,
            progress=download_progress(clock, should_cancel),
        )
        resolved = {
            **params.to_json(),
            "device": choice.device,
            "precision": choice.precision,
        }
        if params.mode == "latent":
            # Sampling settings did not make this mesh (the latent file did): leave them out
            # rather than echo defaults that describe nothing.
            for name in ("seed", "steps", "guidance_scale"):
                resolved.pop(name, None)
        jobdir.write_request(job_dir, request.to_json(), resolved)

        if latents is not None:
            seeds: list[int | None] = [None] * len(latents)
            renderer = self._load(clock, timings, kind, folder, choice)
        else:
            seeds = list(params.variant_seeds())
            pipe = self._load(clock, timings, kind, folder, choice)
            latents = self._sample(pipe, params, image, choice, clock, timings, should_cancel)
            renderer = self.models.renderer(folder, choice)
        resolved["variants"] = len(latents)

        meshes: list[MeshEntry] = []
        for i, latent in enumerate(latents):
            _still_there(job_dir)
            vdir = jobdir.variant_dir(job_dir, i)
            vdir.mkdir(exist_ok=True)
            latent_file = None
            if params.mode != "latent":
                latent_file = jobdir.latent_path(job_dir, i)
                jobdir.save_latent(latent_file, latent)

            def decoding(done: int, total: int, stage: str = "decoding", i: int = i) -> None:
                clock(stage, i * total + done, len(latents) * total, i)

            started = time.perf_counter()
            try:
                mesh, warnings = self._decode(
                    renderer, latent, params, choice, should_cancel, decoding
                )
            except ShapEError as err:
                if err.code != NO_SURFACE:
                    raise
                if params.mode == "latent":  # no seed or prompt to change: the grid or a new job
                    err = replace(
                        err,
                        hint=f"decode it at another grid_size than {params.grid_size}, or "
                        "generate again with another seed",
                        field="latent",
                    )
                log.warning("variant %d: %s", i, err)
                meshes.append(MeshEntry(variant=i, seed=seeds[i], error=err))
                continue
            finally:
                timings.add("decode", time.perf_counter() - started)
            for warning in warnings:
                log.warning("variant %d: %s", i, warning)
            clock("writing", i, len(latents), i)
            _still_there(job_dir)
            started = time.perf_counter()
            path = mesh.save(jobdir.mesh_path(job_dir, i))
            if mesh.texture is not None:
                atomic_write(jobdir.texture_path(job_dir, i), png_bytes(mesh.texture))
            lo, hi = mesh.bounds()
            meshes.append(
                MeshEntry(
                    variant=i,
                    seed=seeds[i],
                    path=str(path),
                    latent=str(latent_file) if latent_file is not None else None,
                    warnings=tuple(warnings),
                    vertices=mesh.vertex_count,
                    faces=mesh.face_count,
                    bounds=(
                        tuple(round(float(x), 5) for x in lo),
                        tuple(round(float(x), 5) for x in hi),
                    ),
                    npz_b64=mesh.to_base64() if request.inline else None,
                    latent_b64=base64.b64encode(latent_file.read_bytes()).decode("ascii")
                    if request.inline and latent_file is not None
                    else None,
                )
            )
            timings.add("write", time.perf_counter() - started)
        clock("writing", len(latents), len(latents))

        if not any(m.made for m in meshes):
            raise meshes[0].error  # type: ignore[misc]  (every entry has one)
        return JobResult(
            job_dir=str(job_dir),
            params=resolved,
            meshes=tuple(meshes),
            timings=timings.values,
            versions=versions(),
        )

    def _load(
        self, clock: StageClock, timings: Timings, kind: str, folder: Path, choice: DeviceChoice
    ) -> Any:
        """The pipeline (or renderer) for ``kind``; reports "loading" only when it is not warm."""
        if self.models.is_loaded(kind, folder):
            return self._get(kind, folder, choice)
        started = time.perf_counter()
        clock("loading", 0, 1)
        obj = self._get(kind, folder, choice)
        clock("loading", 1, 1)
        timings.add("load", time.perf_counter() - started)
        return obj

    def _get(self, kind: str, folder: Path, choice: DeviceChoice) -> Any:
        try:  # loading, or moving to the device, can run out of memory like any stage
            return self.models.get(kind, folder, choice)
        except (RuntimeError, MemoryError) as exc:
            mapped = map_runtime_error(exc, "loading", choice.device_type)
            if mapped is None:
                raise
            raise mapped from exc

    def _sample(self, pipe, params, image, choice, clock, timings, should_cancel) -> np.ndarray:
        marks: dict[str, float] = {}

        def progress(stage: str, step: int, total: int) -> None:
            marks[stage] = time.perf_counter()
            clock(stage, step, total)

        started = time.perf_counter()
        latents = sample_latents(  # maps its own errors (out of memory) to ShapEErrors
            pipe,
            prompt=params.prompt,
            image=image,
            seeds=params.variant_seeds(),
            steps=params.steps,
            guidance_scale=params.effective_guidance,
            choice=choice,
            progress=progress,
            should_cancel=should_cancel,
        )
        encoded = marks.get("encoding", started)
        timings.add("encode", encoded - started)
        timings.add("sample", time.perf_counter() - encoded)
        return latents.detach().cpu().numpy().astype(np.float32)

    def _decode(
        self, renderer, latent, params, choice, should_cancel, progress
    ) -> tuple[MeshData, list[str]]:
        """The mesh of one latent: extracted, then decimated and textured as ``params`` ask;
        with the warnings of what could not be done as asked."""
        try:
            latent_field = LatentField(renderer, torch.from_numpy(latent), choice.device)
            mesh = extract_mesh(
                latent_field.sdf,
                latent_field.color,
                params.grid_size,
                device=choice.device,
                # A GPU wants big batches to stay busy (the MLP is small); a CPU gains nothing.
                batch_size=262_144 if choice.device_type == "cuda" else 65_536,
                should_cancel=should_cancel,
                progress=progress,
                sdf_on_grid=latent_field.sdf_on_grid,
            )
            warnings = []
            if params.faces and mesh.face_count <= params.faces:
                warnings.append(params.kept_whole(mesh.face_count))
            mesh = decimate(mesh, params.target_faces, latent_field.color)
            if params.texture_size:
                if should_cancel():
                    raise cancelled()
                progress(0, protocol.DECODE_STEPS, "texturing")
                mesh = textured(mesh, params.texture_size, latent_field.color)
                progress(protocol.DECODE_STEPS, protocol.DECODE_STEPS, "texturing")
            return mesh, warnings
        except (RuntimeError, MemoryError) as exc:  # device errors: out of memory, ...
            mapped = map_runtime_error(exc, "decoding")
            if mapped is None:
                raise
            raise mapped from exc


def _still_there(job_dir: Path) -> None:
    """Refuse to write on into a job folder that was removed (or emptied) while the job ran:
    the writes would make a new folder holding only the files written after, which reads as no
    job at all, while the answer would name files that are gone."""
    if not is_file(job_dir / jobdir.REQUEST_FILE):
        raise ShapEError(
            JOB_FAILED,
            f"the job folder {job_dir} was removed while the job ran",
            "keep job folders while their jobs run, then generate again",
            "job_dir",
        )


def _write_error(job_dir: Path, err: ShapEError) -> None:
    """The job's error beside its request, so that a reader of the folder alone learns it; not
    into a folder that is gone (it would be made again holding the error alone)."""
    if not is_dir(job_dir):
        log.warning("the job folder %s is gone: its error is not written", job_dir)
        return
    try:
        jobdir.write_error(job_dir, err)
    except OSError:  # a full disk must not hide the job's own error
        log.exception("could not write %s", job_dir / jobdir.ERROR_FILE)
