"""Fixtures shared by every test folder.

Heavy imports (torch, diffusers) happen inside the fixtures: tests that prove Blender never
imports torch must not get it from here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a model hub; set before anything imports huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random text-to-3D pipeline folder, laid out like the hub repo openai/shap-e."""
    from shape_e_blender.worker.tiny.pipeline import write_tiny_pipeline

    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-text"), "text")


@pytest.fixture(scope="session")
def tiny_image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random image-to-3D pipeline folder, laid out like openai/shap-e-img2img."""
    from shape_e_blender.worker.tiny.pipeline import write_tiny_pipeline

    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-image"), "image")


@pytest.fixture(scope="session")
def tiny_text_model_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny text pipeline (same weights) with the renderer as a pickled .bin, as on the hub."""
    from shape_e_blender.worker.tiny.pipeline import write_tiny_pipeline

    return write_tiny_pipeline(
        tmp_path_factory.mktemp("tiny-text-bin"), "text", renderer_format="bin"
    )
