"""Which files a download needs, and which model folders are complete (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shape_e_blender.core.errors import MODEL_UNAVAILABLE, ShapEError
from shape_e_blender.core.weights import weights_in
from shape_e_blender.worker.hub import download as dl

from .standin import BIG, FAKE_FILES, REPO_ID, TEXT_FILES, write_repo

# ---- file selection (no network) -------------------------------------------------------------


def test_text_selection_is_exact():
    assert set(dl.select_files(FAKE_FILES, "text", source=REPO_ID)) == TEXT_FILES


def _image_repo(*encoder_weights: str) -> dict[str, int]:
    """The fake repo's files with an image encoder (these weight files) in place of the text one."""
    files = {k: v for k, v in FAKE_FILES.items() if not k.startswith(("text_", "tokenizer/"))}
    files |= {f"image_encoder/{name}": 1 for name in encoder_weights}
    return files | {"image_encoder/config.json": 0, "image_processor/preprocessor_config.json": 0}


def test_image_and_renderer_selection():
    files = _image_repo("pytorch_model.bin", "model.fp16.safetensors")
    image = set(dl.select_files(files, "image", source="openai/shap-e-img2img"))
    assert image == {
        "model_index.json",
        "prior/config.json",
        BIG,
        "image_encoder/config.json",
        "image_encoder/model.fp16.safetensors",
        "image_processor/preprocessor_config.json",
        "scheduler/scheduler_config.json",
        "shap_e_renderer/config.json",
        "shap_e_renderer/diffusion_pytorch_model.bin",
    }
    assert set(dl.select_files(files, "renderer", source="x/y")) == {
        "model_index.json",
        "shap_e_renderer/config.json",
        "shap_e_renderer/diffusion_pytorch_model.bin",
    }


def test_an_image_encoder_with_only_a_pickle_is_fetched_but_a_text_encoder_is_refused():
    image = set(
        dl.select_files(_image_repo("pytorch_model.bin"), "image", source="openai/shap-e-img2img")
    )
    assert "image_encoder/pytorch_model.bin" in image
    text = {k: v for k, v in FAKE_FILES.items() if k != "text_encoder/model.fp16.safetensors"}
    with pytest.raises(ShapEError) as err:
        dl.select_files(text, "text", source=REPO_ID)
    assert "text_encoder/" in err.value.message and "pickled" in err.value.message


def test_full_precision_safetensors_are_preferred_when_present():
    files = dict(FAKE_FILES)
    files["prior/diffusion_pytorch_model.safetensors"] = 1
    files["shap_e_renderer/diffusion_pytorch_model.safetensors"] = 1
    chosen = set(dl.select_files(files, "text", source=REPO_ID))
    assert "prior/diffusion_pytorch_model.safetensors" in chosen and BIG not in chosen
    assert "shap_e_renderer/diffusion_pytorch_model.safetensors" in chosen
    assert "shap_e_renderer/diffusion_pytorch_model.bin" not in chosen  # no pickle when avoidable


def test_sharded_safetensors_come_with_their_index():
    files = {k: v for k, v in FAKE_FILES.items() if not k.startswith("prior/")}
    files |= {
        "prior/config.json": 0,
        "prior/diffusion_pytorch_model-00001-of-00002.safetensors": 1,
        "prior/diffusion_pytorch_model-00002-of-00002.safetensors": 1,
        "prior/diffusion_pytorch_model.safetensors.index.json": 1,
    }
    prior = {f for f in dl.select_files(files, "text", source=REPO_ID) if f.startswith("prior/")}
    assert prior == {
        "prior/config.json",
        "prior/diffusion_pytorch_model-00001-of-00002.safetensors",
        "prior/diffusion_pytorch_model-00002-of-00002.safetensors",
        "prior/diffusion_pytorch_model.safetensors.index.json",
    }


def test_pickle_only_prior_is_refused():
    files = {k: v for k, v in FAKE_FILES.items() if k != BIG}
    with pytest.raises(ShapEError) as err:
        dl.select_files(files, "text", source=REPO_ID)
    assert err.value.code == MODEL_UNAVAILABLE
    assert "prior/" in err.value.message and "pickled checkpoints are refused" in err.value.message


def test_repo_without_the_component_kind_needs():
    with pytest.raises(ShapEError) as err:
        dl.select_files(FAKE_FILES, "image", source=REPO_ID)
    assert "image_encoder/" in err.value.message and "img2img" in err.value.hint


# ---- local folders (no network) --------------------------------------------------------------


def _complete_folder(root: Path) -> Path:
    return write_repo(root, {k: v for k, v in FAKE_FILES.items() if k in TEXT_FILES})


def test_complete_local_folder_is_used_as_it_is(tmp_path):
    folder = _complete_folder(tmp_path / "model")
    assert dl.resolve_model(str(folder), kind="text") == folder
    assert dl.resolve_model(str(folder), kind="renderer") == folder
    assert weights_in(folder, "prior").variant == "fp16"
    renderer = weights_in(folder, "shap_e_renderer")
    assert renderer.variant is None and renderer.pickle


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("text_encoder", "text_encoder/"),
        (BIG, "prior/ weights (safetensors)"),
        ("tokenizer/merges.txt", "tokenizer/vocab.json + merges.txt or tokenizer.json"),
        ("model_index.json", "model_index.json"),
        ("shap_e_renderer/diffusion_pytorch_model.bin", "shap_e_renderer/ weights"),
    ],
)
def test_local_folder_missing_a_part_names_it(tmp_path, remove, named):
    folder = _complete_folder(tmp_path / "model")
    target = folder / remove
    if target.is_dir():
        for p in target.iterdir():
            p.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(ShapEError) as err:
        dl.resolve_model(str(folder), kind="text")
    assert err.value.code == MODEL_UNAVAILABLE and err.value.field == "model"
    assert str(folder) in err.value.message and named in err.value.message
    assert err.value.hint


def test_a_pickled_prior_in_a_local_folder_is_refused(tmp_path):
    folder = _complete_folder(tmp_path / "model")
    (folder / BIG).rename(folder / "prior" / "diffusion_pytorch_model.bin")
    with pytest.raises(ShapEError, match="prior/ weights"):
        dl.resolve_model(str(folder), kind="text")


def test_image_kind_on_a_text_folder(tmp_path):
    folder = _complete_folder(tmp_path / "model")
    with pytest.raises(ShapEError) as err:
        dl.resolve_model(str(folder), kind="image")
    assert "image_encoder/" in err.value.message and "image_processor/" in err.value.message


def test_missing_folder_and_file_paths(tmp_path):
    with pytest.raises(ShapEError, match="does not exist"):
        dl.resolve_model(str(tmp_path / "no" / "such"), kind="text")
    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"x")
    with pytest.raises(ShapEError, match="is a file"):
        dl.resolve_model(str(a_file), kind="text")


# ---- the cache without the network -------------------------------------------------------------


def test_empty_cache_without_download_names_the_repo_and_the_ways_out(tmp_path):
    with pytest.raises(ShapEError) as err:
        dl.resolve_model(REPO_ID, kind="text", cache_dir=tmp_path / "cache")
    e = err.value
    assert e.code == MODEL_UNAVAILABLE and e.field == "model"
    assert REPO_ID in e.message and "not in the model cache" in e.message
    assert "python -m shape_e_blender download" in e.hint and "--model /path/to/folder" in e.hint
    with pytest.raises(ShapEError) as err:
        dl.resolve_model("openai/shap-e-img2img", kind="image", cache_dir=tmp_path / "cache")
    assert "download --image" in err.value.hint
