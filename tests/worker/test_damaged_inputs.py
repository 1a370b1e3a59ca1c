"""Files a user hands the worker that are damaged or wrong, through a real worker subprocess:
each is answered with an error naming its field and what to do, never internal_error ("this is
a bug in the worker"), and the worker runs the next job."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from shape_e_blender.core.errors import INVALID_PARAMS, MODEL_UNAVAILABLE

FAST = {"steps": 2, "grid_size": 32}


def _json(text: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(text)

    return write


def _set(key: str, value: object) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        config = json.loads(path.read_text())
        config[key] = value
        path.write_text(json.dumps(config))

    return write


def _other_prior(path: Path) -> None:
    """A config of a prior with more tensors than the weights hold (the image model's)."""
    _set("embedding_proj_norm_type", "layer")(path)


DAMAGE = [
    # (file, damage, what the message says); each raised out of the loader unmapped before
    ("text_encoder/config.json", _json("[]"), "text_encoder/config.json does not hold a JSON"),
    ("tokenizer/vocab.json", _json("zz"), "tokenizer/vocab.json is not JSON"),
    ("tokenizer/merges.txt", lambda p: p.write_bytes(b"#v\n\xff\xfe x\n"), "load tokenizer"),
    ("text_encoder/config.json", _set("hidden_size", "big"), "load text_encoder"),
    ("scheduler/scheduler_config.json", _set("num_train_timesteps", "x"), "load scheduler"),
    ("prior/config.json", _other_prior, "weights lack 2 of the tensors its config.json asks"),
]


@pytest.mark.parametrize(("name", "damage", "says"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_model_folder_is_model_unavailable_naming_the_file_or_component(
    worker, tiny_text_model, tmp_path, name, damage, says
):
    """They were TypeError, a bare Exception from tokenizers, NotImplementedError (a meta
    tensor moved to the device) or a failure at sampling: internal errors."""
    folder = shutil.copytree(tiny_text_model, tmp_path / "model")
    damage(folder / name)
    msg, _ = worker.call("generate", {"prompt": "a cup", "model": str(folder), **FAST})
    err = msg["error"]
    assert (err["code"], err["data"]["field"]) == (MODEL_UNAVAILABLE, "model")
    assert says in err["message"] and "download the model again" in err["data"]["hint"]
    assert "Traceback" not in err["message"]


def test_a_model_name_the_os_cannot_look_up_is_model_unavailable_for_every_method(worker):
    """A name too long for the file system raised OSError from is_dir(): an internal error."""
    name = "x" * 300
    for method, params in (
        ("generate", {"prompt": "a cup", "model": name, **FAST}),
        ("download", {"model": name}),
        ("load", {"model": name}),
    ):
        msg, _ = worker.call(method, params)
        err = msg["error"]
        assert (err["code"], err["data"]["field"]) == (MODEL_UNAVAILABLE, "model"), method
        assert "File name too long" in err["message"]


def test_latents_and_images_that_cannot_be_read_name_their_field(worker, tiny_text_model, tmp_path):
    archive = tmp_path / "latent.npz"
    np.savez(archive, latent=np.zeros((64, 32), np.float32))
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    for params, says in (
        ({"latent": str(archive)}, "is a .npz archive"),
        ({"latent": str(empty)}, "cannot read"),
        ({"latent": str(tmp_path / ("y" * 300))}, "File name too long"),
        ({"image": str(tmp_path / ("y" * 300 + ".png"))}, "File name too long"),
    ):
        field = next(iter(params))
        msg, _ = worker.call("generate", {**params, "model": str(tiny_text_model), **FAST})
        err = msg["error"]
        assert (err["code"], err["data"]["field"]) == (INVALID_PARAMS, field), params
        assert says in err["message"]
    msg, _ = worker.call("generate", {"prompt": "a cup", "model": str(tiny_text_model), **FAST})
    assert msg["result"]["meshes"][0]["faces"] > 0


def test_a_relative_job_dir_is_answered_with_absolute_paths(worker, tiny_text_model):
    """The answer named "reljob/0/mesh.npz": relative to the worker's folder, not the client's."""
    msg, _ = worker.call(
        "generate", {"prompt": "a cup", "model": str(tiny_text_model), "job_dir": "rel", **FAST}
    )
    result = msg["result"]
    assert Path(result["job_dir"]).is_absolute() and Path(result["job_dir"]).name == "rel"
    assert Path(result["meshes"][0]["path"]).is_file()
    assert Path(result["meshes"][0]["path"]).is_absolute()
