"""The headless scene command: ``python -m shape_e_blender.blender.scene_cli``."""

from __future__ import annotations

import subprocess
import sys

from .fixtures_client import (  # noqa: F401  (fixtures are found by name)
    REPO,
    WORKER_PYTHON,
    bpy,
    child_env,
    worker_text_model_fixture,
)


def _run(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = child_env() | (env_extra or {})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "shape_e_blender.blender.scene_cli",
            *args,
            "--worker-python",
            WORKER_PYTHON,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_scene_command_saves_a_blend_with_the_generated_object(tmp_path, worker_text_model):
    out = tmp_path / "out" / "chair.blend"
    proc = _run(
        "--prompt", "a red chair", "--model", str(worker_text_model), "--seed", "3",
        "--steps", "2", "--grid-size", "32", "--jobs-dir", str(tmp_path / "jobs"),
        "--no-download", "-o", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"saved {out}" in proc.stdout
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("Red chair: "))
    vertices, faces = (int(w) for w in line.split() if w.isdigit())
    assert vertices > 0 and faces > 0
    assert f"job folder: {tmp_path / 'jobs'}" in proc.stdout
    with bpy.data.libraries.load(str(out)) as (data_from, _data_to):
        names = set(data_from.objects)
    assert "Red chair" in names and "Camera" in names and "Cube" not in names


def test_scene_command_without_a_model_and_no_hub_says_how_to_get_one(tmp_path):
    # No local weights (an empty cache) and no hub: the worker's model_unavailable error.
    proc = _run(
        "--prompt", "a red chair", "--steps", "2", "--grid-size", "32",
        "--jobs-dir", str(tmp_path / "jobs"), "-o", str(tmp_path / "x.blend"),
        env_extra={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error:" in proc.stderr and "hint:" in proc.stderr
    assert "openai/shap-e" in proc.stderr
    assert not (tmp_path / "x.blend").exists()


def test_scene_command_checks_parameters_before_starting(tmp_path):
    proc = _run("--prompt", "a cup", "--steps", "0", "-o", str(tmp_path / "x.blend"))
    assert proc.returncode == 2
    assert "steps" in proc.stderr and "hint:" in proc.stderr
    proc = _run("--prompt", "a cup", "-o", str(tmp_path / "x.glb"))
    assert proc.returncode == 2 and ".blend" in proc.stderr
