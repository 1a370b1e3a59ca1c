import pytest

from shape_e_blender.core.errors import INVALID_PARAMS, ShapEError
from shape_e_blender.core.params import (
    DEFAULT_IMAGE_MODEL,
    DEFAULT_TEXT_MODEL,
    SEED_MAX,
    GenerationParams,
)


def test_text_defaults_follow_the_paper_not_the_pipeline():
    p = GenerationParams.create(prompt="  a  red\nchair ")
    assert p.prompt == "a red chair"
    assert p.mode == "text"
    assert (p.steps, p.grid_size, p.variants, p.seed) == (64, 128, 1, 0)
    assert p.effective_guidance == 15.0
    assert p.effective_model == DEFAULT_TEXT_MODEL


def test_image_defaults():
    p = GenerationParams.create(image="/tmp/x.png")
    assert p.mode == "image"
    assert p.effective_guidance == 3.0
    assert p.effective_model == DEFAULT_IMAGE_MODEL
    r = p.resolved()
    assert r.guidance_scale == 3.0 and r.model == DEFAULT_IMAGE_MODEL


def test_latent_mode_uses_the_text_repo_renderer():
    p = GenerationParams.create(latent="/tmp/latent.npy", grid_size=256)
    assert p.mode == "latent" and p.effective_model == DEFAULT_TEXT_MODEL


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "prompt"),
        ({"prompt": "a", "image": "b.png"}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({"prompt": "a", "seed": -1}, "seed"),
        ({"prompt": "a", "seed": SEED_MAX + 1}, "seed"),
        ({"prompt": "a", "seed": True}, "seed"),
        ({"prompt": "a", "seed": 1.5}, "seed"),
        ({"prompt": "a", "steps": 0}, "steps"),
        ({"prompt": "a", "grid_size": 16}, "grid_size"),
        ({"prompt": "a", "grid_size": 513}, "grid_size"),
        ({"prompt": "a", "variants": 0}, "variants"),
        ({"prompt": "a", "guidance_scale": float("nan")}, "guidance_scale"),
        ({"prompt": "a", "guidance_scale": "high"}, "guidance_scale"),
        ({"prompt": "a", "device": "tpu"}, "device"),
        ({"prompt": "a", "precision": "fp8"}, "precision"),
        ({"prompt": "a", "colour": 1}, "colour"),
    ],
)
def test_bad_input_names_the_field_and_what_to_do(kwargs, field):
    with pytest.raises(ShapEError) as info:
        GenerationParams.create(**kwargs)
    err = info.value
    assert err.code == INVALID_PARAMS
    assert err.field == field
    assert err.message.startswith(field)
    assert err.hint


def test_seed_limits_and_variant_seeds():
    p = GenerationParams.create(prompt="a", seed=SEED_MAX, variants=3)
    assert p.variant_seeds() == [SEED_MAX, 0, 1]
    assert GenerationParams.create(prompt="a", seed=7, variants=2).variant_seeds() == [7, 8]


def test_devices_and_precisions_are_lowercased():
    p = GenerationParams.create(prompt="a", device="CUDA:1", precision="FP16")
    assert (p.device, p.precision) == ("cuda:1", "fp16")


def test_json_round_trip_ignores_request_level_keys():
    p = GenerationParams.create(prompt="a chair", seed=5, guidance_scale=7.5, grid_size=64)
    obj = p.to_json() | {"job_dir": "/tmp/j", "inline": True}
    assert GenerationParams.from_json(obj) == p
    assert "image" not in p.to_json()
