"""Fixtures shared by every test folder.

Heavy imports (torch, diffusers) happen inside the fixtures: tests that prove Blender never
imports torch must not get it from here.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# No test may reach a model hub; set before anything imports huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"

# bpy reads (and may write) its user folder when it is imported: point it at a throw-away one,
# so the developer's preferences and add-ons neither leak into the tests nor get touched. Child
# Blender processes inherit it. An explicit BLENDER_USER_RESOURCES is respected.
if "BLENDER_USER_RESOURCES" not in os.environ:
    _user = tempfile.mkdtemp(prefix="shape_e_test_blender_user_")
    os.environ["BLENDER_USER_RESOURCES"] = _user
    atexit.register(shutil.rmtree, _user, ignore_errors=True)

# A Python without Blender (the client's own test run) collects everything else.
collect_ignore = [] if importlib.util.find_spec("bpy") else ["blender"]


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


@pytest.fixture(scope="session")
def worker_text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny text pipeline written by the worker's interpreter (the test's may lack torch)."""
    from tests.support import tiny_model

    return tiny_model(tmp_path_factory.getbasetemp(), "text")


@pytest.fixture(scope="session")
def worker_image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny image pipeline, written by the worker's interpreter."""
    from tests.support import tiny_model

    return tiny_model(tmp_path_factory.getbasetemp(), "image")
