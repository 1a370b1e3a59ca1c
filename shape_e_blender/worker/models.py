"""Devices, precision, and loading Shap-E pipelines from local folders, kept warm between jobs.

Weights are always held in float32. Lower precision comes from autocast while sampling
(worker/sampling.py), so the sampler state stays float32 and the renderer, whose positional
encoding reaches octave 2^14, never runs in half precision.
"""

from __future__ import annotations

import gc
import logging
import pickle
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from diffusers import HeunDiscreteScheduler, PriorTransformer
from diffusers.pipelines.shap_e import ShapEImg2ImgPipeline, ShapEPipeline, ShapERenderer
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModel
from transformers.utils import logging as transformers_logging

from ..core.errors import DEVICE_UNAVAILABLE, INVALID_PARAMS, MODEL_UNAVAILABLE, ShapEError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Weight files per component, in order of preference. The hub repos ship the prior and the
# encoders as float16 safetensors ("fp16" variant) next to float32 pickles; those load upcast to
# float32. The renderer exists only as a pickle (diffusion_pytorch_model.bin).
_DIFFUSERS_WEIGHTS = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
)
_TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.fp16.safetensors")
_SHARD_INDEX = ".index.json"
_PICKLES = ("diffusion_pytorch_model.bin", "pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")


@dataclass(frozen=True)
class DeviceChoice:
    """The torch device actually used and the resolved precision.

    ``precision`` applies to the prior and the CLIP encoder through autocast; the renderer always
    runs in float32.
    """

    device: str  # "cuda:0", "mps" or "cpu"
    precision: str  # "fp32", "fp16" or "bf16"

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _available() -> str:
    names = (
        [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return ", ".join(names)


def resolve_device(device: str = "auto", precision: str = "auto") -> DeviceChoice:
    """Turn the request's ``device`` and ``precision`` into what will really be used.

    auto device: cuda, then mps, then cpu. auto precision: fp16 on cuda, fp32 elsewhere.
    fp16 on cpu is refused rather than silently changed: CPU autocast in float16 is slow and
    poorly supported, while bf16 works there.
    """
    dev = (device or "auto").lower()
    prec = (precision or "auto").lower()
    if prec not in ("auto", *DTYPES):
        raise ShapEError(
            INVALID_PARAMS,
            f"precision: {precision!r} is not a precision",
            "use auto, fp32, fp16 or bf16",
            "precision",
        )

    if dev == "auto":
        if torch.cuda.is_available():
            dev = f"cuda:{torch.cuda.current_device()}"
        elif _mps_available():
            dev = "mps"
        else:
            dev = "cpu"
    elif dev == "cuda" or dev.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ShapEError(
                DEVICE_UNAVAILABLE,
                f"device {device!r} is not available: this torch sees no CUDA GPU"
                + ("" if torch.version.cuda else " (it is a CPU-only build)"),
                f"choose auto or one of: {_available()}; for a GPU install the CUDA worker "
                "environment",
                "device",
            )
        index = torch.cuda.current_device() if dev == "cuda" else int(dev.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise ShapEError(
                DEVICE_UNAVAILABLE,
                f"device {device!r} is not available: there are "
                f"{torch.cuda.device_count()} CUDA GPU(s)",
                f"choose one of: {_available()}",
                "device",
            )
        dev = f"cuda:{index}"
    elif dev == "mps":
        if not _mps_available():
            raise ShapEError(
                DEVICE_UNAVAILABLE,
                "device 'mps' is not available (it needs Apple silicon and macOS 12.3 or later)",
                f"choose auto or one of: {_available()}",
                "device",
            )
    elif dev != "cpu":
        raise ShapEError(
            INVALID_PARAMS,
            f"device: {device!r} is not a device",
            "use auto, cuda, cuda:N, mps or cpu",
            "device",
        )

    kind = torch.device(dev).type
    if prec == "auto":
        prec = "fp16" if kind == "cuda" else "fp32"
    if kind == "cpu" and prec == "fp16":
        raise ShapEError(
            INVALID_PARAMS,
            "precision: fp16 is not supported on the cpu",
            "choose fp32 or bf16 on the cpu (auto picks fp32), or run on a GPU",
            "precision",
        )
    if kind == "cuda" and prec == "bf16" and not torch.cuda.is_bf16_supported():
        raise ShapEError(
            INVALID_PARAMS,
            f"precision: {torch.cuda.get_device_name(dev)} does not support bf16",
            "choose fp16 (auto) or fp32",
            "precision",
        )
    return DeviceChoice(device=dev, precision=prec)


def device_report() -> list[dict[str, Any]]:
    """The devices this worker can use, as sent in ``hello``; memory in bytes, None if unknown."""
    out: list[dict[str, Any]] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            # Free memory needs a CUDA context on that device (hundreds of MB each): ask only
            # where this process already has one, i.e. after a job ran there.
            free = None
            if torch.cuda.is_initialized() and torch.cuda.memory_reserved(i) > 0:
                free = int(torch.cuda.mem_get_info(i)[0])
            out.append(
                {
                    "name": f"cuda:{i}",
                    "type": "cuda",
                    "label": props.name,
                    "memory_total": int(props.total_memory),
                    "memory_free": free,
                }
            )
    if _mps_available():
        total = None
        if hasattr(torch, "mps") and hasattr(torch.mps, "recommended_max_memory"):
            total = int(torch.mps.recommended_max_memory())
        out.append(
            {
                "name": "mps",
                "type": "mps",
                "label": "Apple GPU (mps)",
                "memory_total": total,
                "memory_free": None,
            }
        )
    out.append(
        {
            "name": "cpu",
            "type": "cpu",
            "label": platform.processor() or platform.machine() or "cpu",
            "memory_total": None,
            "memory_free": None,
        }
    )
    return out


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a result, as sent in ``hello`` and each result."""
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "transformers", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    return out


def image_processor_class() -> type:
    """CLIP's PIL image processor: what the released pipeline was made with.

    transformers 5 made the torchvision-backed processor the default ``CLIPImageProcessor``
    (falling back, with a warning, to the PIL one without torchvision). The worker environment
    has no torchvision, and the two resize differently; naming the PIL one gives the same input
    everywhere.
    """
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:  # transformers 4: CLIPImageProcessor is the PIL one
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil
    return CLIPImageProcessorPil


# --- loading -----------------------------------------------------------------------------------


def quiet_progress_bars() -> None:
    """Silence the libraries' tqdm bars: stderr is the worker's log, progress goes by protocol."""
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()


@contextmanager
def _loading(folder: Path, component: str) -> Iterator[None]:
    """Turn a failure to read a component's files into MODEL_UNAVAILABLE, keeping the cause."""
    quiet_progress_bars()
    try:
        yield
    except ShapEError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        # What unreadable, truncated or mismatched files raise (safetensors' errors derive from
        # these too). Anything else (a TypeError from a library change, MemoryError) is a real
        # failure and keeps its own type and traceback.
        log.exception("loading %s from %s failed", component, folder)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"could not load {component} from {folder}: {detail}",
            "the files may be incomplete or damaged: download the model again",
            "model",
        ) from exc


def _missing(folder: Path, component: str, what: str) -> ShapEError:
    return ShapEError(
        MODEL_UNAVAILABLE,
        f"model folder {folder} has no usable {component}: {what}",
        "point the model at a complete Shap-E folder (laid out like the hub repo "
        "openai/shap-e or openai/shap-e-img2img), or let the worker download it",
        "model",
    )


_NO_SAFETENSORS = "pickle"  # _weights_variant's answer for a pickle-only component


def _weights_variant(
    folder: Path, component: str, names: tuple[str, str], *, pickle_ok: bool = False
) -> str | None:
    """The variant to load (None = the plain file), refusing components with only pickles.

    With ``pickle_ok`` a component with no safetensors at all answers _NO_SAFETENSORS: the caller
    then loads its pickle, which both diffusers and transformers read with weights_only=True.
    """
    sub = folder / component
    if not (sub / "config.json").is_file():
        raise _missing(folder, component, f"{component}/config.json is missing")
    plain, fp16 = names
    if (sub / plain).is_file() or (sub / (plain + _SHARD_INDEX)).is_file():
        return None
    if (sub / fp16).is_file():
        return "fp16"
    pickles = [p for p in _PICKLES if (sub / p).is_file()]
    if pickles and pickle_ok:
        log.warning("%s/%s has no safetensors: loading %s", folder, component, pickles[0])
        return _NO_SAFETENSORS
    if pickles:
        raise _missing(
            folder,
            component,
            f"it has only a pickled checkpoint ({pickles[0]}) and pickles are not loaded for it",
        )
    raise _missing(folder, component, f"no {plain} or {fp16} in {component}/")


def _require(folder: Path, component: str, *files: str) -> None:
    for name in files:
        if not (folder / component / name).is_file():
            raise _missing(folder, component, f"{component}/{name} is missing")


def _load_prior(folder: Path) -> PriorTransformer:
    variant = _weights_variant(folder, "prior", _DIFFUSERS_WEIGHTS)
    with _loading(folder, "prior"):
        return PriorTransformer.from_pretrained(
            folder,
            subfolder="prior",
            use_safetensors=True,
            variant=variant,
            torch_dtype=torch.float32,
            local_files_only=True,
        )


def _load_encoder(folder: Path, component: str, cls: type) -> torch.nn.Module:
    # Only the image encoder may fall back to a pickle (see download.PICKLE_ALLOWED).
    variant = _weights_variant(
        folder, component, _TRANSFORMERS_WEIGHTS, pickle_ok=component == "image_encoder"
    )
    pickle = variant == _NO_SAFETENSORS
    # dtype explicitly: transformers 5 would otherwise keep the checkpoint's float16.
    with _loading(folder, component):
        return cls.from_pretrained(
            folder / component,
            use_safetensors=not pickle,
            variant=None if pickle else variant,
            dtype=torch.float32,
            local_files_only=True,
        )


def load_renderer(folder: Path) -> ShapERenderer:
    """The renderer in float32: safetensors if present, else the hub's pickled .bin.

    diffusers 0.42.1 reads .bin checkpoints with ``torch.load(..., weights_only=True)``
    (diffusers/models/model_loading_utils.py, load_state_dict), so the pickle cannot run code.
    ``use_safetensors`` follows the files found: True on the hub's .bin-only folder fails
    (diffusers issue 5308), and unset logs a warning about "unsafe serialization" on every load.
    """
    sub = folder / "shap_e_renderer"
    if not (sub / "config.json").is_file():
        raise _missing(folder, "shap_e_renderer", "shap_e_renderer/config.json is missing")
    plain, fp16 = _DIFFUSERS_WEIGHTS
    if (sub / plain).is_file():
        variant, safetensors = None, True
    elif (sub / fp16).is_file():  # safetensors before pickles, even upcast from float16
        variant, safetensors = "fp16", True
    elif (sub / "diffusion_pytorch_model.bin").is_file():
        variant, safetensors = None, False
    else:
        raise _missing(folder, "shap_e_renderer", "no weights in shap_e_renderer/")
    with _loading(folder, "shap_e_renderer"):
        renderer = ShapERenderer.from_pretrained(
            folder,
            subfolder="shap_e_renderer",
            use_safetensors=safetensors,
            variant=variant,
            torch_dtype=torch.float32,
            local_files_only=True,
        )
    return renderer.eval()


def _load_scheduler(folder: Path) -> HeunDiscreteScheduler:
    _require(folder, "scheduler", "scheduler_config.json")
    with _loading(folder, "scheduler"):
        return HeunDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")


def load_text_pipeline(folder: Path, renderer: ShapERenderer | None = None) -> ShapEPipeline:
    """Load ShapEPipeline component by component, in float32, on the cpu."""
    folder = Path(folder)
    _check_folder(folder)
    prior = _load_prior(folder)
    encoder = _load_encoder(folder, "text_encoder", CLIPTextModelWithProjection)
    _require(folder, "tokenizer", "tokenizer_config.json")
    with _loading(folder, "tokenizer"):
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    pipe = ShapEPipeline(
        prior=prior.eval(),
        text_encoder=encoder.eval(),
        tokenizer=tokenizer,
        scheduler=_load_scheduler(folder),
        shap_e_renderer=renderer if renderer is not None else load_renderer(folder),
    )
    pipe.set_progress_bar_config(disable=True)  # stderr is the worker's log, not a tqdm bar
    return pipe


def load_image_pipeline(
    folder: Path, renderer: ShapERenderer | None = None
) -> ShapEImg2ImgPipeline:
    """Load ShapEImg2ImgPipeline component by component, in float32, on the cpu."""
    folder = Path(folder)
    _check_folder(folder)
    prior = _load_prior(folder)
    encoder = _load_encoder(folder, "image_encoder", CLIPVisionModel)
    _require(folder, "image_processor", "preprocessor_config.json")
    with _loading(folder, "image_processor"):
        processor = image_processor_class().from_pretrained(folder / "image_processor")
    pipe = ShapEImg2ImgPipeline(
        prior=prior.eval(),
        image_encoder=encoder.eval(),
        image_processor=processor,
        scheduler=_load_scheduler(folder),
        shap_e_renderer=renderer if renderer is not None else load_renderer(folder),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"model folder {folder} does not exist",
            "check the model path, or give a hub id such as openai/shap-e",
            "model",
        )


# --- cache -------------------------------------------------------------------------------------


@dataclass
class _Slot:
    folder: Path
    value: Any


class ModelCache:
    """Keeps loaded pipelines warm between jobs (one text pipeline, one image pipeline, renderers).

    Loading another folder for the same kind frees the previous one; loading the same folder
    again returns the same object, moved to the requested device if needed. A renderer asked for
    on its own is shared with a pipeline loaded from the same folder.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._text: _Slot | None = None
        self._image: _Slot | None = None
        self._renderer: _Slot | None = None  # a renderer loaded without its pipeline

    def text_pipeline(self, folder: Path, choice: DeviceChoice) -> ShapEPipeline:
        with self._lock:
            key = Path(folder).resolve()
            if self._text is None or self._text.folder != key:
                self._text = None
                _free()
                self._text = _Slot(key, load_text_pipeline(key, self._spare_renderer(key)))
            return _to(self._text.value, choice)

    def image_pipeline(self, folder: Path, choice: DeviceChoice) -> ShapEImg2ImgPipeline:
        with self._lock:
            key = Path(folder).resolve()
            if self._image is None or self._image.folder != key:
                self._image = None
                _free()
                self._image = _Slot(key, load_image_pipeline(key, self._spare_renderer(key)))
            return _to(self._image.value, choice)

    def renderer(self, folder: Path, choice: DeviceChoice) -> ShapERenderer:
        """float32, eval mode, on ``choice.device``."""
        with self._lock:
            key = Path(folder).resolve()
            for slot in (self._text, self._image):
                if slot is not None and slot.folder == key:
                    return slot.value.shap_e_renderer.to(choice.device)
            if self._renderer is None or self._renderer.folder != key:
                self._renderer = None
                _free()
                self._renderer = _Slot(key, load_renderer(key))
            return self._renderer.value.to(choice.device)

    def is_loaded(self, kind: str, folder: Path) -> bool:
        """Whether ``kind`` ("text", "image" or "renderer") from ``folder`` is already loaded."""
        key = Path(folder).resolve()
        with self._lock:
            if kind == "renderer":
                slots = (self._text, self._image, self._renderer)
            else:
                slots = ({"text": self._text, "image": self._image}[kind],)
            return any(slot is not None and slot.folder == key for slot in slots)

    def loaded(self) -> list[str]:
        # No lock: the protocol's reader thread asks while a job may hold the lock for a whole
        # load. Reading the three slot references is atomic; a load in progress shows up after.
        slots = (("text", self._text), ("image", self._image), ("renderer", self._renderer))
        return [f"{kind}:{slot.folder}" for kind, slot in slots if slot is not None]

    def clear(self) -> None:
        with self._lock:
            self._text = self._image = self._renderer = None
            _free()

    def _spare_renderer(self, key: Path) -> ShapERenderer | None:
        """A renderer already loaded from ``key``, handed over to the pipeline being loaded."""
        for slot in (self._text, self._image):
            if slot is not None and slot.folder == key:
                return slot.value.shap_e_renderer
        if self._renderer is not None and self._renderer.folder == key:
            renderer, self._renderer = self._renderer.value, None
            return renderer
        return None


def _to(pipe: Any, choice: DeviceChoice) -> Any:
    return pipe.to(choice.device)  # cheap when the modules are already there


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.debug("freed unused models")
