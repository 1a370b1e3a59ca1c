"""WorkerClient against the real worker subprocess (``python -m shape_e_blender.worker``)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from shape_e_blender.client import transport
from shape_e_blender.client.client import WorkerClient
from shape_e_blender.client.process import PACKAGE_DIR, clean_env, venv_python
from shape_e_blender.client.remote import RemoteWorkerClient
from shape_e_blender.core.errors import (
    CANCELLED,
    ENVIRONMENT_INCOMPLETE,
    INVALID_PARAMS,
    PROTOCOL_MISMATCH,
    WORKER_EXITED,
    ShapEError,
)
from shape_e_blender.core.mesh import MeshData
from shape_e_blender.core.params import GenerationParams
from shape_e_blender.core.protocol import PROTOCOL_VERSION, GenerateRequest
from tests.support import (
    FAST,
    NO_TORCH_PYTHON,
    NO_TORCH_REASON,
    WORKER_PYTHON,
    frozen,
    kill_process,
    process_gone,
)


def _wait_all(client: WorkerClient, job, timeout: float = 120.0) -> list:
    """Poll until ``job`` is done; returns every event seen on the way."""
    events = []
    deadline = time.monotonic() + timeout
    while not job.done:
        assert time.monotonic() < deadline, f"no answer to {job.method}; {client.stderr_tail()}"
        events += client.poll(timeout=0.25)
    return events + client.poll()


def _until_stage(client: WorkerClient, job, stage: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while job.progress is None or job.progress.stage != stage:
        assert not job.done, f"the job ended before {stage}: {job.error}"
        assert time.monotonic() < deadline, client.stderr_tail()
        client.poll(timeout=0.25)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """One client shared by the tests that leave its worker running (starting one takes seconds)."""
    c = WorkerClient(WORKER_PYTHON, tmp_path_factory.mktemp("jobs"))
    yield c
    c.kill()
    assert c.threads_alive() == []


def _request(model: Path, job_dir: Path | None = None, **kw) -> GenerateRequest:
    params = GenerationParams.create(prompt="a red chair", model=str(model), **(FAST | kw))
    return GenerateRequest(params, job_dir=str(job_dir) if job_dir else None)


def test_clean_env_drops_python_variables_and_keeps_hub_proxy_and_gpu_settings():
    base = {
        "PYTHONHOME": "/blender/python",
        "PYTHONPATH": "/blender/scripts",
        "PYTHONSAFEPATH": "1",
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "HF_HOME": "/data/hf",
        "HF_TOKEN": "secret",
        "HF_HUB_OFFLINE": "1",
        "https_proxy": "http://proxy:3128",
        "NO_PROXY": "localhost",
        "CUDA_VISIBLE_DEVICES": "1",
        "BLENDER_USER_SCRIPTS": "/somewhere",
        "LD_PRELOAD": "/lib/evil.so",
    }
    env = clean_env(PACKAGE_DIR, base)
    assert env["PYTHONPATH"] == str(PACKAGE_DIR.parent)
    assert "PYTHONHOME" not in env and "PYTHONSAFEPATH" not in env
    for kept in ("PATH", "HOME", "HF_HOME", "HF_TOKEN", "HF_HUB_OFFLINE", "https_proxy"):
        assert env[kept] == base[kept]
    assert env["NO_PROXY"] == "localhost" and env["CUDA_VISIBLE_DEVICES"] == "1"
    assert "BLENDER_USER_SCRIPTS" not in env and "LD_PRELOAD" not in env
    assert env["PYTHONIOENCODING"] == "utf-8"
    assert "PYTHONPATH" not in clean_env(None, base)


def test_venv_python_layout_for_this_os(tmp_path):
    expected = ("Scripts", "python.exe") if sys.platform == "win32" else ("bin", "python")
    assert venv_python(tmp_path).parts[-2:] == expected


def test_hello_speaks_our_protocol_and_logs_stderr(client):
    info = client.hello()
    assert info["protocol"] == PROTOCOL_VERSION
    assert {"torch", "diffusers"} <= set(info["versions"])
    assert info["devices"][-1]["name"] == "cpu"
    assert client.info is info
    assert client.status() == {"running": None, "queued": [], "loaded": []}
    pid = client.pid
    client.shutdown()
    assert client.pid is None and client.threads_alive() == []
    # stderr was drained into the log (the worker logs its start there).
    log = client.log_path.read_text()
    assert f"pid {pid}" in log


def test_generate_streams_progress_and_the_mesh_is_on_disk(warm, worker_text_model, tmp_path):
    job = warm.generate(_request(worker_text_model, tmp_path / "job", seed=5))
    events = _wait_all(warm, job)
    result = job.raise_for_error()
    sampling = [e.progress.step for e in events if e.progress and e.progress.stage == "sampling"]
    assert sampling == list(range(1, 2 * FAST["steps"]))
    assert [e.kind for e in events if e.job is job][-1] == "result"
    entry = result["meshes"][0]
    mesh = MeshData.load(entry["path"])
    assert Path(entry["path"]).parent.parent == tmp_path / "job"
    assert mesh.face_count == entry["faces"] > 0
    assert result["params"]["seed"] == 5 and result["params"]["model"] == str(worker_text_model)


def test_inline_result_is_one_long_line_matching_the_file(warm, worker_text_model, tmp_path):
    params = GenerationParams.create(
        prompt="a vase", model=str(worker_text_model), steps=2, grid_size=96
    )
    job = warm.generate(GenerateRequest(params, job_dir=str(tmp_path / "j"), inline=True))
    _wait_all(warm, job)
    entry = job.raise_for_error()["meshes"][0]
    # Far past a pipe buffer and any default line limit: the reader must take any length.
    assert len(entry["npz_b64"]) > 1 << 16
    inline = MeshData.from_base64(entry["npz_b64"])
    on_disk = MeshData.load(entry["path"])
    assert (inline.faces == on_disk.faces).all() and (inline.vertices == on_disk.vertices).all()


def test_invalid_request_comes_back_as_an_error_naming_the_field(warm):
    job = warm.download("")
    _wait_all(warm, job)
    assert job.error is not None and job.error.code == INVALID_PARAMS
    assert job.error.field == "model"


def test_cancel_mid_job_then_the_same_worker_runs_the_next(warm, worker_text_model):
    job = warm.generate(_request(worker_text_model, steps=400))
    _until_stage(warm, job, "sampling")
    pid = warm.pid
    cancel = warm.cancel(job)
    _wait_all(warm, job)
    assert job.error is not None and job.error.code == CANCELLED
    assert job.progress.step < 2 * 400 - 1
    _wait_all(warm, cancel)
    assert cancel.result == {"cancelled": True}
    again = warm.generate(_request(worker_text_model))
    _wait_all(warm, again)
    assert again.raise_for_error()["meshes"] and warm.pid == pid


def test_killed_worker_fails_the_job_with_its_log_and_the_next_call_restarts(
    client, worker_text_model
):
    job = client.generate(_request(worker_text_model, steps=400))
    queued = client.generate(_request(worker_text_model))
    _until_stage(client, job, "sampling")
    first = client.pid
    kill_process(first)
    _wait_all(client, job)
    _wait_all(client, queued)
    for failed in (job, queued):
        assert failed.error is not None and failed.error.code == WORKER_EXITED
    assert "exited" in job.error.message
    # The message ends with the tail of the worker's stderr, which the log file holds too.
    tail = job.error.message.split("the end of its log:\n", 1)[1]
    assert tail.splitlines()[-1] in client.log_path.read_text()
    assert "Generate" in job.error.hint and str(client.log_path) in job.error.hint
    again = client.generate(_request(worker_text_model))
    _wait_all(client, again)
    assert again.raise_for_error()["meshes"]
    assert client.pid not in (None, first)


def test_a_worker_silent_mid_sampling_is_killed_and_the_job_fails_with_its_log(
    tmp_path, worker_text_model
):
    """A hung worker (here frozen by SIGSTOP) left every wait without an end, and lived on."""
    c = WorkerClient(WORKER_PYTHON, tmp_path / "jobs", silence_timeout=0)
    try:
        # The first job's imports and model load are silent for seconds here: warm up first.
        c.wait(c.generate(_request(worker_text_model)), 120).raise_for_error()
        c.silence_timeout = 3
        job = c.generate(_request(worker_text_model, steps=400))
        _until_stage(c, job, "sampling")
        popen = c._worker.popen
        os.kill(popen.pid, signal.SIGSTOP)  # silent from now on; only a SIGKILL ends it
        c.wait(job, 60)
        assert job.error is not None and job.error.code == WORKER_EXITED
        assert job.error.field == "silence_timeout" and "said nothing for" in job.error.message
        assert "the end of its log" in job.error.message  # what the worker said last
        assert process_gone(popen) and popen.returncode == -signal.SIGKILL
        c.silence_timeout = 0  # a new worker takes the next job (after its silent start)
        again = c.generate(_request(worker_text_model))
        c.wait(again, 120)
        assert again.raise_for_error()["meshes"] and c.pid not in (None, popen.pid)
    finally:
        c.kill()
    assert c.threads_alive() == []


def _longest_silence(c: WorkerClient, job) -> tuple[float, float]:
    """Poll until ``job`` is done; the longest wait between two messages, and the job's time."""
    started = last = time.monotonic()
    longest = 0.0
    while not job.done:
        if c.poll(timeout=0.05):
            now = time.monotonic()
            longest, last = max(longest, now - last), now
    return longest, time.monotonic() - started


def test_progress_keeps_the_silence_watchdog_away_from_a_long_job(tmp_path, worker_text_model):
    c = WorkerClient(WORKER_PYTHON, tmp_path / "jobs", silence_timeout=0)
    try:
        # The first job's imports and model load are silent for seconds here: warm up first.
        c.wait(c.generate(_request(worker_text_model)), 120).raise_for_error()
        # The watchdog is set from what two warm 1000-step jobs measured, not assumed: the
        # shortest job's third (or ten times the longest silence, if that is less), so that the
        # next job outlives it several times over while its silences stay well inside it.
        runs = []
        for seed in (1, 2):
            job = c.generate(_request(worker_text_model, steps=1000, seed=seed))
            runs.append(_longest_silence(c, job))
            job.raise_for_error()
        longest, shortest = max(r[0] for r in runs), min(r[1] for r in runs)
        c.silence_timeout = max(min(10 * longest, shortest / 3), 0.3)
        job = c.generate(_request(worker_text_model, steps=1000, seed=3))
        _, took = _longest_silence(c, job)
        assert job.raise_for_error()["meshes"], job.error
        assert took > c.silence_timeout, f"{took:.1f} s: too short to show it ({runs})"
    finally:
        c.kill()


def test_a_worker_that_never_says_hello_is_stopped_not_orphaned(tmp_path):
    c = RemoteWorkerClient(["sleep", "600"], tmp_path / "jobs", hello_timeout=2)
    with pytest.raises(ShapEError) as info:
        c.hello()
    assert "did not answer hello within 2 s" in info.value.message
    popen = c._old[-1].popen
    assert process_gone(popen, 10)
    c.join()
    assert c.threads_alive() == []


def _hello_within(c: RemoteWorkerClient, bound: float) -> ShapEError:
    """hello's error, asserting that it came within ``bound`` seconds (a thread: a hang fails)."""
    errors: list[ShapEError] = []

    def hello() -> None:
        try:
            c.hello()
        except ShapEError as err:
            errors.append(err)

    thread = threading.Thread(target=hello, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), "hello never ended"
    assert errors
    return errors[0]


def test_a_worker_command_that_floods_its_output_is_stopped_at_the_hello_bound(tmp_path):
    """`yes` as the worker command: the client drained its queue for ever, so neither the hello
    bound nor any deadline was looked at, every line was printed on Blender's console and the
    queue grew without end."""
    c = RemoteWorkerClient(["yes"], tmp_path / "jobs", hello_timeout=2)
    try:
        err = _hello_within(c, 120)
        assert "did not answer hello within 2 s" in err.message
        assert "the rest are dropped" in err.message  # the log's tail says why
        assert err.message.count("(stdout) y") <= transport.NOISE_LINES
        assert process_gone(c._old[-1].popen, 10)
    finally:
        c.kill()
    c.join()
    assert c.threads_alive() == []


def test_a_stdout_line_past_the_bound_stops_the_worker(tmp_path, monkeypatch):
    """Lines of any length were read whole: a binary stream with no newline filled memory."""
    monkeypatch.setattr(transport, "MAX_LINE_BYTES", 1 << 20)
    c = RemoteWorkerClient(["head", "-c", "8000000", "/dev/zero"], tmp_path / "jobs")
    try:
        err = _hello_within(c, 120)
        assert "a stdout line over 1 MiB" in err.message
    finally:
        c.kill()
    c.join()


def test_kill_releases_the_worker_and_fails_the_running_job(client, worker_text_model):
    job = client.generate(_request(worker_text_model, steps=400))
    _until_stage(client, job, "sampling")
    client.kill()
    events = client.poll()
    assert [e.kind for e in events if e.job is job] == ["error"]
    assert job.error.code == WORKER_EXITED and "released" in job.error.message
    assert client.pid is None and client.threads_alive() == []


def test_missing_interpreter_names_the_preference(tmp_path):
    c = WorkerClient(tmp_path / "nope" / "python", tmp_path / "jobs")
    with pytest.raises(ShapEError) as info:
        c.hello()
    assert info.value.code == WORKER_EXITED and info.value.field == "worker_python"


def test_worker_that_cannot_start_reports_its_stderr(tmp_path):
    # A broken install: a package folder with no worker module in it.
    broken = tmp_path / "site" / "shape_e_blender"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    c = WorkerClient(sys.executable, tmp_path / "jobs", package_dir=broken, hello_timeout=60)
    with pytest.raises(ShapEError) as info:
        c.hello()
    assert info.value.code == WORKER_EXITED
    assert "No module named shape_e_blender.worker" in info.value.message
    c.join()
    assert c.threads_alive() == []


def test_protocol_mismatch_with_a_worker_copy_of_another_version(tmp_path):
    # The real worker code, copied and set to speak the next protocol version: what an old
    # add-on meets after the worker environment was updated by hand.
    copy = tmp_path / "other" / "shape_e_blender"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    proto = copy / "core" / "protocol.py"
    text = proto.read_text()
    assert f"PROTOCOL_VERSION = {PROTOCOL_VERSION}\n" in text
    proto.write_text(
        text.replace(f"PROTOCOL_VERSION = {PROTOCOL_VERSION}\n", "PROTOCOL_VERSION = 99\n")
    )
    c = WorkerClient(WORKER_PYTHON, tmp_path / "jobs", package_dir=copy)
    job = c.generate(_request(Path("unused")))
    with pytest.raises(ShapEError) as info:
        c.hello()
    assert info.value.code == PROTOCOL_MISMATCH
    assert "99" in info.value.message and "worker environment" in info.value.hint
    c.poll()
    assert job.error is not None and job.error.code == PROTOCOL_MISMATCH
    assert c.pid is None
    c.join()
    assert c.threads_alive() == []


def test_a_failed_hello_fails_the_queued_jobs_with_its_error_and_stops_the_worker(tmp_path):
    if not NO_TORCH_PYTHON:
        pytest.skip(NO_TORCH_REASON)
    c = WorkerClient(NO_TORCH_PYTHON, tmp_path / "jobs", hello_timeout=120)
    job = c.generate(_request(Path("unused")))
    popen = c._worker.popen
    with pytest.raises(ShapEError) as info:
        c.hello()
    hello_error = info.value
    assert hello_error.code == ENVIRONMENT_INCOMPLETE, hello_error
    assert "torch" in hello_error.message and hello_error.field == "worker_python"
    assert "worker environment" in hello_error.hint
    c.poll()
    # The job sent with it ends with the worker's own words: code, message, hint and field.
    assert job.done and job.error is not None
    assert (job.error.code, job.error.message, job.error.hint, job.error.field) == (
        hello_error.code,
        hello_error.message,
        hello_error.hint,
        hello_error.field,
    )
    assert c.pid is None and process_gone(popen)
    c.join()
    assert c.threads_alive() == []


@pytest.mark.parametrize("blocker", ["folder", "full disk"])
def test_a_log_that_cannot_be_written_does_not_stop_the_jobs(blocker, worker_text_model, tmp_path):
    jobs_root = tmp_path / "jobs"
    jobs_root.mkdir()
    log = jobs_root / "worker.log"
    if blocker == "folder":
        log.mkdir()  # opening it fails
    else:
        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full on this system")
        log.symlink_to("/dev/full")  # it opens; every write fails with ENOSPC
    c = WorkerClient(WORKER_PYTHON, jobs_root)
    try:
        job = c.generate(_request(worker_text_model, tmp_path / "job"))
        _wait_all(c, job)
        assert job.raise_for_error()["meshes"]
        # stderr is drained on its own thread, so the worker's "job done" line may arrive a moment
        # after the result (which comes on stdout): wait for it, bounded.
        deadline = time.monotonic() + 30
        while True:
            tail = c.stderr_tail(400).splitlines()
            note = next(i for i, line in enumerate(tail) if "cannot be written" in line)
            later = tail[note + 1 :]
            if any("job done" in line for line in later) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert str(log) in tail[note]
        # stderr was still drained after the log failed: the worker's later lines are here.
        assert any("job done" in line for line in later), tail
        assert set(c.status()) >= {"running", "queued"}  # and the worker still answers
    finally:
        c.kill()
    assert c.threads_alive() == []


def test_a_broken_output_stream_still_ends_the_jobs(client, worker_text_model):
    job = client.generate(_request(worker_text_model, steps=400))
    _until_stage(client, job, "sampling")
    popen = client._worker.popen
    # Our end of the worker's stdout closes under the reader (a read error): its loop ends with
    # an exception, and the job must still end rather than wait forever.
    popen.stdout.close()
    _wait_all(client, job, timeout=60)
    assert job.error is not None and job.error.code == WORKER_EXITED
    assert "reading the worker's output failed" in client.stderr_tail()
    assert client.pid is None and process_gone(popen)


def test_stopping_without_waiting_returns_at_once_and_the_worker_goes(client, worker_text_model):
    job = client.generate(_request(worker_text_model))
    _wait_all(client, job)  # the worker now holds a loaded model
    popen = client._worker.popen
    with frozen(popen):
        client.shutdown(wait=False)  # Blender's UI thread: must not wait for the exit
        assert client.pid is None
        assert popen.poll() is None  # returned while the worker could not have exited
    assert process_gone(popen) and popen.returncode == 0  # it exited by itself, as asked

    job = client.generate(_request(worker_text_model, steps=400))
    _until_stage(client, job, "sampling")
    popen = client._worker.popen
    started = time.perf_counter()
    client.kill(wait=False)
    assert time.perf_counter() - started < 0.5
    assert job.error is not None and job.error.code == WORKER_EXITED
    assert process_gone(popen)
    deadline = time.monotonic() + 30
    while client.threads_alive():
        assert time.monotonic() < deadline, client.threads_alive()
        client.join(0.1)


def test_a_worker_python_without_numpy_answers_environment_incomplete(tmp_path):
    """It died with a raw ModuleNotFoundError: the server imports numpy before hello."""
    import subprocess

    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    client = WorkerClient(venv_python(bare), tmp_path / "jobs")
    try:
        with pytest.raises(ShapEError) as info:
            client.hello(timeout=60)
    finally:
        client.kill()
    err = info.value
    assert err.code == ENVIRONMENT_INCOMPLETE and err.field == "worker_python"
    assert "cannot import numpy" in err.message and "Traceback" not in err.message
