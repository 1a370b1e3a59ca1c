"""The cache of warm models: one text pipeline, one image pipeline, renderers shared with them."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest
import torch

from shape_e_blender.worker.models.cache import ModelCache
from shape_e_blender.worker.models.devices import DeviceChoice, resolve_device

CUDA = torch.cuda.is_available()
CPU = DeviceChoice("cpu", "fp32")


def test_cache_returns_the_same_pipeline_for_the_same_folder(tiny_text_model: Path) -> None:
    cache = ModelCache()
    first = cache.text_pipeline(tiny_text_model, CPU)
    assert cache.text_pipeline(tiny_text_model / "." / "", CPU) is first
    assert cache.loaded() == [f"text:{tiny_text_model.resolve()}"]


def test_cache_replaces_and_frees_the_previous_folder_of_a_kind(
    tiny_text_model: Path, tiny_text_model_bin: Path
) -> None:
    cache = ModelCache()
    first = weakref.ref(cache.text_pipeline(tiny_text_model, CPU))
    second = cache.text_pipeline(tiny_text_model_bin, CPU)
    gc.collect()
    assert first() is None
    assert cache.loaded() == [f"text:{tiny_text_model_bin.resolve()}"]
    assert cache.text_pipeline(tiny_text_model_bin, CPU) is second


def test_cache_keeps_one_text_and_one_image_pipeline(
    tiny_text_model: Path, tiny_image_model: Path
) -> None:
    cache = ModelCache()
    text = cache.text_pipeline(tiny_text_model, CPU)
    image = cache.image_pipeline(tiny_image_model, CPU)
    assert cache.text_pipeline(tiny_text_model, CPU) is text
    assert cache.image_pipeline(tiny_image_model, CPU) is image
    assert len(cache.loaded()) == 2


def test_cache_renderer_is_shared_with_the_pipeline_of_the_same_folder(
    tiny_text_model: Path, tiny_text_model_bin: Path
) -> None:
    cache = ModelCache()
    pipe = cache.text_pipeline(tiny_text_model, CPU)
    assert cache.renderer(tiny_text_model, CPU) is pipe.shap_e_renderer
    # A renderer asked for alone is loaded alone, then handed over to its pipeline.
    alone = cache.renderer(tiny_text_model_bin, CPU)
    assert not alone.training and all(p.dtype == torch.float32 for p in alone.parameters())
    assert f"renderer:{tiny_text_model_bin.resolve()}" in cache.loaded()
    assert cache.renderer(tiny_text_model_bin, CPU) is alone
    other = cache.text_pipeline(tiny_text_model_bin, CPU)
    assert other.shap_e_renderer is alone
    assert cache.loaded() == [f"text:{tiny_text_model_bin.resolve()}"]


def test_cache_clear_frees_everything(tiny_text_model: Path, tiny_image_model: Path) -> None:
    cache = ModelCache()
    refs = [
        weakref.ref(cache.text_pipeline(tiny_text_model, CPU)),
        weakref.ref(cache.image_pipeline(tiny_image_model, CPU)),
    ]
    cache.clear()
    gc.collect()
    assert cache.loaded() == [] and all(r() is None for r in refs)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cache_moves_a_pipeline_to_the_requested_device(tiny_text_model: Path) -> None:
    cache = ModelCache()
    gpu = resolve_device("cuda", "fp32")
    pipe = cache.text_pipeline(tiny_text_model, gpu)
    assert pipe.prior.device.type == "cuda" and pipe.shap_e_renderer.device.type == "cuda"
    assert cache.text_pipeline(tiny_text_model, CPU) is pipe
    assert pipe.prior.device.type == "cpu"


def test_loaded_answers_while_a_load_holds_the_lock(tiny_text_model: Path) -> None:
    """The reader thread's status must never wait for a model load on the job thread."""
    cache = ModelCache()
    cache.text_pipeline(tiny_text_model, resolve_device("cpu"))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache._lock:  # what a long load does
            holding.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(30)
    try:
        answer: list[list[str]] = []
        reader = threading.Thread(target=lambda: answer.append(cache.loaded()))
        reader.start()
        reader.join(5)
        assert answer == [[f"text:{tiny_text_model.resolve()}"]]
    finally:
        release.set()
        t.join()
