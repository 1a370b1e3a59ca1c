"""A worker reached through a command (client/remote.py), against the real worker: the command
is a wrapper that gives it another HOME, jobs root, working folder and copy of the package, so
nothing but the command's stdin and stdout joins it to the client."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import pickle
import select
import shlex
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from shape_e_blender.client.remote import RemoteWorkerClient, split_command, store_inline
from shape_e_blender.core import jobdir
from shape_e_blender.core.errors import (
    CANCELLED,
    INVALID_PARAMS,
    JOB_FAILED,
    WORKER_EXITED,
    ShapEError,
)
from shape_e_blender.core.files import PART_SUFFIX
from shape_e_blender.core.mesh import MeshData
from shape_e_blender.core.params import GenerationParams
from shape_e_blender.core.protocol import GenerateRequest
from shape_e_blender.core.results import JobResult
from tests.support import FAST, kill_process, remote_command


def _wait(client, job, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not job.done:
        assert time.monotonic() < deadline, client.stderr_tail()
        client.poll(timeout=0.25)


def _sampling(client, model: Path, tmp_path: Path, prompt: str, steps: int):
    """A long job sent to ``client``, once it is sampling: (its handle, its local folder)."""
    local = jobdir.new_job_dir(tmp_path / "local-jobs", prompt)
    params = GenerationParams.create(prompt=prompt, model=str(model), steps=steps, grid_size=32)
    job = client.generate(GenerateRequest(params, job_dir=str(local)))
    deadline = time.monotonic() + 120
    while job.progress is None or job.progress.stage != "sampling":
        assert not job.done and time.monotonic() < deadline, job.error
        client.poll(timeout=0.25)
    return job, local


@pytest.fixture
def remote(tmp_path, worker_text_model):
    command, model = remote_command(tmp_path / "gpu-box", worker_text_model)
    client = RemoteWorkerClient(command, tmp_path / "local-jobs")
    yield client, model, tmp_path
    client.kill()
    assert client.threads_alive() == []


def test_a_remote_job_comes_back_inline_into_the_local_job_folder(remote):
    client, model, tmp_path = remote
    local = jobdir.new_job_dir(tmp_path / "local-jobs", "a red chair")
    params = GenerationParams.create(prompt="a red chair", model=str(model), variants=2, **FAST)
    job = client.generate(GenerateRequest(params, job_dir=str(local)))
    assert "job_dir" not in job.params and job.params["inline"] is True  # what was sent
    _wait(client, job)
    assert job.error is None, job.error
    assert job.job_dir == str(local)
    # The folder reads back as a finished local job: the importer, Recent Jobs and the scene
    # cache need nothing else.
    record, result = jobdir.load_result(local)
    assert record.state == jobdir.DONE and record.meshes == (0, 1)
    assert [Path(m.path).parent.parent for m in result.made] == [local, local]
    assert all(Path(m.latent).is_file() for m in result.made)  # Re-mesh has its input
    answered = JobResult.from_dict(job.result)
    assert answered.job_dir == str(local) and all(m.npz_b64 is None for m in answered.made)
    assert answered.made[0].load().vertices.shape[0] == result.made[0].vertices
    sent = json.loads((local / jobdir.REQUEST_FILE).read_text())
    assert sent["request"]["job_dir"] == str(local) and sent["resolved"]["variants"] == 2
    # The remote machine kept its own job folder, under its own root.
    remote_jobs = [p for p in (tmp_path / "gpu-box" / "jobs").iterdir() if p.is_dir()]
    assert len(remote_jobs) == 1 and (remote_jobs[0] / jobdir.RESULT_FILE).is_file()
    assert str(tmp_path / "local-jobs") not in (remote_jobs[0] / jobdir.REQUEST_FILE).read_text()


def test_a_local_folder_reused_for_a_remote_job_reads_as_the_new_job_until_it_ends(remote):
    client, model, tmp_path = remote
    local = jobdir.new_job_dir(tmp_path / "local-jobs", "a red chair")
    params = GenerationParams.create(prompt="a red chair", model=str(model), **FAST)
    _wait(client, client.generate(GenerateRequest(params, job_dir=str(local))))
    assert jobdir.read_job(local).state == jobdir.DONE
    params = GenerationParams.create(prompt="a lamp", model=str(model), steps=200, grid_size=32)
    job = client.generate(GenerateRequest(params, job_dir=str(local)))
    record = jobdir.read_job(local, running=True)  # from the moment generate returns
    assert (record.state, record.label) == (jobdir.RUNNING, "a lamp")
    client.cancel(job)
    _wait(client, job)
    assert job.error is not None and job.error.code == CANCELLED
    assert jobdir.read_job(local).state == jobdir.CANCELLED


def test_a_remote_job_cancels_as_a_local_one_does(remote):
    client, model, tmp_path = remote
    job, local = _sampling(client, model, tmp_path, "a vase", steps=300)
    client.cancel(job)
    _wait(client, job)
    assert job.error is not None and job.error.code == CANCELLED
    assert jobdir.read_job(local).state == jobdir.CANCELLED
    assert client.is_running()  # the same connection takes the next job


def test_a_dropped_connection_fails_the_job_saying_so_and_leaves_its_error(remote):
    client, model, tmp_path = remote
    job, local = _sampling(client, model, tmp_path, "a lamp", steps=200)
    kill_process(client.pid)  # the connection's far end is gone
    _wait(client, job)
    assert job.error is not None and job.error.code == WORKER_EXITED
    assert "connection to the worker command was lost" in job.error.message
    assert "remote machine" in job.error.hint
    assert jobdir.read_job(local).state == jobdir.FAILED  # its error is on disk, not "interrupted"


def test_an_image_travels_inline_and_the_local_folder_names_the_users_file(
    tmp_path, worker_image_model
):
    from PIL import Image

    command, model = remote_command(tmp_path / "gpu-box", worker_image_model)
    client = RemoteWorkerClient(command, tmp_path / "local-jobs")
    try:
        image = tmp_path / "photos" / "orange ball.png"
        image.parent.mkdir()
        Image.new("RGB", (64, 64), (255, 128, 20)).save(image)
        local = jobdir.new_job_dir(tmp_path / "local-jobs", "orange ball")
        params = GenerationParams.create(image=str(image), model=str(model), **FAST)
        job = client.generate(GenerateRequest(params, job_dir=str(local)))
        _wait(client, job)
    finally:
        client.kill()
    assert job.error is None, job.error
    record, result = jobdir.load_result(local)
    assert record.state == jobdir.DONE and result.params["image"] == str(image)
    assert "image_data" not in (local / jobdir.REQUEST_FILE).read_text()
    (remote_job,) = [p for p in (tmp_path / "gpu-box" / "jobs").iterdir() if p.is_dir()]
    assert (remote_job / "source.png").read_bytes() == image.read_bytes()  # the bytes travelled


def test_latent_jobs_and_unreadable_images_are_refused_naming_the_field(tmp_path):
    client = RemoteWorkerClient("ssh gpu-box python -m shape_e_blender.worker", tmp_path)
    for source, field in (
        ({"latent": "/x/0/latent.npy"}, "latent"),
        ({"image": "/x/no.png"}, "image"),
    ):
        with pytest.raises(ShapEError) as info:
            client.generate(GenerateRequest(GenerationParams.create(**source)))
        assert info.value.code == INVALID_PARAMS and info.value.field == field
    assert client.pid is None  # nothing was started


@pytest.mark.parametrize("command", ["", "   ", "ssh 'unclosed"])
def test_a_command_that_cannot_be_read_names_the_preference(command):
    with pytest.raises(ShapEError) as info:
        split_command(command)
    assert info.value.field == "worker_command"


def _answer(vertices: int = 3, **entry) -> dict:
    """A remote worker's inline answer for one variant, ``entry`` changing its mesh entry."""
    mesh = MeshData(
        vertices=np.random.default_rng(0).random((vertices, 3), dtype=np.float32),
        faces=np.array([[0, 1, 2]]),
        colors=np.ones((vertices, 3), np.float32),
    )
    latent = io.BytesIO()
    np.save(latent, np.zeros((4, 8), np.float32))
    made = {
        "variant": 0,
        "seed": 1,
        "path": "/gpu-box/jobs/x/0/mesh.npz",
        "latent": "/gpu-box/jobs/x/0/latent.npy",
        "vertices": vertices,
        "faces": 1,
        "npz_b64": mesh.to_base64(),
        "latent_b64": base64.b64encode(latent.getvalue()).decode("ascii"),
    }
    params = {"prompt": "a cube", "seed": 1, "variants": 1}
    return {"job_dir": "/gpu-box/jobs/x", "params": params, "meshes": [made | entry]}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("entry", "field", "why"),
    [
        ({"npz_b64": None}, "npz_b64", "is missing"),
        ({"npz_b64": "not base64!"}, "npz_b64", "cannot be read"),
        ({"npz_b64": _b64(b"PK\x03\x04 not a zip")}, "npz_b64", "not a whole .npz"),
        ({"npz_b64": _b64(_npy(np.zeros((3, 3))))}, "npz_b64", "single array"),
        ({"latent_b64": "%%%"}, "latent_b64", "cannot be read as a .npy array"),
        ({"latent_b64": _b64(pickle.dumps([1.0, 2.0]))}, "latent_b64", "pickled"),
        ({"latent_b64": _b64(b"\x93NUMPY")}, "latent_b64", "cannot be read as a .npy array"),
        ({"latent_b64": _b64(_npy(np.zeros((4, 8), np.int64)))}, "latent_b64", "not a latent"),
        ({"latent_b64": _b64(_npy(np.zeros(8, np.float32)))}, "latent_b64", "not a latent"),
    ],
)
def test_a_malformed_inline_answer_is_refused_naming_its_field_and_nothing_is_written(
    tmp_path, entry, field, why
):
    folder = tmp_path / "job"
    folder.mkdir()
    with pytest.raises(ShapEError) as refused:
        store_inline(folder, {"prompt": "a cube"}, _answer(**entry))
    err = refused.value
    assert err.code == JOB_FAILED and f"meshes[0].{field} (variant 0's" in err.message
    assert why in err.message
    assert "generate again" in err.hint and "worker environment on the remote" in err.hint
    assert list(folder.iterdir()) == []  # read whole before anything was written


def test_a_remote_answer_damaged_on_its_way_fails_naming_the_field_and_leaves_its_error(
    tmp_path, worker_text_model
):
    """The real worker's answer, its mesh's first bytes zeroed on the way (a filter on the
    connection), as a broken link or a worker of another version could send it."""
    command, model = remote_command(tmp_path / "gpu-box", worker_text_model)
    damage = 's/"npz_b64":"UEsDB/"npz_b64":"AAAAA/'  # a zip starts PK\x03\x04: base64 UEsDB
    client = RemoteWorkerClient(
        ["sh", "-c", f"{shlex.join(command)} | sed -u {shlex.quote(damage)}"],
        tmp_path / "local-jobs",
    )
    try:
        local = jobdir.new_job_dir(tmp_path / "local-jobs", "a red chair")
        params = GenerationParams.create(prompt="a red chair", model=str(model), **FAST)
        job = client.generate(GenerateRequest(params, job_dir=str(local)))
        _wait(client, job)
    finally:
        client.kill()
    assert job.error is not None and job.error.code == JOB_FAILED and job.result is None
    assert "meshes[0].npz_b64 (variant 0's mesh) cannot be read" in job.error.message
    assert "worker environment on the remote machine" in job.error.hint
    record = jobdir.read_job(local)  # failed, with the same message: not interrupted
    assert record.state == jobdir.FAILED and "meshes[0].npz_b64" in record.message
    assert not jobdir.mesh_path(local, 0).exists() and list(local.rglob("*.part")) == []


def test_a_folder_is_held_while_an_answer_is_stored_into_it_so_a_reader_keeps_its_part(
    tmp_path,
):
    """The mesh's .part is made a FIFO beforehand, so that its write (about 480 KB, past a
    pipe's 64 KiB) stops inside the write until this test reads it: a reader then finds the
    folder without a result, mid-write, with no timing involved."""
    folder = tmp_path / "job"
    part = jobdir.mesh_path(folder, 0).with_name(jobdir.MESH_FILE + PART_SUFFIX)
    part.parent.mkdir(parents=True)
    os.mkfifo(part)
    outcome: dict = {}

    def store() -> None:
        try:
            outcome["result"] = store_inline(folder, {"prompt": "a cube"}, _answer(20_000))
        except BaseException as exc:
            outcome["error"] = exc

    writer = threading.Thread(target=store, daemon=True)
    fd = os.open(part, os.O_RDONLY | os.O_NONBLOCK)
    try:
        writer.start()
        written = _drain(fd, first=True)
        assert written.startswith(b"PK")  # the .npz under way, the writer stopped inside it
        record = jobdir.read_job(folder)  # no result yet; it would remove a .part nobody held
        assert record.state == jobdir.INTERRUPTED and part.exists()
        written += _drain(fd, first=False)
    finally:
        os.close(fd)
        writer.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert MeshData.from_bytes(written).vertex_count == 20_000  # the write went through whole
    assert jobdir.read_job(folder).state == jobdir.DONE


def _drain(fd: int, *, first: bool, timeout: float = 30.0) -> bytes:
    """What the FIFO at ``fd`` holds: its first bytes, or all of the rest (until its writer
    closes it: a read then gives nothing)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"nothing more after {len(data)} bytes"
        if not select.select([fd], [], [], 0.1)[0]:
            continue
        with contextlib.suppress(BlockingIOError):
            chunk = os.read(fd, 1 << 16)
            if not chunk and not first:
                return data
            data += chunk
            if data and first:
                return data
