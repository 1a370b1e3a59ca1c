"""A worker killed (SIGKILL) past sampling: while decoding and while writing the job's files.

The client sees a real worker subprocess die; the job folder it leaves is read back as the add-on
reads it (core/jobdir.py). The sampling case is test_client.py's killed-worker test.
"""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

import pytest

from shape_e_blender.client.client import WorkerClient
from shape_e_blender.core import jobdir
from shape_e_blender.core.errors import WORKER_EXITED, ShapEError
from shape_e_blender.core.files import PART_SUFFIX
from shape_e_blender.core.params import GenerationParams
from shape_e_blender.core.protocol import GenerateRequest
from tests.support import FAST, kill_process

from .test_client import _request, _until_stage, _wait_all

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGSTOP") or not hasattr(os, "mkfifo"), reason="needs POSIX"
)


def _part(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


def _failed_and_left_no_result(client: WorkerClient, job, folder) -> None:
    """The job failed as a dead worker's; its folder reads as interrupted, with no half file."""
    _wait_all(client, job)
    assert job.error is not None and job.error.code == WORKER_EXITED
    assert "exited" in job.error.message and "Generate" in job.error.hint
    assert jobdir.read_job(folder).state == jobdir.INTERRUPTED
    assert list(folder.rglob(f"*{PART_SUFFIX}")) == []
    assert not (folder / jobdir.RESULT_FILE).exists()
    with pytest.raises(ShapEError) as refused:
        jobdir.load_result(folder)
    assert refused.value.field == "job_dir" and "has no result" in refused.value.message


def _then_a_new_worker_runs_a_job(client: WorkerClient, dead: int, model, folder=None) -> None:
    again = client.generate(_request(model, folder))
    _wait_all(client, again)
    assert again.raise_for_error()["meshes"][0]["faces"] > 0
    assert client.pid not in (None, dead)


def test_a_worker_killed_while_decoding_fails_the_job_and_the_next_job_runs(
    client, worker_text_model, tmp_path
):
    folder = tmp_path / "job"
    job = client.generate(_request(worker_text_model, folder, grid_size=256))
    _until_stage(client, job, "decoding")
    pid = client.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    # Frozen, the worker is where its progress said: extracting variant 0 (seconds at grid 256),
    # whose mesh file it has not begun to write. Were decoding over, this fails rather than
    # letting the test pass without a kill mid-decoding.
    mesh = jobdir.mesh_path(folder, 0)
    assert not mesh.exists() and not _part(mesh).exists()
    assert jobdir.latent_path(folder, 0).is_file()  # saved whole before decoding began
    kill_process(pid)
    _failed_and_left_no_result(client, job, folder)
    _then_a_new_worker_runs_a_job(client, pid, worker_text_model)


def _first_bytes(client: WorkerClient, job, fd: int) -> bytes:
    """Wait until the worker writes into the FIFO at ``fd``; the first bytes it wrote."""
    while True:
        assert not job.done, f"the job ended before writing its mesh: {job.error}"
        ready, _, _ = select.select([fd], [], [], 0.25)
        if ready and (data := os.read(fd, 4096)):
            return data
        client.poll(timeout=0.1)  # no writer yet: read returns b"" at once; wait here instead


def test_a_worker_killed_while_writing_leaves_no_half_file_and_the_folder_runs_again(
    client, worker_text_model, tmp_path
):
    """The mesh's .part is made a FIFO beforehand, so that the worker's write of the mesh (about
    300 KB, far past a pipe's 64 KiB) stops inside the write until the test kills it: no timing.
    A live worker's .part is kept; the dead worker's goes when the folder is read back."""
    folder = tmp_path / "job"
    part = _part(jobdir.mesh_path(folder, 0))
    part.parent.mkdir(parents=True)
    os.mkfifo(part)
    job = client.generate(_request(worker_text_model, folder))
    fd = os.open(part, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert _first_bytes(client, job, fd).startswith(b"PK")  # the .npz (a zip) under way
        pid = client.pid
        assert pid is not None
        # Alive and mid-write, the worker holds its folder: reading it keeps the .part.
        assert jobdir.read_job(folder).state == jobdir.INTERRUPTED
        assert part.exists()
        kill_process(pid)
        _failed_and_left_no_result(client, job, folder)
    finally:
        os.close(fd)
    assert not jobdir.mesh_path(folder, 0).exists()
    _then_a_new_worker_runs_a_job(client, pid, worker_text_model, folder)
    assert jobdir.read_job(folder).state == jobdir.DONE


def test_a_folder_reused_for_a_new_job_never_reads_as_the_old_result_mid_job_or_after_a_kill(
    client, worker_text_model, tmp_path
):
    """A job given a folder that holds a finished job: from its start the folder reads as the
    new request (running, or interrupted once its worker is killed), not as the old result."""
    folder = tmp_path / "job"
    client.wait(client.generate(_request(worker_text_model, folder, seed=7)), 120).raise_for_error()
    assert jobdir.read_job(folder).state == jobdir.DONE
    params = GenerationParams.create(
        prompt="a blue vase", seed=3, model=str(worker_text_model), **(FAST | {"steps": 400})
    )
    job = client.generate(GenerateRequest(params, job_dir=str(folder)))
    _until_stage(client, job, "sampling")
    pid = client.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # frozen mid-sampling: no result of its own yet
    for running, state in ((True, jobdir.RUNNING), (False, jobdir.INTERRUPTED)):
        record = jobdir.read_job(folder, running=running)
        assert (record.state, record.label, record.seed) == (state, "a blue vase", 3)
    # The old job's mesh is still on disk; nothing reads it as the new job's.
    assert not (folder / jobdir.RESULT_FILE).exists() and jobdir.mesh_path(folder, 0).exists()
    kill_process(pid)
    _failed_and_left_no_result(client, job, folder)
    record = jobdir.read_job(folder)
    assert (record.label, record.meshes) == ("a blue vase", ())
