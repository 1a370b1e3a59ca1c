"""Loading Shap-E pipelines from local folders, component by component, in float32 on the cpu.

Which weight files each component loads from is decided by core/weights.py, the same rule the
download fetches by. The cache (models/cache.py) moves what is loaded to the job's device.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import HeunDiscreteScheduler, PriorTransformer
from diffusers.pipelines.shap_e import ShapEImg2ImgPipeline, ShapEPipeline, ShapERenderer
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModel
from transformers.utils import logging as transformers_logging

try:
    from transformers import CLIPImageProcessorPil
except ImportError:  # transformers 4: CLIPImageProcessor is the PIL one
    from transformers import CLIPImageProcessor as CLIPImageProcessorPil

from ...core.errors import MODEL_UNAVAILABLE, ShapEError
from ...core.files import is_dir
from ...core.weights import Weights, component_problems, weights_in

log = logging.getLogger(__name__)


def quiet_progress_bars(pipe: Any = None) -> None:
    """Silence tqdm bars: stderr is the worker's log, and progress goes by protocol.

    The libraries' own bars (loading, downloads) always; a pipeline's sampling bar, which
    diffusers draws with tqdm directly, for ``pipe``.
    """
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    if pipe is not None:
        pipe.set_progress_bar_config(disable=True)


def image_processor_class() -> type:
    """CLIP's PIL image processor: what the released pipeline was made with.

    transformers 5 made the torchvision-backed processor the default ``CLIPImageProcessor``
    (falling back, with a warning, to the PIL one without torchvision). The worker environment
    has no torchvision, and the two resize differently; naming the PIL one gives the same input
    everywhere.
    """
    return CLIPImageProcessorPil


@contextmanager
def _loading(folder: Path, component: str) -> Iterator[None]:
    """Turn a failure to read a component's files into MODEL_UNAVAILABLE, keeping the cause."""
    quiet_progress_bars()
    try:
        yield
    except (ShapEError, MemoryError):  # out of memory is the machine's, mapped by the caller
        raise
    except Exception as exc:
        # The files are the user's: damaged, cut short, or of another model. What that raises
        # is whatever the libraries happen to raise (OSError, ValueError, SafetensorError, a
        # TypeError for a config value of the wrong type, a bare Exception from tokenizers), so
        # any failure here is told as the component's, with its cause; the traceback is logged.
        log.exception("loading %s from %s failed", component, folder)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"could not load {component} from {folder}: {detail}",
            "the files may be incomplete or damaged: download the model again",
            "model",
        ) from exc


def _check(folder: Path, component: str) -> None:
    """MODEL_UNAVAILABLE, naming the folder and the component, unless its files are all there
    and its JSON files (config, tokenizer vocabulary, ...) each hold a JSON object."""
    problems = component_problems(folder, component)
    if problems:
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"model folder {folder} has no usable {component}: missing {', '.join(problems)}",
            "point the model at a complete Shap-E folder (laid out like the hub repo "
            "openai/shap-e or openai/shap-e-img2img), or let the worker download it",
            "model",
        )
    # The libraries read these with ** or index them: a damaged one raised TypeError, or a bare
    # Exception from the tokenizers library, which said nothing about the file.
    for file in sorted((folder / component).glob("*.json")):
        try:
            ok = isinstance(json.loads(file.read_bytes()), dict)
        except (OSError, ValueError, RecursionError) as exc:
            detail = f"is not JSON ({str(exc)[:120]})"
        else:
            detail = "" if ok else "does not hold a JSON object"
        if detail:
            raise ShapEError(
                MODEL_UNAVAILABLE,
                f"model folder {folder}: {component}/{file.name} {detail}",
                "the files may be incomplete or damaged: download the model again",
                "model",
            )


def _whole(model: Any) -> Any:
    """``model``, unless the weights lacked tensors its config asks for: those stay on torch's
    meta device and fail only later, when the model moves to the job's device."""
    missing = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if missing:
        raise ValueError(
            f"the weights lack {len(missing)} of the tensors its config.json asks for (such as "
            f"{missing[0]}): the config and the weights are of different models"
        )
    return model


def _weights(folder: Path, component: str) -> Weights:
    _check(folder, component)
    weights = weights_in(folder, component)
    assert weights is not None  # _check found them
    # The renderer's .bin is all the hub has; for an encoder a pickle is a fallback worth noting.
    if weights.pickle and component != "shap_e_renderer":
        log.warning("%s/%s has no safetensors: loading %s", folder, component, weights.files[0])
    return weights


def _load_model(cls: type, folder: Path, component: str) -> Any:
    """A diffusers model of the folder (the prior, the renderer) in float32."""
    weights = _weights(folder, component)
    with _loading(folder, component):
        return _whole(
            cls.from_pretrained(
                folder,
                subfolder=component,
                use_safetensors=not weights.pickle,
                variant=weights.variant,
                torch_dtype=torch.float32,
                local_files_only=True,
            )
        )


def _load_encoder(folder: Path, component: str, cls: type) -> torch.nn.Module:
    weights = _weights(folder, component)
    # dtype explicitly: transformers 5 would otherwise keep the checkpoint's float16.
    with _loading(folder, component):
        return _whole(
            cls.from_pretrained(
                folder / component,
                use_safetensors=not weights.pickle,
                variant=weights.variant,
                dtype=torch.float32,
                local_files_only=True,
            )
        )


def load_renderer(folder: Path) -> ShapERenderer:
    """The renderer in float32: safetensors if present, else the hub's pickled .bin.

    diffusers 0.42.1 reads .bin checkpoints with ``torch.load(..., weights_only=True)``
    (diffusers/models/model_loading_utils.py, load_state_dict), so the pickle cannot run code.
    ``use_safetensors`` follows the files found: True on the hub's .bin-only folder fails
    (diffusers issue 5308), and unset logs a warning about "unsafe serialization" on every load.
    """
    return _load_model(ShapERenderer, Path(folder), "shap_e_renderer").eval()


def _load_scheduler(folder: Path) -> HeunDiscreteScheduler:
    _check(folder, "scheduler")
    with _loading(folder, "scheduler"):
        scheduler = HeunDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
        # A config value of the wrong type is read only when steps are set: at sampling, where
        # it would read as a failure of the job rather than of the model's files.
        scheduler.set_timesteps(2)
        return scheduler


def load_text_pipeline(folder: Path, renderer: ShapERenderer | None = None) -> ShapEPipeline:
    """Load ShapEPipeline component by component, in float32, on the cpu."""
    return _load_pipeline(ShapEPipeline, folder, renderer, _text_condition)


def load_image_pipeline(
    folder: Path, renderer: ShapERenderer | None = None
) -> ShapEImg2ImgPipeline:
    """Load ShapEImg2ImgPipeline component by component, in float32, on the cpu."""
    return _load_pipeline(ShapEImg2ImgPipeline, folder, renderer, _image_condition)


def _load_pipeline(cls: type, folder: Path, renderer: ShapERenderer | None, condition: Any) -> Any:
    """The prior, what ``condition(folder)`` loads (encoder and its input processing), the
    scheduler and the renderer (``renderer`` when one is already loaded), in that order."""
    folder = _existing(folder)
    prior = _load_model(PriorTransformer, folder, "prior").eval()
    pipe = cls(
        prior=prior,
        **condition(folder),
        scheduler=_load_scheduler(folder),
        shap_e_renderer=renderer if renderer is not None else load_renderer(folder),
    )
    quiet_progress_bars(pipe)
    return pipe


def _text_condition(folder: Path) -> dict[str, Any]:
    encoder = _load_encoder(folder, "text_encoder", CLIPTextModelWithProjection)
    _check(folder, "tokenizer")
    with _loading(folder, "tokenizer"):
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    return {"text_encoder": encoder.eval(), "tokenizer": tokenizer}


def _image_condition(folder: Path) -> dict[str, Any]:
    encoder = _load_encoder(folder, "image_encoder", CLIPVisionModel)
    _check(folder, "image_processor")
    with _loading(folder, "image_processor"):
        processor = image_processor_class().from_pretrained(folder / "image_processor")
    return {"image_encoder": encoder.eval(), "image_processor": processor}


def _existing(folder: Path) -> Path:
    folder = Path(folder)
    if not is_dir(folder):
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"model folder {folder} does not exist",
            "check the model path, or give a hub id such as openai/shap-e",
            "model",
        )
    return folder
