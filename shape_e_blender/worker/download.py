"""Model weights: a local folder, or a hub repo id fetched into the Hugging Face cache.

Either way the result is one folder laid out like the hub repo (``model_index.json`` plus one
sub-folder per component), ready for ``from_pretrained(folder, subfolder=...)``.

What is fetched for each ``kind`` (nothing else: not the legacy ``renderer/`` folder, not the
README or pictures, not the pickled twins of safetensors files):

- text: prior, text_encoder, tokenizer, scheduler, shap_e_renderer
- image: prior, image_encoder, image_processor, scheduler, shap_e_renderer
- renderer (re-decoding a saved latent): shap_e_renderer

and within a component:

- prior/, text_encoder/, image_encoder/: the ``*.json`` configs and safetensors weights only.
  Full-precision ``model.safetensors`` / ``diffusion_pytorch_model.safetensors`` when the repo
  has them, otherwise the ``fp16`` variant (``*.fp16.safetensors``). A pickled checkpoint is
  never fetched for these: a component that has no safetensors at all is refused.
  The openai repos have fp32 weights only as pickles, so in practice this fetches the fp16
  safetensors (half the download). Loaded with ``torch_dtype``/``dtype=torch.float32`` the fp16
  values are up-cast exactly; the only loss is the fp16 rounding of the stored weights.
  ``weight_variant()`` tells the loader which ``variant=`` to pass.
- shap_e_renderer/: the config and the weights, safetensors if present, otherwise the pickled
  ``diffusion_pytorch_model.bin`` (the hub has nothing else; it also carries the marching-cubes
  table). That is the one pickle we accept; diffusers' from_pretrained reads it with
  ``torch.load(weights_only=True)``.
- tokenizer/, scheduler/, image_processor/: every file except weights-like ones.

Resuming: each file that is not in the cache is fetched by ``fetch.fetch`` into
``blobs/<etag>.incomplete`` of the cache and continued from there with an HTTP Range request, by
this call after a cut connection and by the next call after a cancel or a killed process; the
finished file is checked (size, and sha256 for LFS files) before it joins the cache. Progress
counts the bytes already on disk from the start. ``hf_hub_download`` then only links the file
into the snapshot (and fetches, its own way, a file whose etag is not a hex digest). See fetch.py.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..core.errors import MODEL_UNAVAILABLE, ShapEError
from . import fetch

log = logging.getLogger(__name__)

Kind = Literal["text", "image", "renderer"]
Progress = Callable[[int, int], None]

COMPONENTS: dict[str, tuple[str, ...]] = {
    "text": ("prior", "text_encoder", "tokenizer", "scheduler", "shap_e_renderer"),
    "image": ("prior", "image_encoder", "image_processor", "scheduler", "shap_e_renderer"),
    "renderer": ("shap_e_renderer",),
}
# Components whose weights may be a pickle, and then only where no safetensors exist (loaded with
# torch.load(weights_only=True)): the renderer exists on the hub only as a .bin; the image
# encoder's hub files could not be checked from here, and a missing safetensors file must not make
# image mode unusable. The prior and the text encoder have safetensors on the hub: pickles refused.
PICKLE_ALLOWED = ("shap_e_renderer", "image_encoder")

# Approximate parameter counts (DESIGN.md: diffusers 0.42 with random weights; CLIP ViT-L/14).
PARAM_COUNTS = {
    "prior": 316_000_000,
    "shap_e_renderer": 226_000_000,
    "text_encoder": 123_000_000,
    "image_encoder": 303_000_000,
}
BYTES_PER_PARAM_FP32 = 4


def vram_estimate(kind: Kind) -> int:
    """Approximate GPU memory for the weights of ``kind``, in bytes.

    Counted as fp32 weights (4 bytes a parameter), as held by a loader that keeps the weights in
    fp32 and runs fp16 through autocast: text about 2.5 GiB, image about 3.1 GiB. Activations
    come on top and are not counted here.
    """
    return sum(PARAM_COUNTS.get(c, 0) for c in _components(kind)) * BYTES_PER_PARAM_FP32


# ---- which files a component needs -----------------------------------------------------------

_SHARD = r"(?:-\d{5}-of-\d{5})?"
_SAFETENSORS = re.compile(
    rf"^(?:diffusion_pytorch_model|model)(?P<fp16>\.fp16)?{_SHARD}\.safetensors$"
)
_SAFETENSORS_INDEX = re.compile(
    r"^(?:diffusion_pytorch_model|model)\.safetensors\.index(?P<fp16>\.fp16)?\.json$"
)
_BIN = re.compile(rf"^(?:diffusion_pytorch_model|pytorch_model){_SHARD}\.bin$")
_BIN_INDEX = re.compile(r"^(?:diffusion_pytorch_model|pytorch_model)\.bin\.index\.json$")
_WEIGHT_SUFFIXES = (
    ".bin",
    ".safetensors",
    ".pt",
    ".pth",
    ".ckpt",
    ".pkl",
    ".pickle",
    ".msgpack",
    ".h5",
    ".onnx",
)
_CONFIG_FILES = {
    "scheduler": (("scheduler_config.json",),),
    "image_processor": (("preprocessor_config.json",),),
    # A slow CLIP tokenizer needs vocab.json and merges.txt; a fast one can do with tokenizer.json.
    "tokenizer": (("vocab.json", "merges.txt"), ("tokenizer.json",)),
}


def _components(kind: str) -> tuple[str, ...]:
    if kind not in COMPONENTS:
        raise ValueError(f"kind must be one of {sorted(COMPONENTS)}, not {kind!r}")
    return COMPONENTS[kind]


def _pick_weights(component: str, names: Iterable[str]) -> tuple[list[str], str | None] | None:
    """The weight files to use among ``names`` (file names inside the component folder).

    Returns (files, variant) or None when there is nothing acceptable.
    """
    names = sorted(names)
    for variant in (None, "fp16"):
        files = [
            n
            for n in names
            if (m := _SAFETENSORS.match(n) or _SAFETENSORS_INDEX.match(n))
            and (m.group("fp16") is not None) == (variant is not None)
        ]
        if any(_SAFETENSORS.match(n) for n in files):
            return files, variant
    if component in PICKLE_ALLOWED:
        files = [n for n in names if _BIN.match(n) or _BIN_INDEX.match(n)]
        if any(_BIN.match(n) for n in files):
            return files, None
    return None


def weight_variant(folder: str | Path, component: str) -> str | None:
    """The ``variant=`` to pass to ``from_pretrained`` for this component of ``folder``.

    "fp16" when the folder holds only ``*.fp16.safetensors`` weights (the openai repos' prior and
    CLIP encoders), None when it holds full-precision safetensors or (renderer only) a ``.bin``.
    """
    sub = Path(folder) / component
    names = [p.name for p in sub.iterdir()] if sub.is_dir() else []
    picked = _pick_weights(component, names)
    return picked[1] if picked else None


def select_files(repo_files: Iterable[str], kind: Kind, *, source: str) -> list[str]:
    """The files of a repo listing that ``kind`` needs (see the module docstring).

    ``source`` names the repo in errors. Raises ShapEError(MODEL_UNAVAILABLE) when a component
    is missing or offers only pickled weights where safetensors are required.
    """
    by_folder: dict[str, list[str]] = {}
    for path in repo_files:
        folder, _, name = path.rpartition("/")
        by_folder.setdefault(folder, []).append(name)
    if "model_index.json" not in by_folder.get("", []):
        raise _unusable(source, "model_index.json is missing", "is it a diffusers Shap-E repo?")
    chosen = ["model_index.json"]
    for comp in _components(kind):
        names = by_folder.get(comp)
        if not names:
            raise _unusable(source, f"it has no {comp}/ folder", _wrong_repo_hint(kind))
        if comp in _CONFIG_FILES:
            chosen += [f"{comp}/{n}" for n in sorted(names) if not n.endswith(_WEIGHT_SUFFIXES)]
            continue
        picked = _pick_weights(comp, names)
        if picked is None:
            pickles = [n for n in names if n.endswith(_WEIGHT_SUFFIXES)]
            raise _unusable(
                source,
                f"{comp}/ has no safetensors weights"
                + (
                    f" (only {', '.join(pickles)}: pickled checkpoints are refused)"
                    if pickles
                    else ""
                ),
                "convert the weights to safetensors and point --model at that folder",
            )
        weights, _variant = picked
        configs = [
            n
            for n in names
            if n.endswith(".json") and not (_SAFETENSORS_INDEX.match(n) or _BIN_INDEX.match(n))
        ]
        chosen += [f"{comp}/{n}" for n in sorted(configs + weights)]
    return chosen


def _unusable(source: str, what: str, hint: str) -> ShapEError:
    return ShapEError(MODEL_UNAVAILABLE, f"{source} cannot be used: {what}", hint, "model")


def _wrong_repo_hint(kind: str) -> str:
    if kind == "image":
        return "image input needs the image model, e.g. openai/shap-e-img2img"
    if kind == "text":
        return "text prompts need the text model, e.g. openai/shap-e"
    return "use a Shap-E repo or folder, e.g. openai/shap-e"


def folder_problems(folder: Path, kind: Kind) -> list[str]:
    """What ``folder`` lacks for ``kind``, as readable items; empty when it is complete."""
    problems = []
    if not (folder / "model_index.json").is_file():
        problems.append("model_index.json")
    for comp in _components(kind):
        sub = folder / comp
        if not sub.is_dir():
            problems.append(f"{comp}/")
            continue
        names = {p.name for p in sub.iterdir() if p.is_file()}
        if comp in _CONFIG_FILES:
            if not any(all(n in names for n in group) for group in _CONFIG_FILES[comp]):
                options = " or ".join(" + ".join(g) for g in _CONFIG_FILES[comp])
                problems.append(f"{comp}/{options}")
            continue
        if "config.json" not in names:
            problems.append(f"{comp}/config.json")
        picked = _pick_weights(comp, names)
        if picked is None:
            kinds = "safetensors or .bin" if comp in PICKLE_ALLOWED else "safetensors"
            problems.append(f"{comp}/ weights ({kinds})")
            continue
        problems += [f"{comp}/{s}" for s in _missing_shards(sub, picked[0])]
    return problems


def _missing_shards(sub: Path, files: list[str]) -> list[str]:
    missing = []
    for index in (n for n in files if n.endswith(".index.json") or ".index." in n):
        try:
            shards = set(
                json.loads((sub / index).read_text(encoding="utf-8"))["weight_map"].values()
            )
        except (OSError, ValueError, KeyError, AttributeError):
            missing.append(f"{index} (unreadable)")
            continue
        missing += sorted(s for s in shards if not (sub / s).is_file())
    return missing


def check_folder(folder: str | Path, kind: Kind) -> Path:
    """``folder`` when it has all that ``kind`` needs; else ShapEError naming what is missing."""
    folder = Path(folder)
    problems = folder_problems(folder, kind)
    if problems:
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"model folder {folder} is incomplete for {kind} input: missing {', '.join(problems)}",
            "point --model at a folder saved with save_pretrained() (it holds model_index.json and "
            f"one sub-folder per component), or {_wrong_repo_hint(kind)}",
            "model",
        )
    return folder


# ---- hub ids and the cache -------------------------------------------------------------------


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
    _components(kind)
    if not isinstance(model, str) or not model.strip():
        raise ShapEError(
            MODEL_UNAVAILABLE, "no model given", "pass a hub repo id or a folder", "model"
        )
    path = Path(model).expanduser()
    if path.is_dir():
        return check_folder(path, kind)
    if path.exists():
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"model {path} is a file, not a folder",
            "pass the folder that holds model_index.json, or a hub repo id",
            "model",
        )
    if not _is_repo_id(model):
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"model folder {path} does not exist",
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
            f"{model} {state}{_where(cache_dir)} and downloading is not allowed here",
            f"download it with `{_download_command(model, kind)}` or the add-on's Download "
            "button, or use a local copy with --model /path/to/folder",
            "model",
        )
    return download(model, kind=kind, cache_dir=cache_dir, progress=progress)


def cached_snapshot(
    repo_id: str, *, kind: Kind, cache_dir: str | Path | None = None
) -> tuple[Path | None, list[str]]:
    """The cached snapshot of the repo's main branch and what it lacks for ``kind``; no network."""
    from huggingface_hub import try_to_load_from_cache

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
    from huggingface_hub import HfApi, is_offline_mode, try_to_load_from_cache

    _components(kind)
    if is_offline_mode():
        local = _complete_snapshot(repo_id, kind, cache_dir)
        if local is not None:
            return local[1]
        _refuse_offline(repo_id, kind)
    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except Exception as exc:
        local = _complete_snapshot(repo_id, kind, cache_dir)
        if local is not None:
            log.warning("%s: the hub did not answer (%s); using the cached copy", repo_id, exc)
            return local[1]
        raise _hub_error(exc, repo_id, kind, "list the files of") from exc
    sizes, etags = {}, {}
    for s in info.siblings or []:
        sizes[s.rfilename] = int(s.lfs.size if s.lfs is not None else (s.size or 0))
        # The etag the file is stored under: the sha256 for LFS files, else the git blob id.
        etags[s.rfilename] = (s.lfs.sha256 if s.lfs is not None else s.blob_id) or ""
    files = select_files(sizes, kind, source=repo_id)
    revision = str(info.sha or "main")
    cache = _cache_str(cache_dir)
    storage = fetch.repo_storage(repo_id, cache)
    cached, partial = {}, {}
    for f in files:
        if isinstance(try_to_load_from_cache(repo_id, f, cache_dir=cache, revision=revision), str):
            cached[f] = sizes[f]
        elif etags[f] and (part := fetch.partial_path(storage, etags[f])).is_file():
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
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    local = _complete_snapshot(repo_id, kind, cache_dir)
    if local is not None:
        if progress is not None:
            progress(local[1].total_bytes, local[1].total_bytes)
        return local[0]
    plan = plan_download(repo_id, kind=kind, cache_dir=cache_dir)
    _check_disk(plan, cache_dir)
    counter = _ByteCounter(plan, progress)
    cache = _cache_str(cache_dir)
    folder: Path | None = None
    log.info("downloading %s (%d files, %d bytes)", repo_id, len(plan.files), plan.needed_bytes)
    for name, _size in plan.files:
        counter.start_file(name)
        try:
            cached = try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=plan.revision)
            if not isinstance(cached, str) and not fetch.fetch(
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
            raise _hub_error(exc, repo_id, kind, f"download {name} of") from exc
        counter.finish_file()
        if name == "model_index.json":
            folder = Path(local).parent
    # Point refs/main at this commit (a no-op download), as snapshot_download would, so that
    # later offline look-ups of the repo id find this snapshot.
    try:
        main = Path(hf_hub_download(repo_id, "model_index.json", cache_dir=cache)).parent
    except Exception as exc:
        raise _hub_error(exc, repo_id, kind, "record the downloaded revision of") from exc
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


class _ByteCounter:
    """One monotonic (done, total) over the whole download: bytes on disk, file by file.

    It starts from what the plan found on disk (cached files, partial ones). A file that starts
    over (a damaged partial, a server that ignored a range) lowers its own count; the total
    reported then waits until the bytes are back, so it never goes backwards.
    """

    def __init__(self, plan: DownloadPlan, callback: Progress | None) -> None:
        self.sizes = dict(plan.files)
        self.total = plan.total_bytes
        self.callback = callback
        self.done = {name: min(n, self.sizes[name]) for name, n in plan.on_disk}
        self.name = ""
        self.reported = -1
        self.lock = threading.Lock()  # a Xet transfer may report from its own threads
        self.bar_class = _bar_class(self)
        self._emit()

    def start_file(self, name: str) -> None:
        self.name = name

    def set_file(self, n: int) -> None:
        """The current file has ``n`` bytes on disk now (called per chunk: a cancel point)."""
        with self.lock:
            self.done[self.name] = min(max(n, 0), self.sizes[self.name])
            self._emit(force=True)

    def add(self, n: int) -> None:
        # A retry that restarts a file reports negative updates: clamp, never go backwards.
        with self.lock:
            self.done[self.name] = min(
                max(self.done.get(self.name, 0) + n, 0), self.sizes[self.name]
            )
            self._emit()

    def finish_file(self) -> None:
        with self.lock:
            self.done[self.name] = self.sizes[self.name]
            self._emit()

    def _emit(self, force: bool = False) -> None:
        """Report a new high; with ``force``, also repeat the last one, so a cancel is seen."""
        done = sum(self.done.values())
        if done > self.reported or (force and self.reported >= 0):
            self.reported = max(done, self.reported)
            if self.callback is not None:
                self.callback(self.reported, self.total)


def _bar_class(counter: _ByteCounter) -> type:
    """A silent tqdm whose byte updates go to ``counter``: the tqdm_class hook of hf_hub_download.

    It defines update_transfer so that a Xet download reports through this one bar as well.
    """
    from tqdm.auto import tqdm

    class _Bar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            kwargs.pop("name", None)
            super().__init__(*args, **kwargs)
            if kwargs.get("initial"):
                counter.add(int(kwargs["initial"]))

        def update(self, n: float | None = 1) -> bool | None:
            counter.add(int(n or 0))
            return None

        def update_transfer(self, n: float | None = 1) -> None:
            """Network bytes of a Xet transfer; the bytes written arrive through update()."""

    return _Bar


# ---- errors and small helpers ----------------------------------------------------------------


def _is_repo_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if "\\" in text or text.startswith(("/", ".", "~")) or re.match(r"^[A-Za-z]:", text):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _cache_str(cache_dir: str | Path | None) -> str | None:
    return None if cache_dir is None else str(Path(cache_dir).expanduser())


def _where(cache_dir: str | Path | None) -> str:
    if cache_dir is not None:
        return f" ({cache_dir})"
    from huggingface_hub import constants

    return f" ({constants.HF_HUB_CACHE})"


def _download_command(repo_id: str, kind: str) -> str:
    from ..core.params import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL

    cmd = "python -m shape_e_blender download"
    if repo_id == DEFAULT_TEXT_MODEL and kind != "image":
        return cmd
    if repo_id == DEFAULT_IMAGE_MODEL:
        return f"{cmd} --image"
    return f"{cmd} --model {repo_id}" + (" --image" if kind == "image" else "")


def _local_hint(repo_id: str) -> str:
    return (
        f"or copy {repo_id} from another machine and pass its folder with --model /path/to/folder"
    )


def _refuse_offline(repo_id: str, kind: str) -> None:
    from huggingface_hub import is_offline_mode

    if is_offline_mode():
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"cannot download {repo_id}: offline mode is on (HF_HUB_OFFLINE)",
            f"unset HF_HUB_OFFLINE and run `{_download_command(repo_id, kind)}`, "
            + _local_hint(repo_id),
            "model",
        )


def _hub_error(exc: BaseException, repo_id: str, kind: str, action: str) -> ShapEError:
    """Turn whatever huggingface_hub raised into one readable MODEL_UNAVAILABLE error."""
    if isinstance(exc, ShapEError):
        return exc
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    http = _http_module()
    endpoint = constants.ENDPOINT
    retry = (
        f"run `{_download_command(repo_id, kind)}` again: finished files are kept and a cut-off "
        "file resumes where it stopped"
    )
    if isinstance(exc, OfflineModeIsEnabled):
        msg, hint = (
            "offline mode is on (HF_HUB_OFFLINE)",
            f"unset HF_HUB_OFFLINE, {_local_hint(repo_id)}",
        )
    elif isinstance(exc, GatedRepoError):
        msg = f"{repo_id} is gated on {endpoint}"
        hint = "accept its terms on the hub and set HF_TOKEN, " + _local_hint(repo_id)
    elif isinstance(exc, RepositoryNotFoundError):
        msg = f"there is no repo {repo_id} on {endpoint} (or it is private)"
        hint = "check the id (e.g. openai/shap-e), set HF_TOKEN for a private repo, " + _local_hint(
            repo_id
        )
    elif isinstance(exc, RevisionNotFoundError):
        msg, hint = f"{repo_id} has no such revision on {endpoint}", retry
    elif isinstance(exc, LocalEntryNotFoundError):
        # hf_hub_download's metadata request failed (after its own retries) and the file is not
        # cached: the real reason is the chained error.
        cause = exc.__cause__ or exc.__context__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        msg = f"the hub at {endpoint} did not answer ({why})"
        hint = f"check the network or proxy and {retry}, " + _local_hint(repo_id)
    elif isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "an error"
        msg = f"the hub at {endpoint} answered {status}"
        hint = f"try again later ({retry}), " + _local_hint(repo_id)
    elif http is not None and isinstance(exc, http.HTTPError):
        msg = f"cannot reach the hub at {endpoint} ({type(exc).__name__}: {exc})"
        hint = f"check the network or proxy and {retry}, " + _local_hint(repo_id)
    elif isinstance(exc, fetch.DamagedDownload):
        msg = str(exc)
        hint = (
            f"run `{_download_command(repo_id, kind)}` again to fetch it afresh; if that fails "
            f"the same way, a proxy or mirror between here and {endpoint} alters the download, "
            + _local_hint(repo_id)
        )
    elif isinstance(exc, OSError):  # disk full, permissions, a size mismatch after a transfer
        msg, hint = f"{type(exc).__name__}: {exc}", f"check free disk space and {retry}"
    else:
        msg, hint = f"{type(exc).__name__}: {exc}", f"{retry}, " + _local_hint(repo_id)
    log.debug("hub error while trying to %s %s", action, repo_id, exc_info=exc)
    return ShapEError(MODEL_UNAVAILABLE, f"could not {action} {repo_id}: {msg}", hint, "model")


def _http_module() -> Any:
    """The HTTP client huggingface_hub raises from: httpx2 in 2.x, httpx in 1.x."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        pass
    try:
        import httpx

        return httpx
    except ImportError:
        return None


def _check_disk(plan: DownloadPlan, cache_dir: str | Path | None) -> None:
    from huggingface_hub import constants

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
