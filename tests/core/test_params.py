import argparse
from pathlib import Path

import pytest

from shape_e_blender.core.arguments import add_arguments
from shape_e_blender.core.errors import INVALID_PARAMS, ShapEError
from shape_e_blender.core.params import (
    DEFAULT_IMAGE_MODEL,
    DEFAULT_TEXT_MODEL,
    SEED_MAX,
    SETTINGS,
    GenerationParams,
)
from shape_e_blender.core.protocol import GENERATE_OPTIONS


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
        ({"prompt": "a", "seed": 3.0}, "seed"),  # a float is refused, not made an int
        ({"prompt": "a red\0 chair"}, "prompt"),
        ({"image": "chair\0.png"}, "image"),
        ({"prompt": "a", "variants": "2"}, "variants"),
        ({"prompt": "a", "steps": False}, "steps"),
        ({"prompt": "a", "steps": 0}, "steps"),
        ({"prompt": "a", "grid_size": 16}, "grid_size"),
        ({"prompt": "a", "grid_size": 513}, "grid_size"),
        ({"prompt": "a", "variants": 0}, "variants"),
        ({"prompt": "a", "guidance_scale": float("nan")}, "guidance_scale"),
        ({"prompt": "a", "guidance_scale": "high"}, "guidance_scale"),
        ({"prompt": "a", "device": "tpu"}, "device"),
        ({"prompt": "a", "precision": "fp8"}, "precision"),
        ({"prompt": "a", "colour": 1}, "colour"),
        ({"prompt": "a", "faces": 5}, "faces"),
        ({"prompt": "a", "faces": -1}, "faces"),
        ({"prompt": "a", "texture_size": 1000}, "texture_size"),
        ({"prompt": "a", "texture_size": 32}, "texture_size"),
        ({"prompt": "a", "texture_size": 8192}, "texture_size"),
        ({"prompt": "a", "texture_size": 256, "faces": 60_000}, "faces"),
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


def test_faces_and_texture_sizes_at_their_limits_are_taken():
    for faces, texture in ((100, 64), (0, 4096), (50_000, 1024), (10_000_000, 0)):
        p = GenerationParams.create(prompt="a", faces=faces, texture_size=texture)
        assert (p.faces, p.texture_size) == (faces, texture)


def test_json_round_trip_ignores_request_level_keys():
    p = GenerationParams.create(prompt="a chair", seed=5, guidance_scale=7.5, grid_size=64)
    obj = p.to_json() | {"job_dir": "/tmp/j", "inline": True}
    assert GenerationParams.from_json(obj) == p
    assert "image" not in p.to_json()


def _protocol_rows() -> dict[str, list[str]]:
    """The generate parameters table of docs/protocol.md: name -> its cells."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text("utf-8")
    section = text.split("### `generate`", 1)[1].split("Exactly one of", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_protocol_document_lists_every_generation_field_as_the_table_defines_it():
    rows = _protocol_rows()
    assert set(SETTINGS) | set(GENERATE_OPTIONS) == set(rows)
    for name, s in SETTINGS.items():
        kind, default, meaning = rows[name]
        assert meaning, name
        if s.choices:
            tokens = {t.strip().strip("`") for t in kind.split(",")}
            assert tokens == {*s.values, *(["cuda:N"] if s.pattern else [])}, name
            assert default == f"`{s.default}`", name
        elif s.kind is str:
            assert kind == "string", name
        else:
            assert kind == f"{'int' if s.kind is int else 'number'} {s.range_text}", name
            expected = ", ".join(f"{v:g} ({m})" for m, v in s.mode_defaults.items())
            assert default == (expected or str(s.default)), name
    assert DEFAULT_TEXT_MODEL in rows["model"][1] and DEFAULT_IMAGE_MODEL in rows["model"][1]


def test_cli_arguments_come_from_the_table_with_core_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser, SETTINGS)
    args = parser.parse_args(["--prompt", "a cup", "--grid-size", "64"])
    given = {name: getattr(args, name) for name in SETTINGS}
    assert given["grid_size"] == 64 and given["steps"] is None  # None: core's default applies
    p = GenerationParams.create(**given)
    assert (p.steps, p.grid_size, p.seed) == (SETTINGS["steps"].default, 64, 0)
    with pytest.raises(SystemExit):  # exactly one source
        parser.parse_args(["--prompt", "a", "--image", "b.png"])
