"""The headless CLI, run as a real subprocess: python -m shape_e_blender ..."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from shape_e_blender.core import jobdir
from shape_e_blender.core.errors import JOB_FAILED
from shape_e_blender.core.files import PART_SUFFIX
from shape_e_blender.core.mesh import MeshData
from tests.support import small_disk
from tests.worker.mesh.test_export import khronos_validate

from .workerproc import child_env, run_python

FAST = ["--steps", "3", "--grid-size", "32"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = child_env(HF_HOME=str(cwd / "hf-home"))
    return run_python("-m", "shape_e_blender", *args, env=env, cwd=cwd)


def generate(
    source: list[str], model: Path, output: Path, *args: str
) -> subprocess.CompletedProcess:
    """``generate`` from ``source`` (e.g. ["--prompt", "a chair"]) to ``output``; it must succeed.

    Runs in the output's folder.
    """
    cwd = output.parent
    r = cli("generate", *source, "--model", str(model), *args, "-o", str(output), cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r


def test_generate_glb_with_progress(tiny_text_model, tmp_path):
    out = tmp_path / "chair.glb"
    job = ["--job-dir", str(tmp_path / "job")]
    r = generate(["--prompt", "a chair"], tiny_text_model, out, *FAST, *job)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and (tmp_path / "job" / "0" / "mesh.npz").is_file()
    assert "sampling" in r.stderr  # progress lines (not a terminal here: one per stage/decile)
    # transformers' warning that CLIPImageProcessor falls back to the PIL one: nothing is wrong.
    assert "torchvision" not in r.stderr
    assert "chair.glb" in r.stdout and "faces" in r.stdout
    scene = trimesh.load(out)
    mesh = MeshData.load(tmp_path / "job" / "0" / "mesh.npz")
    assert sum(len(g.faces) for g in scene.geometry.values()) == mesh.face_count


def test_faces_texture_and_size_make_an_asset_ready_glb(tiny_text_model, tmp_path):
    out = tmp_path / "chair.glb"
    job = tmp_path / "job"
    settings = ["--steps", "3", "--grid-size", "64", "--faces", "3000", "--texture", "128"]
    r = generate(["--prompt", "a chair"], tiny_text_model, out, *settings, "--size", "1.5",
                 "--job-dir", str(job))  # fmt: skip
    assert "texturing" in r.stderr
    mesh = MeshData.load(job / "0" / "mesh.npz")
    assert abs(mesh.face_count - 3000) <= 150 and mesh.texture is not None
    assert mesh.texture.shape == (128, 128, 3)
    png = job / "0" / jobdir.TEXTURE_FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scene = trimesh.load(out)
    back = next(iter(scene.geometry.values()))
    assert back.visual.kind == "texture" and len(back.faces) == mesh.face_count
    # --size: the file's largest dimension is 1.5 m; the job folder keeps the native size.
    assert float(back.extents.max()) == pytest.approx(1.5, rel=1e-5)
    assert float((mesh.vertices.max(0) - mesh.vertices.min(0)).max()) != pytest.approx(1.5)
    request = json.loads((job / jobdir.REQUEST_FILE).read_text())
    assert request["resolved"]["faces"] == 3000 and request["resolved"]["texture_size"] == 128
    khronos_validate(out)  # the real textured GLB, not only a hand-made one
    assert "kept whole" not in r.stderr


def test_faces_above_the_mesh_keep_it_whole_and_say_so(tiny_text_model, tmp_path):
    out = tmp_path / "chair.npz"
    r = generate(["--prompt", "a chair"], tiny_text_model, out, *FAST, "--faces", "1000000",
                 "--job-dir", str(tmp_path / "job"))  # fmt: skip
    mesh = MeshData.load(out)
    assert 0 < mesh.face_count < 1_000_000
    message = f"faces: the mesh has {mesh.face_count} faces, no more than the 1000000 asked"
    assert f"chair.npz: {message}" in r.stderr and "kept whole" in r.stderr
    result = json.loads((tmp_path / "job" / jobdir.RESULT_FILE).read_text())
    assert result["meshes"][0]["warnings"][0].startswith(message)


def test_variants_are_numbered_and_formats_follow_the_suffix(tiny_text_model, tmp_path):
    settings = [*FAST, "--variants", "2", "--seed", "4"]
    r = generate(["--prompt", "a table"], tiny_text_model, tmp_path / "t.ply", *settings)
    assert (tmp_path / "t_0.ply").is_file() and (tmp_path / "t_1.ply").is_file()
    assert not (tmp_path / "t.ply").exists()
    assert "seed 4" in r.stdout and "seed 5" in r.stdout
    a = trimesh.load(tmp_path / "t_0.ply")
    b = trimesh.load(tmp_path / "t_1.ply")
    assert len(a.faces) > 0 and len(b.faces) > 0
    assert a.visual.vertex_colors.shape[0] == len(a.vertices)


def test_latent_redecode_to_obj_and_npz(tiny_text_model, tmp_path):
    job = tmp_path / "job"
    generate(
        ["--prompt", "a bowl"], tiny_text_model, tmp_path / "a.npz", *FAST, "--job-dir", str(job)
    )
    latent = ["--latent", str(job / "0" / "latent.npy")]
    generate(latent, tiny_text_model, tmp_path / "b.obj", "--grid-size", "48")
    coarse = MeshData.load(tmp_path / "a.npz")
    fine = trimesh.load(tmp_path / "b.obj", process=False)
    assert len(fine.faces) > coarse.face_count


def test_tiny_model_with_other_sizes_built_by_the_cli(tmp_path):
    model = tmp_path / "other"
    r = cli(
        "tiny-model", str(model), "--other-sizes", "--seed", "3", "--renderer-bin", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert (model / "model_index.json").is_file()
    assert list((model / "shap_e_renderer").glob("*.bin"))
    generate(["--prompt", "a boat"], model, tmp_path / "boat.npz", *FAST)
    mesh = MeshData.load(tmp_path / "boat.npz")
    assert mesh.face_count > 0 and np.isfinite(mesh.vertices).all()


def test_without_model_and_hub_the_error_is_about_the_download(tmp_path):
    r = cli("generate", "--prompt", "a chair", *FAST, "-o", str(tmp_path / "x.glb"), cwd=tmp_path)
    assert r.returncode == 1
    assert "openai/shap-e" in r.stderr
    assert "hint:" in r.stderr and "--model" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--grid-size", "8"], "grid_size"),
        (["--seed", "-3"], "seed"),
        (["-o", "out.fbx"], "output"),
        (["--size", "-1"], "size"),
        (["--texture", "5000"], "texture_size"),
        (["--texture", "1000"], "texture_size"),
        (["--faces", "10"], "faces"),
        (["--texture", "256", "--faces", "60000"], "faces"),
        (["-o", "y" * 300 + ".glb"], "output"),  # a name too long: a traceback from is_dir()
    ],
)
def test_bad_arguments_name_the_field(tmp_path, args, field):
    base = ["generate", "--prompt", "a chair", "--model", str(tmp_path), "-o", "out.glb"]
    r = cli(*base, *args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert field in r.stderr and "hint:" in r.stderr


def test_doctor_runs_the_offline_self_test(tmp_path):
    r = cli("doctor", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "torch" in r.stdout and "cpu" in r.stdout
    assert "openai/shap-e" in r.stdout and "not downloaded" in r.stdout
    assert "ok:" in r.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_a_terminal_gets_a_progress_bar(tiny_text_model, tmp_path):
    import pty

    master, slave = pty.openpty()
    env = child_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shape_e_blender", "generate", "--prompt", "a cup", "--model",
         str(tiny_text_model), "--steps", "8", "--grid-size", "32", "-o", str(tmp_path / "c.npz")],
        stdout=subprocess.DEVNULL, stderr=slave, env=env, cwd=tmp_path,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(300) == 0
    text = b"".join(chunks).decode("utf-8", "replace")
    # one line redrawn in place (carriage returns), with a bar that fills up, per stage
    assert text.count("\r") >= 15
    assert "sampling    [" in text and "] 15/15" in text
    assert "#" * 30 in text
    # The extraction counts in thousandths, with the time left: not 0/1 until it is done.
    shares = [float(m) for m in re.findall(r"decoding +\[[# ]*\] (\d+\.\d)%", text)]
    assert shares[-1] == 100.0 and any(0 < s < 100 for s in shares), shares
    assert re.search(r"decoding +\[[# ]*\] \d+\.\d%, (<1|\d+) s left", text)


def test_a_failed_job_prints_its_error_once_and_no_traceback(tiny_text_model, tmp_path):
    """A broken model folder printed two or three tracebacks, and the error twice."""
    broken = shutil.copytree(tiny_text_model, tmp_path / "broken")
    weights = broken / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    r = cli("generate", "--prompt", "a chair", "--model", str(broken), *FAST, "--job-dir",
            str(tmp_path / "job"), "-o", str(tmp_path / "x.glb"), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    error = next(line for line in r.stderr.splitlines() if line.startswith("error: "))
    assert "text_encoder" in error and r.stderr.count(error[len("error: ") :]) == 1, r.stderr
    assert "Traceback" in (tmp_path / "job" / "job.log").read_text()  # kept where it belongs


def test_a_disk_that_fills_up_mid_job_gives_one_clear_error_and_leaves_the_folder_failed(
    tiny_text_model, tmp_path
):
    """A full jobs disk printed four tracebacks, answered internal_error ("a bug in the
    worker"), and left mesh.npz.part, an empty error.json.part and no error.json."""
    with small_disk(tmp_path / "jobs") as jobs:  # the latent fits, the mesh does not
        r = cli("generate", "--prompt", "a cup", "--model", str(tiny_text_model), "--steps", "2",
                "--grid-size", "64", "--jobs-root", str(jobs), "-o", str(tmp_path / "c.npz"),
                cwd=tmp_path)  # fmt: skip
        assert r.returncode == 1
        assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1, r.stderr
        assert "No space left on device" in r.stderr and "free some space" in r.stderr
        (folder,) = [p for p in jobs.iterdir() if p.is_dir()]
        job = jobdir.read_job(folder)
        assert job.state == jobdir.FAILED and not (folder / jobdir.RESULT_FILE).exists()
        assert "No space left on device" in job.message
        error = json.loads((folder / jobdir.ERROR_FILE).read_text())["error"]
        assert error["code"] == JOB_FAILED and error["data"]["field"] == "jobs_dir"
        assert list(jobs.rglob(f"*{PART_SUFFIX}")) == []
        assert (folder / jobdir.REQUEST_FILE).is_file()  # the job is still there to run again


def test_download_and_tiny_model_refuse_what_they_cannot_use_in_one_line(tmp_path):
    """download of something that is no repo id raised HFValidationError; tiny-model into a
    file raised FileExistsError: both as tracebacks."""
    (tmp_path / "file").write_text("x")
    for args, says in (
        (["download", "--model", "../x"], "error: ../x is not a hub repo id"),
        (["tiny-model", str(tmp_path / "file")], "error: folder: cannot write"),
    ):
        r = cli(*args, cwd=tmp_path)
        assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith(says) and "hint:" in r.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_report_that_cannot_be_written_is_one_line_not_a_traceback(tiny_text_model, tmp_path):
    """stdout read by a command that went away (`| head`) or on a full disk: print() raised
    BrokenPipeError or OSError out of the CLI, after the mesh file was written."""
    command = [sys.executable, "-m", "shape_e_blender", "generate", "--prompt", "a cup"]
    command += ["--model", str(tiny_text_model), *FAST, "-o", str(tmp_path / "cup.glb")]
    with Path("/dev/full").open("w") as full:
        r = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True,
                           env=child_env(), cwd=tmp_path, timeout=600, check=False)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.rstrip().endswith("error: cannot write the report: No space left on device")
    gone = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=child_env(), cwd=tmp_path)  # fmt: skip
    assert gone.stdout is not None
    gone.stdout.close()  # the reader is gone before anything is printed
    _, stderr = gone.communicate(timeout=600)
    assert gone.returncode == 1 and b"Traceback" not in stderr and b"Error" not in stderr
    assert (tmp_path / "cup.glb").is_file()
