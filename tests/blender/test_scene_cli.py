"""The headless scene command: ``python -m shape_e_blender.blender.scene_cli``."""

from __future__ import annotations

import subprocess
import sys

import bpy

from tests.support import HAS_EGL, NO_EGL_REASON, REPO, WORKER_PYTHON, run_blender_script, run_child


def _run(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_child(
        sys.executable,
        "-m",
        "shape_e_blender.blender.scene_cli",
        *args,
        "--worker-python",
        WORKER_PYTHON,
        env_extra=env_extra,
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
    lines = proc.stderr.splitlines()
    message = next(ln for ln in lines if ln.startswith("error: "))[len("error: ") :]
    hint = next(ln for ln in lines if ln.startswith("hint: "))[len("hint: ") :]
    assert "openai/shap-e" in message and hint
    # Once each: not again as Blender's "Error:" report, nor from the worker's own log.
    everything = proc.stdout + proc.stderr
    assert everything.count(message) == 1 and everything.count(hint) == 1, everything
    assert not (tmp_path / "x.blend").exists()


def test_scene_command_checks_parameters_before_starting(tmp_path):
    proc = _run("--prompt", "a cup", "--steps", "0", "-o", str(tmp_path / "x.blend"))
    assert proc.returncode == 2
    assert "steps" in proc.stderr and "hint:" in proc.stderr
    proc = _run("--prompt", "a cup", "-o", str(tmp_path / "x.glb"))
    assert proc.returncode == 2 and ".blend" in proc.stderr


def test_a_generated_object_renders_to_a_picture(tmp_path, worker_text_model):
    """A tiny-model generation rendered with Cycles: out/generated.png (the README's picture)."""
    import numpy as np
    import pytest

    from .images import read_pixels

    if not HAS_EGL:
        pytest.skip(NO_EGL_REASON)
    jobs = tmp_path / "jobs"
    proc = _run(
        "--prompt", "a red chair", "--model", str(worker_text_model), "--seed", "7",
        "--steps", "16", "--grid-size", "96", "--jobs-dir", str(jobs), "--no-download",
        "-o", str(tmp_path / "chair.blend"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (mesh,) = jobs.glob("*/0/mesh.npz")
    picture = REPO / "out" / "generated.png"
    result = run_blender_script(
        "tests.blender.children.showcase", str(mesh), "-o", str(picture), "--name", "a red chair",
        "--engine", "CYCLES", "--resolution", "256", "--samples", "16",
    )  # fmt: skip
    print(f"rendered picture: {result['path']}")
    pixels = read_pixels(result["path"])
    opaque = pixels[..., 3] > 0.99
    assert 0.05 < opaque.mean() < 0.9  # the object fills part of the frame, not all of it
    # vertex colours and shading: many distinct colours, not one flat fill
    colours = np.unique((pixels[opaque][:, :3] * 255).round().astype(np.uint8), axis=0)
    assert len(colours) > 100
