"""The headless scene command: ``python -m shape_e_blender.blender.scene_cli``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import bpy
import pytest

from shape_e_blender.core import jobdir
from tests.support import (
    HAS_EGL,
    NO_EGL_REASON,
    REPO,
    WORKER_PYTHON,
    child_env,
    interrupt,
    run_blender_script,
    run_child,
    until_no_worker_serves,
    workers_serving,
)


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


@pytest.mark.main_blender
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


@pytest.mark.main_blender
def test_an_asset_ready_object_from_the_command_renders_to_a_picture(tmp_path, worker_text_model):
    """The dense vertex-coloured mesh beside the same shape decimated to 3,000 faces with a
    baked 512 texture, rendered with Cycles: out/asset-texture.png (the README's picture). The
    saved .blend holds the textured object as a marked asset, in the library folder too."""
    import numpy as np
    import pytest

    from shape_e_blender.core.mesh import MeshData

    from .images import read_pixels

    jobs, library = tmp_path / "jobs", tmp_path / "library"
    common = ["--prompt", "a red chair", "--model", str(worker_text_model), "--seed", "7",
              "--steps", "16", "--grid-size", "96", "--no-download"]  # fmt: skip
    dense = _run(*common, "--jobs-dir", str(jobs / "dense"), "-o", str(tmp_path / "dense.blend"))
    assert dense.returncode == 0, dense.stdout[-3000:] + dense.stderr[-3000:]
    asset = _run(
        *common, "--faces", "3000", "--texture", "512", "--size", "1.2", "--mark-asset",
        "--asset-library", str(library), "--jobs-dir", str(jobs / "asset"),
        "-o", str(tmp_path / "asset.blend"),
    )  # fmt: skip
    assert asset.returncode == 0, asset.stdout[-3000:] + asset.stderr[-3000:]
    with bpy.data.libraries.load(str(tmp_path / "asset.blend"), assets_only=True) as (src, _):
        assert src.objects == ["Red chair"]
    assert (library / "red-chair.blend").is_file()
    (full,) = jobs.glob("dense/*/0/mesh.npz")
    (light,) = jobs.glob("asset/*/0/mesh.npz")
    assert MeshData.load(light).texture is not None
    assert MeshData.load(full).face_count > 10 * MeshData.load(light).face_count
    if not HAS_EGL:
        pytest.skip(NO_EGL_REASON)
    picture = REPO / "out" / "asset-texture.png"
    result = run_blender_script(
        "tests.blender.children.showcase", str(full), str(light), "-o", str(picture),
        "--name", "a red chair", "--engine", "CYCLES", "--resolution", "384", "--samples", "16",
    )  # fmt: skip
    print(f"rendered picture: {result['path']}")
    pixels = read_pixels(result["path"])
    opaque = pixels[..., 3] > 0.99
    assert 0.05 < opaque.mean() < 0.9
    # Both halves show a coloured object: the texture reached the pixels as the colours did.
    width = pixels.shape[1]
    for half in (opaque[:, : width // 2], opaque[:, width // 2 :]):
        assert half.mean() > 0.02
    right = pixels[:, width // 2 :][opaque[:, width // 2 :]][:, :3]
    assert len(np.unique((right * 255).round().astype(np.uint8), axis=0)) > 100


def _spec(folder, text_model) -> str:
    path = folder / "props.toml"
    path.write_text(
        f"""
[defaults]
steps = 2
grid_size = 32
text_model = "{text_model}"

[[object]]
name = "Chair"
prompt = "a red chair"
location = [1, 0, 0]
collection = "Props"

[[object]]
name = "Lamp"
prompt = "a lamp"
size = 0.4
""",
        encoding="utf-8",
    )
    return str(path)


@pytest.mark.main_blender
def test_a_spec_builds_a_scene_and_a_second_run_generates_nothing(tmp_path, worker_text_model):
    spec, out, jobs = _spec(tmp_path, worker_text_model), tmp_path / "props.blend", tmp_path / "j"
    args = (spec, "-o", str(out), "--jobs-dir", str(jobs), "--no-download")
    proc = _run(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Chair: generate: Chair (" in proc.stdout and "Lamp: generate: Lamp (" in proc.stdout
    assert "1/2 Chair" in proc.stderr and "2/2 Lamp" in proc.stderr  # the progress
    folders = sorted(p.name for p in jobs.iterdir() if p.is_dir())
    assert len(folders) == 2
    with bpy.data.libraries.load(str(out)) as (data_from, _data_to):
        assert {"Chair", "Lamp", "Camera"} <= set(data_from.objects)
        assert "Props" in data_from.collections
    log = (jobs / "worker.log").read_text()
    proc = _run(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(0 generated, 0 reused, 2 unchanged)" in proc.stdout
    assert "Chair: unchanged" in proc.stdout
    # No worker ran: it would have written to its log, and made job folders.
    assert (jobs / "worker.log").read_text() == log
    assert sorted(p.name for p in jobs.iterdir() if p.is_dir()) == folders


@pytest.mark.main_blender
def test_a_spec_with_a_failing_object_saves_the_others_and_exits_1(tmp_path, worker_text_model):
    spec = _spec(tmp_path, worker_text_model)
    (tmp_path / "broken").mkdir()  # a model folder with nothing in it
    path = Path(spec)
    path.write_text(path.read_text().replace('"a lamp"', '"a lamp"\nmodel = "broken"'))
    out = tmp_path / "props.blend"
    proc = _run(spec, "-o", str(out), "--jobs-dir", str(tmp_path / "j"), "--no-download")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 of 2 objects of props.toml failed" in proc.stderr
    assert "object 2 ('Lamp'): " in proc.stderr and proc.stderr.count("object 2 ('Lamp')") == 1
    assert "Lamp: failed" in proc.stdout and f"saved {out}" in proc.stdout
    with bpy.data.libraries.load(str(out)) as (data_from, _data_to):
        assert "Chair" in data_from.objects and "Lamp" not in data_from.objects


def test_a_bad_spec_or_a_mix_of_forms_is_refused_before_blender_starts(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('[[object]]\nprompt = "a cup"\ngrid = 3\n', encoding="utf-8")
    proc = _run(str(spec), "-o", str(tmp_path / "x.blend"))
    assert proc.returncode == 2
    assert "object 1 ('Cup'), grid: is not an object key" in proc.stderr
    proc = _run(str(spec), "--prompt", "a cup", "-o", str(tmp_path / "x.blend"))
    assert proc.returncode == 2 and "not both" in proc.stderr
    proc = _run(str(spec), "--steps", "3", "-o", str(tmp_path / "x.blend"))
    assert proc.returncode == 2 and "--steps: with a spec" in proc.stderr
    proc = _run("-o", str(tmp_path / "x.blend"))
    assert proc.returncode == 2 and "give a scene spec" in proc.stderr
    assert not (tmp_path / "x.blend").exists()


def test_the_progress_is_one_line_redrawn_on_a_terminal_and_a_line_per_stage_elsewhere():
    from shape_e_blender.blender.console import ProgressLine
    from shape_e_blender.blender.status import Status

    st = Status(state="running", kind="scene", stage="sampling", step=5, total=10, part=1,
                parts=2, part_label="Chair", overall_eta_s=40.0)  # fmt: skip
    master, slave = os.openpty()  # a real terminal
    with os.fdopen(slave, "w") as tty:
        line = ProgressLine(tty)
        line.show(st)
        st.step = 6
        line.show(st)
    drawn = b""
    while True:  # everything written, however the terminal hands it over
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the writing side is closed and all was read
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    drawn = drawn.decode()
    assert drawn.count("\r[") == 2 and "1/2 Chair: Sampling 6/10, 40 s left in all" in drawn
    assert "[######" in drawn and "\n" not in drawn.strip()

    import io

    log = io.StringIO()  # not a terminal: a line when the object or the stage changes
    line = ProgressLine(log)
    for stage, part in (("sampling", 1), ("sampling", 1), ("decoding", 1), ("sampling", 2)):
        st.stage, st.part = stage, part
        line.show(st)
    assert len(log.getvalue().splitlines()) == 3


@pytest.mark.main_blender
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGSTOP and /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_build_stopped_mid_job_cancels_it_saves_nothing_and_leaves_no_worker(
    tmp_path, worker_text_model, signum
):
    """Ctrl+C raised KeyboardInterrupt inside the operator: Blender printed its traceback, the
    job failed as "released", and the file was saved with the object failed."""
    spec, out, jobs = tmp_path / "one.toml", tmp_path / "one.blend", tmp_path / "jobs"
    spec.write_text(f'[[object]]\nprompt = "a cup"\nsteps = 2\ngrid_size = 256\n'
                    f'model = "{worker_text_model}"\n')  # fmt: skip
    command = [sys.executable, "-m", "shape_e_blender.blender.scene_cli", str(spec)]
    command += ["--worker-python", WORKER_PYTHON, "--jobs-dir", str(jobs), "-o", str(out)]
    blender = subprocess.Popen(
        command, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )  # fmt: skip
    try:
        assert blender.stderr is not None
        seen = []
        for raw in blender.stderr:  # progress lines, one per stage
            seen.append(raw.decode())
            if "Extracting mesh" in seen[-1]:
                break
        assert len(workers_serving(jobs)) == 1
        stdout, stderr = interrupt(blender, signum)
    finally:
        if blender.poll() is None:
            blender.kill()
            blender.wait()
    everything = stdout.decode() + "".join(seen) + stderr.decode()
    assert blender.returncode == 130, everything[-3000:]
    assert "interrupted: nothing was saved" in stderr.decode()
    assert "Traceback" not in everything and not out.exists()
    (folder,) = jobs.glob("2*")
    assert jobdir.read_job(folder).state == jobdir.CANCELLED
    assert until_no_worker_serves(jobs) == []  # stopped, then reaped by whoever adopts it
