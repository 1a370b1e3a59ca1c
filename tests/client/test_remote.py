"""A worker reached through a command (client/remote.py), against the real worker: the command
is a wrapper that gives it another HOME, jobs root, working folder and copy of the package, so
nothing but the command's stdin and stdout joins it to the client."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shape_e_blender.client.remote import RemoteWorkerClient, split_command
from shape_e_blender.core import jobdir
from shape_e_blender.core.errors import CANCELLED, INVALID_PARAMS, WORKER_EXITED, ShapEError
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
