"""Tiny random pipelines: hub layout, determinism, and fields with real surfaces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage.measure import marching_cubes

from shape_e_blender.worker.mesh.field import LatentField, latent_shape
from shape_e_blender.worker.models.devices import DeviceChoice
from shape_e_blender.worker.models.loading import (
    load_image_pipeline,
    load_renderer,
    load_text_pipeline,
)
from shape_e_blender.worker.sampling import sample_latents
from shape_e_blender.worker.tiny.pipeline import SCHEDULER_CONFIG, write_tiny_pipeline
from shape_e_blender.worker.tiny.sizes import TinySizes

CPU = DeviceChoice("cpu", "fp32")
# The files of both kinds of pipeline.
BOTH_KINDS = (
    "model_index.json",
    "prior/config.json",
    "prior/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
    "shap_e_renderer/config.json",
    "shap_e_renderer/diffusion_pytorch_model.safetensors",
)


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _assert_hub_layout(
    folder: Path, pipeline: str, encoder: tuple[str, str], condition_files: list[str]
) -> dict:
    """The folder holds exactly the hub repo's files, and its model index names the classes."""
    name, cls = encoder
    files = {*BOTH_KINDS, f"{name}/config.json", f"{name}/model.safetensors", *condition_files}
    assert files == _files(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == pipeline
    assert index[name] == ["transformers", cls]
    return index


def test_text_layout_is_the_hub_repo_layout(tiny_text_model: Path) -> None:
    tokenizer = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
    index = _assert_hub_layout(
        tiny_text_model,
        "ShapEPipeline",
        ("text_encoder", "CLIPTextModelWithProjection"),
        [f"tokenizer/{name}" for name in tokenizer],
    )
    assert index["prior"] == ["diffusers", "PriorTransformer"]
    assert index["scheduler"] == ["diffusers", "HeunDiscreteScheduler"]
    # The byte-level vocabulary has no merges: merges.txt is only its version line.
    assert (tiny_text_model / "tokenizer/merges.txt").read_text().strip() == "#version: 0.2"
    config = json.loads((tiny_text_model / "tokenizer/tokenizer_config.json").read_text())
    assert config["model_max_length"] == 77


def test_image_layout_is_the_hub_repo_layout(tiny_image_model: Path) -> None:
    _assert_hub_layout(
        tiny_image_model,
        "ShapEImg2ImgPipeline",
        ("image_encoder", "CLIPVisionModel"),
        ["image_processor/preprocessor_config.json"],
    )


def test_scheduler_config_is_the_released_one(tiny_text_model: Path) -> None:
    saved = json.loads((tiny_text_model / "scheduler/scheduler_config.json").read_text())
    assert saved["_class_name"] == "HeunDiscreteScheduler"
    for key, value in SCHEDULER_CONFIG.items():
        assert saved[key] == value, key
    pipe = load_text_pipeline(tiny_text_model)
    pipe.scheduler.set_timesteps(64)
    # Karras sigmas over the exp schedule: diffusers' run from about 403 down to about 0.109.
    sigmas = pipe.scheduler.sigmas
    assert float(sigmas[0]) == pytest.approx(403, rel=0.01)
    assert float(sigmas[-2]) == pytest.approx(0.109, rel=0.02)
    assert len(pipe.scheduler.timesteps) == 127


def test_renderer_bin_is_a_plain_pickled_state_dict(
    tiny_text_model: Path, tiny_text_model_bin: Path
) -> None:
    sub = tiny_text_model_bin / "shap_e_renderer"
    assert sorted(p.name for p in sub.iterdir()) == ["config.json", "diffusion_pytorch_model.bin"]
    state = torch.load(sub / "diffusion_pytorch_model.bin", weights_only=True)
    same = load_file(tiny_text_model / "shap_e_renderer/diffusion_pytorch_model.safetensors")
    assert state.keys() == same.keys()
    assert all(torch.equal(state[k], same[k]) for k in same)


@pytest.mark.parametrize("sizes", [TinySizes(), TinySizes.other()], ids=["default", "other"])
def test_latent_shape_agrees_between_prior_and_renderer(tmp_path: Path, sizes: TinySizes) -> None:
    folder = write_tiny_pipeline(tmp_path, sizes=sizes)
    prior = json.loads((folder / "prior/config.json").read_text())
    renderer = load_renderer(folder)
    rows, cols = latent_shape(renderer)
    assert (prior["num_embeddings"], prior["embedding_dim"]) == (rows, cols) == sizes.latent_shape
    assert prior["clip_embed_dim"] == 2 * cols


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    a = write_tiny_pipeline(tmp_path / "a", seed=3)
    b = write_tiny_pipeline(tmp_path / "b", seed=3)
    c = write_tiny_pipeline(tmp_path / "c", seed=4)
    for part in ("prior/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        wa, wb, wc = (load_file(f / part) for f in (a, b, c))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), part
        assert not all(torch.equal(wa[k], wc[k]) for k in wa), part


def test_writing_does_not_disturb_the_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    write_tiny_pipeline(tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_rewriting_as_the_other_kind_leaves_no_stale_component(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    write_tiny_pipeline(tmp_path, "text")
    write_tiny_pipeline(tmp_path, "image")
    names = {p.name for p in tmp_path.iterdir()}
    assert "text_encoder" not in names and "tokenizer" not in names
    assert {"image_encoder", "image_processor", "notes.txt"} <= names
    assert (tmp_path / "notes.txt").read_text() == "mine"
    load_image_pipeline(tmp_path)


def test_tokenizer_pads_and_truncates_to_77(tiny_text_model: Path) -> None:
    tokenizer = load_text_pipeline(tiny_text_model).tokenizer
    assert tokenizer.model_max_length == 77
    ids = tokenizer("a red chair").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red chair"
    long = tokenizer("a chair " * 60, padding="max_length", max_length=77, truncation=True)
    assert len(long.input_ids) == 77


def _grid(g: int) -> torch.Tensor:
    axis = torch.linspace(-1.0, 1.0, g)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def _faces(field: LatentField, g: int) -> tuple[float, int]:
    values = field.sdf(_grid(g)).reshape(g, g, g).numpy()
    # Padded with "outside" like diffusers, so every surface is closed.
    _, faces, _, _ = marching_cubes(np.pad(values, 1, constant_values=-1.0), 0.0)
    return float((values > 0).mean()), len(faces)


def test_sampled_latents_give_smooth_closed_surfaces(tiny_text_model: Path) -> None:
    """The tiny renderer's field behaves like a real surface for what the tiny prior samples.

    A surface's marching-cubes face count grows 4x per grid doubling; noise grows 8x.
    """
    pipe = load_text_pipeline(tiny_text_model)
    latents = sample_latents(
        pipe, prompt="a red chair", seeds=[0, 1, 2, 3], steps=16, guidance_scale=15.0, choice=CPU
    )
    fields = [LatentField(pipe.shap_e_renderer, latent, "cpu") for latent in latents]
    fractions = []
    for field in fields:
        inside, faces = _faces(field, 32)
        fractions.append(inside)
        assert 0.02 < inside < 0.7 and faces > 0, inside  # a zero crossing, neither empty nor full
    assert 0.1 < float(np.mean(fractions)) < 0.5, fractions
    for field in fields[:2]:  # grid 128 is the slow part: two latents show the scaling
        f32, f64, f128 = (_faces(field, g)[1] for g in (32, 64, 128))
        assert 3.6 < f64 / f32 < 4.4, (f32, f64)
        assert 3.6 < f128 / f64 < 4.4, (f64, f128)


def test_image_pipeline_latents_also_give_surfaces(tiny_image_model: Path) -> None:
    pipe = load_image_pipeline(tiny_image_model)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    latents = sample_latents(
        pipe, image=image, seeds=[0, 1], steps=8, guidance_scale=3.0, choice=CPU
    )
    for latent in latents:
        inside, faces = _faces(LatentField(pipe.shap_e_renderer, latent, "cpu"), 48)
        assert 0.02 < inside < 0.7 and faces > 100


@pytest.mark.parametrize("kind", ["text", "image"])
def test_a_tiny_model_with_other_sizes_also_works(tmp_path: Path, kind: str) -> None:
    sizes = TinySizes.other()
    folder = write_tiny_pipeline(tmp_path, kind, seed=7, sizes=sizes)
    if kind == "text":
        pipe = load_text_pipeline(folder)
        condition = {"prompt": "a blue vase"}
    else:
        pipe = load_image_pipeline(folder)
        condition = {"image": Image.new("RGB", (64, 64), (200, 30, 30))}
    latents = sample_latents(
        pipe, **condition, seeds=[1, 2], steps=4, guidance_scale=3.0, choice=CPU
    )
    assert latents.shape == (2, *sizes.latent_shape)
    inside, faces = _faces(LatentField(pipe.shap_e_renderer, latents[0], "cpu"), 48)
    assert 0.02 < inside < 0.7 and faces > 100
