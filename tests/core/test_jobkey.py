"""Job keys (core/jobkey.py): what decides a mesh is in the key, where it goes is not, and a
finished folder with the key is found again."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from shape_e_blender.core import jobdir, jobkey
from shape_e_blender.core.errors import ShapEError
from shape_e_blender.core.mesh import MeshData
from shape_e_blender.core.params import GenerationParams
from shape_e_blender.core.results import JobResult, MeshEntry

BASE = GenerationParams.create(prompt="a red chair", steps=2, grid_size=32, model="tiny/text")


def _key(params: GenerationParams) -> str:
    return jobkey.job_key(params).key


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a blue chair"},
        {"seed": 1},
        {"steps": 3},
        {"guidance_scale": 7.5},
        {"grid_size": 64},
        {"variants": 2},
        {"model": "other/text"},
        {"faces": 5000},
        {"texture_size": 512},
    ],
)
def test_everything_that_decides_the_mesh_changes_the_key(change):
    assert _key(replace(BASE, **change)) != _key(BASE)


def test_the_same_inputs_give_the_same_key_and_the_device_is_matched_not_hashed():
    assert _key(BASE) == _key(GenerationParams.create(**BASE.to_json()))
    # The default guidance spelled out is the same job.
    assert _key(replace(BASE, guidance_scale=15.0)) == _key(BASE)
    assert _key(replace(BASE, device="cuda:0")) == _key(replace(BASE, device="auto"))
    assert _key(replace(BASE, precision="fp16")) == _key(BASE)
    made_of = jobkey.job_key(BASE).made_of
    assert made_of["prompt"] == "a red chair" and made_of["model"] == {"hub": "tiny/text"}
    # Asset options that are off are not in it: folders made before they existed still match.
    assert not set(jobkey.ASSET_FIELDS) & set(made_of)


def test_an_image_is_keyed_by_its_bytes_not_its_path(tmp_path):
    first = tmp_path / "a.png"
    first.write_bytes(b"\x89PNG one")
    copy = tmp_path / "elsewhere" / "b.png"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    a = GenerationParams.create(image=str(first))
    assert _key(a) == _key(GenerationParams.create(image=str(copy)))
    first.write_bytes(b"\x89PNG two")
    assert _key(a) != _key(GenerationParams.create(image=str(copy)))


def test_a_model_folder_is_keyed_by_its_files(tmp_path):
    folder = tmp_path / "model"
    (folder / "prior").mkdir(parents=True)
    weights = folder / "prior" / "model.safetensors"
    weights.write_bytes(b"1234")
    params = replace(BASE, model=str(folder))
    before = _key(params)
    assert jobkey.job_key(params).made_of["model"]["folder"] == str(folder.resolve())
    weights.write_bytes(b"12345")  # new weights
    assert _key(params) != before


def _finished(
    root: Path,
    key: jobkey.JobKey,
    label: str,
    *,
    when: int,
    ok: bool = True,
    device: str = "cpu",
    precision: str = "fp32",
) -> Path:
    # Named as new_job_dir names folders, with the start time ``when``.
    folder = root / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}-{label}-000000"
    folder.mkdir(parents=True)
    jobkey.write_key(folder, key)
    jobdir.write_request(folder, BASE.to_json())
    if not ok:
        jobdir.write_error(folder, ShapEError(-32005, "it failed", ""))
    else:
        mesh = MeshData(
            np.zeros((3, 3), np.float32), np.array([[0, 1, 2]]), np.zeros((3, 3), np.float32)
        )
        mesh.save(jobdir.mesh_path(folder, 0))
        entry = MeshEntry(0, seed=0, path=str(jobdir.mesh_path(folder, 0)), vertices=3, faces=1)
        made = replace(BASE.resolved(), device=device, precision=precision).to_json()
        jobdir.write_result(folder, JobResult(str(folder), made, (entry,)))
    return folder


def test_find_done_takes_the_newest_finished_folder_with_the_key(tmp_path):
    key = jobkey.job_key(BASE)
    other = jobkey.job_key(replace(BASE, seed=5))
    assert jobkey.find_done(tmp_path, key.key) is None
    assert jobkey.find_done(tmp_path / "missing", key.key) is None
    _finished(tmp_path, other, "other", when=3000)
    failed = _finished(tmp_path, key, "failed", when=4000, ok=False)
    old = _finished(tmp_path, key, "old", when=1000)
    (tmp_path / "stray-file").write_text("x")
    (tmp_path / "not-a-job").mkdir()
    assert jobkey.find_done(tmp_path, key.key) == old
    # Folder names begin with their start time; rename one to be the newest.
    new = old.with_name("29991231-235959-new-abcdef")
    shutil.copytree(old, new)
    assert jobkey.find_done(tmp_path, key.key) == new
    # A folder whose mesh file is gone is not a cache entry any more.
    jobdir.mesh_path(new, 0).unlink()
    assert jobkey.find_done(tmp_path, key.key) == old
    assert jobkey.read_key(failed) == key.key and jobkey.read_key(tmp_path / "not-a-job") is None


def test_find_done_matches_the_device_class_and_precision_a_request_names(tmp_path):
    key = jobkey.job_key(BASE)
    gpu = _finished(tmp_path, key, "gpu", when=2000, device="cuda:1", precision="fp16")
    cpu = _finished(tmp_path, key, "cpu", when=1000, device="cpu", precision="fp32")
    assert jobkey.find_done(tmp_path, key.key) == gpu  # auto: the newest, wherever it was made
    assert jobkey.find_done(tmp_path, key.key, device="cuda:0") == gpu  # cuda:1's class
    assert jobkey.find_done(tmp_path, key.key, device="cuda") == gpu
    assert jobkey.find_done(tmp_path, key.key, device="cpu") == cpu
    assert jobkey.find_done(tmp_path, key.key, device="mps") is None
    assert jobkey.find_done(tmp_path, key.key, precision="fp32") == cpu
    assert jobkey.find_done(tmp_path, key.key, device="cuda", precision="fp32") is None
