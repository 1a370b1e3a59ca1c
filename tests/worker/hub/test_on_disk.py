"""core.weights.on_disk (the add-on's check, in a Python without huggingface_hub) against
huggingface_hub itself: the same cache folder for every environment, the same verdict on a
cached snapshot as the worker's offline lookup."""

from __future__ import annotations

import shutil

import pytest

from shape_e_blender.core.weights import hub_cache, on_disk
from shape_e_blender.worker.hub.download import cached_snapshot

from ..workerproc import child_env, run_python

REPO_ID = "someone/tiny-shap-e"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HF_HOME": "/tmp/hf-home"},
        {"XDG_CACHE_HOME": "/tmp/xdg"},
        {"HF_HOME": "/tmp/hf-home", "HF_HUB_CACHE": "/tmp/hub-cache"},
        {"XDG_CACHE_HOME": "/tmp/xdg", "HF_HOME": "/tmp/hf-home"},
    ],
)
def test_the_hub_cache_folder_is_huggingface_hubs_own(tmp_path, env):
    base = {
        k: v
        for k, v in child_env().items()
        if k not in ("HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME", "HUGGINGFACE_HUB_CACHE")
    }
    code = "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)"
    proc = run_python("-c", code, env=base | env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(hub_cache(base | env)) == proc.stdout.strip()


def test_a_cached_snapshot_is_on_disk_exactly_when_the_workers_lookup_finds_it_complete(
    tmp_path, tiny_text_model
):
    cache = tmp_path / "hub"
    env = {"HF_HUB_CACHE": str(cache)}
    assert not on_disk(REPO_ID, "text", env)
    repo = cache / ("models--" + REPO_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(tiny_text_model, snapshot)
    assert not on_disk(REPO_ID, "text", env)  # no refs/main: not the main branch's
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    assert on_disk(REPO_ID, "text", env)
    assert cached_snapshot(REPO_ID, kind="text", cache_dir=cache) == (snapshot, [])
    assert not on_disk(REPO_ID, "image", env)  # the text repo lacks the image encoder
    assert cached_snapshot(REPO_ID, kind="image", cache_dir=cache)[1]
    # A local folder counts as itself; a component gone makes it, and the snapshot, incomplete.
    assert on_disk(str(snapshot), "text")
    shutil.rmtree(snapshot / "prior")
    assert not on_disk(REPO_ID, "text", env) and not on_disk(str(snapshot), "text")
    assert cached_snapshot(REPO_ID, kind="text", cache_dir=cache)[1]
    assert not on_disk(str(tmp_path / "nowhere"), "text")
