"""The loaded models, kept warm between jobs: one text pipeline, one image pipeline, renderers."""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.pipelines.shap_e import ShapEImg2ImgPipeline, ShapEPipeline, ShapERenderer

from .devices import DeviceChoice
from .loading import load_image_pipeline, load_renderer, load_text_pipeline

log = logging.getLogger(__name__)

KINDS = ("text", "image", "renderer")
_PIPELINES = {"text": load_text_pipeline, "image": load_image_pipeline}


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
        # "renderer" holds a renderer loaded without its pipeline.
        self._slots: dict[str, _Slot | None] = dict.fromkeys(KINDS)

    def get(self, kind: str, folder: Path, choice: DeviceChoice) -> Any:
        """The pipeline ("text", "image") or renderer ("renderer") of ``folder`` on the device."""
        if kind == "renderer":
            return self.renderer(folder, choice)
        with self._lock:
            key = Path(folder).resolve()
            slot = self._slots[kind]
            if slot is None or slot.folder != key:
                self._slots[kind] = None
                _free()
                slot = self._slots[kind] = _Slot(key, _PIPELINES[kind](key, self._spare(key)))
            return slot.value.to(choice.device)  # cheap when the modules are already there

    def text_pipeline(self, folder: Path, choice: DeviceChoice) -> ShapEPipeline:
        return self.get("text", folder, choice)

    def image_pipeline(self, folder: Path, choice: DeviceChoice) -> ShapEImg2ImgPipeline:
        return self.get("image", folder, choice)

    def renderer(self, folder: Path, choice: DeviceChoice) -> ShapERenderer:
        """float32, eval mode, on ``choice.device``."""
        with self._lock:
            key = Path(folder).resolve()
            pipe = self._pipeline_of(key)
            if pipe is not None:
                return pipe.shap_e_renderer.to(choice.device)
            slot = self._slots["renderer"]
            if slot is None or slot.folder != key:
                self._slots["renderer"] = None
                _free()
                slot = self._slots["renderer"] = _Slot(key, load_renderer(key))
            return slot.value.to(choice.device)

    def is_loaded(self, kind: str, folder: Path) -> bool:
        """Whether ``kind`` ("text", "image" or "renderer") from ``folder`` is already loaded."""
        key = Path(folder).resolve()
        with self._lock:
            kinds = KINDS if kind == "renderer" else (kind,)
            return any(self._held(k, key) is not None for k in kinds)

    def loaded(self) -> list[str]:
        # No lock: the protocol's reader thread asks while a job may hold the lock for a whole
        # load. Reading the slot references is atomic; a load in progress shows up after.
        slots = [(kind, self._slots[kind]) for kind in KINDS]
        return [f"{kind}:{slot.folder}" for kind, slot in slots if slot is not None]

    def clear(self) -> None:
        with self._lock:
            self._slots = dict.fromkeys(KINDS)
            _free()

    def _held(self, kind: str, key: Path) -> _Slot | None:
        """The slot of ``kind`` when it holds ``key``'s model."""
        slot = self._slots[kind]
        return slot if slot is not None and slot.folder == key else None

    def _pipeline_of(self, key: Path) -> Any:
        """A loaded pipeline of ``key``, text first, or None."""
        slot = next(filter(None, (self._held(kind, key) for kind in _PIPELINES)), None)
        return slot.value if slot is not None else None

    def _spare(self, key: Path) -> ShapERenderer | None:
        """A renderer already loaded from ``key``, handed over to the pipeline being loaded."""
        pipe = self._pipeline_of(key)
        if pipe is not None:
            return pipe.shap_e_renderer
        alone = self._held("renderer", key)
        if alone is not None:
            self._slots["renderer"] = None
        return alone.value if alone is not None else None


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.debug("freed unused models")
