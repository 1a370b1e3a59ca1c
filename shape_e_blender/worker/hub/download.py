"""Model weights: a local folder, or a hub repo id fetched into the Hugging Face cache.

Either way the result is one folder laid out like the hub repo (``model_index.json`` plus one
sub-folder per component), ready for ``from_pretrained(folder, subfolder=...)``. Which files each
kind needs, and which weight files of a component are used, is core/weights.py's rule: the
download fetches exactly what the loader loads, and nothing else.

Resuming: each file that is not in the cache is fetched by ``fetch.fetch`` into
``blobs/<etag>.incomplete`` of the cache and continued from there with an HTTP Range request, by
this call after a cut connection and by the next call after a cancel or a killed process; the
finished file is checked (size, and sha256 for LFS files) before it joins the cache. Progress
counts the bytes already on disk from the start. ``hf_hub_download`` then only links the file
into the snapshot (and fetches, its own way, a file whose etag is not a hex digest). See fetch.py.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub import (
    HfApi,
    constants,
    hf_hub_download,
    is_offline_mode,
    try_to_load_from_cache,
)
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ...core.errors import MODEL_UNAVAILABLE, ShapEError
from ...core.files import FOLDER, MISSING, probe
from ...core.weights import (
    CONFIG_ONLY,
    check_folder,
    components,
    folder_problems,
    is_weight_file,
    is_weight_index,
    kind_hint,
    pick_weights,
    refused_pickles,
)
from .errors import download_command, hub_error, refuse_offline, unusable, where
from .fetch import fetch, partial_path, repo_storage
from .progress import ByteCounter, Progress

log = logging.getLogger(__name__)

Kind = Literal["text", "image", "renderer"]


@dataclass(frozen=True)
class DownloadPlan:
    """What a download of ``repo_id`` for one kind involves, listed at commit ``revision``."""

    repo_id: str
    files: tuple[tuple[str, int], ...]  # (path in the repo, bytes)
    total_bytes: int
    revision: str = ""
    cached_bytes: int = 0  # whole files already in the cache at this revision
    partial_bytes: int = 0  # bytes kept from cut-off downloads of the other files
    on_disk: tuple[tuple[str, int], ...] = ()  # (path, bytes here) for cached and partial files

    @property
    def needed_bytes(self) -> int:
        return self.total_bytes - self.cached_bytes - self.partial_bytes


def resolve_model(
    model: str,
    *,
    kind: Kind,
    allow_download: bool = False,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """A local folder with everything ``kind`` needs, for a folder path or a hub repo id.

    A hub repo is looked up in the cache first (no network). Raises ShapEError(MODEL_UNAVAILABLE)
    with a hint when the weights are not there and may not or cannot be downloaded.
    """
    components(kind)
    if not isinstance(model, str) or not model.strip():
        raise ShapEError(
            MODEL_UNAVAILABLE, "no model given", "pass a hub repo id or a folder", "model"
        )
    path = Path(model).expanduser()
    found, why = probe(path)
    if found == FOLDER:
        return check_folder(path, kind)
    if found != MISSING:
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"model {path} is a file, not a folder",
            "pass the folder that holds model_index.json, or a hub repo id",
            "model",
        )
    if not _is_repo_id(model):
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"model folder {path} {why}",
            "check the path, or give a hub repo id such as openai/shap-e",
            "model",
        )
    folder, problems = cached_snapshot(model, kind=kind, cache_dir=cache_dir)
    if folder is not None and not problems:
        return folder
    if not allow_download:
        state = (
            "is not in the model cache"
            if folder is None
            else f"is only partly in the model cache (missing {', '.join(problems)})"
        )
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"{model} {state}{where(cache_dir)} and downloading is not allowed here",
            f"download it with `{download_command(model, kind)}` or the add-on's Download "
            "button, or use a local copy with --model /path/to/folder",
            "model",
        )
    return download(model, kind=kind, cache_dir=cache_dir, progress=progress)


def cached_snapshot(
    repo_id: str, *, kind: Kind, cache_dir: str | Path | None = None
) -> tuple[Path | None, list[str]]:
    """The cached snapshot of the repo's main branch and what it lacks for ``kind``; no network."""
    hit = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=_cache_str(cache_dir))
    if not isinstance(hit, str):
        return None, []
    folder = Path(hit).parent
    return folder, folder_problems(folder, kind)


def plan_download(repo_id: str, *, kind: Kind, cache_dir: str | Path | None = None) -> DownloadPlan:
    """Ask the hub which files ``kind`` needs and how big they are (one request).

    Offline or with the hub out of reach, a repo that is complete in the cache still gets its
    plan, from the cached files (everything cached, nothing to fetch).
    """
    components(kind)
    if not _is_repo_id(repo_id):  # huggingface_hub would raise HFValidationError
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"{repo_id} is not a hub repo id",
            "give one such as openai/shap-e (owner/name); a model folder on disk needs no download",
            "model",
        )
    if is_offline_mode():
        local = _complete_snapshot(repo_id, kind, cache_dir)
        if local is not None:
            return local[1]
        refuse_offline(repo_id, kind)
    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except Exception as exc:
        local = _complete_snapshot(repo_id, kind, cache_dir)
        if local is not None:
            log.warning("%s: the hub did not answer (%s); using the cached copy", repo_id, exc)
            return local[1]
        raise hub_error(exc, repo_id, kind, "list the files of") from exc
    sizes, etags = {}, {}
    for s in info.siblings or []:
        sizes[s.rfilename] = int(s.lfs.size if s.lfs is not None else (s.size or 0))
        # The etag the file is stored under: the sha256 for LFS files, else the git blob id.
        etags[s.rfilename] = (s.lfs.sha256 if s.lfs is not None else s.blob_id) or ""
    files = select_files(sizes, kind, source=repo_id)
    revision = str(info.sha or "main")
    cache = _cache_str(cache_dir)
    storage = repo_storage(repo_id, cache)
    cached, partial = {}, {}
    for f in files:
        if isinstance(try_to_load_from_cache(repo_id, f, cache_dir=cache, revision=revision), str):
            cached[f] = sizes[f]
        elif etags[f] and (part := partial_path(storage, etags[f])).is_file():
            kept = part.stat().st_size
            if kept <= sizes[f]:  # a longer one is of no use: fetch.py starts that file over
                partial[f] = kept
    return DownloadPlan(
        repo_id=repo_id,
        files=tuple((f, sizes[f]) for f in files),
        total_bytes=sum(sizes[f] for f in files),
        revision=revision,
        cached_bytes=sum(cached.values()),
        partial_bytes=sum(partial.values()),
        on_disk=tuple((cached | partial).items()),
    )


def download(
    repo_id: str,
    *,
    kind: Kind,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Fetch what ``kind`` needs from ``repo_id`` into the cache; returns the snapshot folder.

    ``progress(done_bytes, total_bytes)`` runs as bytes arrive, across all files, never going
    backwards, and ends at (total, total); it starts from the bytes already on disk (cached files
    and partial ones). A ShapEError it raises (a cancel) stops the download and propagates;
    finished files stay in the cache, and the file in progress resumes on the next call. Files
    already in the cache are not fetched again, and a repo that is complete in the cache returns
    at once, without asking the hub.
    """
    local = _complete_snapshot(repo_id, kind, cache_dir)
    if local is not None:
        if progress is not None:
            progress(local[1].total_bytes, local[1].total_bytes)
        return local[0]
    plan = plan_download(repo_id, kind=kind, cache_dir=cache_dir)
    _check_disk(plan, cache_dir)
    counter = ByteCounter(plan.files, plan.on_disk, progress)
    cache = _cache_str(cache_dir)
    folder: Path | None = None
    log.info("downloading %s (%d files, %d bytes)", repo_id, len(plan.files), plan.needed_bytes)
    for name, _size in plan.files:
        counter.start_file(name)
        try:
            cached = try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=plan.revision)
            if not isinstance(cached, str) and not fetch(
                repo_id, name, commit=plan.revision, cache_dir=cache, report=counter.set_file
            ):
                counter.set_file(0)  # hf_hub_download fetches it from byte zero
            # With the file in place this only links it into the snapshot. Pinned to the listed
            # commit, so every file comes from the same snapshot.
            local = hf_hub_download(
                repo_id,
                name,
                revision=plan.revision,
                cache_dir=cache,
                tqdm_class=counter.bar_class,
            )
        except ShapEError:  # raised by the progress callback: a cancel
            raise
        except Exception as exc:
            raise hub_error(exc, repo_id, kind, f"download {name} of") from exc
        counter.finish_file()
        if name == "model_index.json":
            folder = Path(local).parent
    # Point refs/main at this commit (a no-op download), as snapshot_download would, so that
    # later offline look-ups of the repo id find this snapshot.
    try:
        main = Path(hf_hub_download(repo_id, "model_index.json", cache_dir=cache)).parent
    except Exception as exc:
        raise hub_error(exc, repo_id, kind, "record the downloaded revision of") from exc
    assert folder is not None  # select_files always includes model_index.json
    if main != folder:
        log.warning("%s changed on the hub during the download; run it again", repo_id)
    return check_folder(folder, kind)


def _complete_snapshot(
    repo_id: str, kind: Kind, cache_dir: str | Path | None
) -> tuple[Path, DownloadPlan] | None:
    """The cached snapshot and a nothing-to-fetch plan for it, when it is complete for ``kind``."""
    folder, problems = cached_snapshot(repo_id, kind=kind, cache_dir=cache_dir)
    if folder is None or problems:
        return None
    present = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    files = tuple(
        (f, (folder / f).stat().st_size) for f in select_files(present, kind, source=repo_id)
    )
    total = sum(size for _, size in files)
    plan = DownloadPlan(
        repo_id, files, total, revision=folder.name, cached_bytes=total, on_disk=files
    )
    return folder, plan


def select_files(repo_files: Iterable[str], kind: Kind, *, source: str) -> list[str]:
    """The files of a repo listing that ``kind`` needs (core/weights.py says which).

    Every configuration file, and for a component with weights the files ``pick_weights`` chose:
    not the legacy ``renderer/`` folder, not the README or pictures, not the pickled twins of
    safetensors files. ``source`` names the repo in errors. Raises ShapEError(MODEL_UNAVAILABLE)
    when a component is missing or offers only pickled weights where safetensors are required.
    """
    by_folder: dict[str, list[str]] = {}
    for path in repo_files:
        folder, _, name = path.rpartition("/")
        by_folder.setdefault(folder, []).append(name)
    if "model_index.json" not in by_folder.get("", []):
        raise unusable(source, "model_index.json is missing", "is it a diffusers Shap-E repo?")
    chosen = ["model_index.json"]
    for comp in components(kind):
        names = by_folder.get(comp)
        if not names:
            raise unusable(source, f"it has no {comp}/ folder", kind_hint(kind))
        if comp in CONFIG_ONLY:
            chosen += [f"{comp}/{n}" for n in sorted(names) if not is_weight_file(n)]
            continue
        picked = pick_weights(comp, names)
        if picked is None:
            pickles = refused_pickles(comp, names)
            raise unusable(
                source,
                f"{comp}/ has no safetensors weights"
                + (
                    f" (only {', '.join(pickles)}: pickled checkpoints are refused)"
                    if pickles
                    else ""
                ),
                "convert the weights to safetensors and point --model at that folder",
            )
        configs = [n for n in names if n.endswith(".json") and not is_weight_index(n)]
        chosen += [f"{comp}/{n}" for n in sorted(configs + list(picked.files))]
    return chosen


def _is_repo_id(text: str) -> bool:
    if "\\" in text or text.startswith(("/", ".", "~")) or re.match(r"^[A-Za-z]:", text):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _cache_str(cache_dir: str | Path | None) -> str | None:
    return None if cache_dir is None else str(Path(cache_dir).expanduser())


def _check_disk(plan: DownloadPlan, cache_dir: str | Path | None) -> None:
    target = Path(cache_dir).expanduser() if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if plan.needed_bytes > free:
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"{plan.repo_id} needs {plan.needed_bytes / 1e9:.2f} GB in {target}, "
            f"but only {free / 1e9:.2f} GB is free",
            "free some space, or put the cache on a bigger disk with HF_HOME or --cache-dir",
            "model",
        )
