"""The README's commands as a user types them: from a folder outside the repository, with
relative paths, through build.py (which runs the scene on Blender 5.2 LTS, the worker in .venv)."""

from __future__ import annotations

import sys

from tests.support import REPO, run_child


def _build(cwd, *args: str):
    return run_child(sys.executable, str(REPO / "build.py"), *args, timeout=900, cwd=cwd)


def test_the_scene_command_writes_where_it_was_typed(tmp_path):
    proc = _build(tmp_path, "tiny-model", "tiny")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "tiny" / "model_index.json").is_file()

    proc = _build(
        tmp_path, "scene", "--prompt", "a red chair", "--model", "tiny", "--steps", "2",
        "--grid-size", "32", "--jobs-dir", "jobs", "--no-download", "-o", "chair.blend",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "chair.blend").is_file()
    assert f"saved {tmp_path / 'chair.blend'}" in proc.stdout
    assert list((tmp_path / "jobs").glob("*/result.json")), "the job folder is where it was asked"
    assert not (REPO / "chair.blend").exists() and not (REPO / "tiny").exists()
