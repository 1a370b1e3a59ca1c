"""``python -m shape_e_blender scene --ray``: a real Ray cluster started here (one node, CPU,
2 actors), the tiny random model. Ray 2.60 binds the node to the machine's own address rather
than 127.0.0.1 (ray start maps a loopback --node-ip-address to it); this machine reaches no
network beyond its package mirrors."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray

from shape_e_blender.batch.jobs import plan
from shape_e_blender.batch.ray_actors import PACKAGE_DIR, Pool
from shape_e_blender.core.spec import load_spec
from tests.worker.workerproc import child_env

from .test_local import _scene, _spec, assert_as_one_worker_makes

RAY = str(Path(sys.executable).with_name("ray"))
# A cluster of this test's own: no token (loopback tests), no usage report, no dashboard.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
# Ports ``ray start`` takes unless told otherwise (GCS, dashboard, dashboard agent HTTP).
RAY_DEFAULT_PORTS = (6379, 8265, 52365)


def _free_port(*taken: int) -> int:
    """A port the kernel hands out, other than Ray's fixed defaults and ``taken``: an
    ephemeral port can be 52365, the dashboard agent's default, and ``ray start`` then
    refuses the head port."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in (*RAY_DEFAULT_PORTS, *taken):
            return port


@pytest.fixture(scope="module")
def cluster():
    """``ray start --head`` with 2 CPUs and no GPU; stopped (all of it) at the end."""
    # Ray's socket paths must stay short: a folder right under /tmp.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    port = _free_port()
    agent_port = _free_port(port)
    env = child_env(**RAY_ENV)
    start = subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         f"--dashboard-agent-listen-port={agent_port}",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert start.returncode == 0, start.stderr[-3000:]
    address = next(
        line.split("--address=")[1].strip("'\" ")
        for line in start.stdout.splitlines() + start.stderr.splitlines()
        if "ray start --address=" in line
    )
    os.environ.update(RAY_ENV)
    yield address
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(temp, ignore_errors=True)


def test_two_ray_actors_make_the_meshes_a_local_worker_makes(tmp_path, tiny_text_model, cluster):
    spec = _spec(tmp_path, tiny_text_model)
    proc = _scene(spec, tmp_path / "ray", "--ray", cluster, "--device", "cpu")
    proc_env = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc_env[-4000:]
    assert "3 generated, 0 reused, 0 failed" in proc.stdout
    assert "on actor 0 (cpu)" in proc.stdout and "on actor 1 (cpu)" in proc.stdout
    # Every stage of every object arrives (the actors push it): none is missed between polls.
    for stage in ("loading", "sampling", "decoding", "writing"):
        assert f"[2/3] Lamp: {stage} on actor" in proc.stderr, proc.stderr[-3000:]
    # Ray gives an actor of num_cpus=1 one thread (OMP_NUM_THREADS=1): the local worker too.
    assert_as_one_worker_makes(spec, tmp_path / "ray", tmp_path / "one", OMP_NUM_THREADS="1")
    again = _scene(spec, tmp_path / "ray", "--ray", cluster, "--device", "cpu")
    assert again.returncode == 0 and "0 generated, 3 reused" in again.stdout
    assert "Connecting to existing Ray cluster" not in again.stderr  # nothing to send it


def test_a_killed_actors_job_is_retried_on_another(tmp_path, tiny_text_model, cluster):
    path = _spec(tmp_path, tiny_text_model)
    # Sampling long enough that the kill lands while the job runs, not after it finished: the
    # pool hands on progress when a job ends or every 0.5 s, and 60 steps once ended sooner.
    path.write_text(path.read_text().replace("steps = 2", "steps = 1000"))
    spec = load_spec(path, common={"device": "cpu"})
    root = tmp_path / "jobs"
    jobs = plan(spec, root)
    ray.init(address=cluster, runtime_env={"py_modules": [str(PACKAGE_DIR)]}, log_to_driver=False)
    try:
        pool = Pool(root, "cpu", 2, allow_download=False)
        killed: list[str] = []

        def on_progress(job, progress):
            if progress.stage == "sampling" and not killed:
                actor = pool.actors[int(job.where.split()[1])]
                os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)
                killed.append(job.obj.name)

        pool.run(jobs, on_progress, None)
    finally:
        ray.shutdown()
    assert len(killed) == 1
    victim = next(j for j in jobs if j.obj.name == killed[0])
    assert victim.ok and victim.tries == 2, victim.error
    assert all(j.ok for j in jobs), [j.error for j in jobs]


def test_a_cluster_that_cannot_be_reached_is_a_clear_error(tmp_path, tiny_text_model):
    spec = _spec(tmp_path, tiny_text_model)
    proc = _scene(spec, tmp_path / "jobs", "--ray", f"127.0.0.1:{_free_port()}", "--device", "cpu")
    assert proc.returncode == 1
    assert "error: could not connect to the Ray cluster at 127.0.0.1:" in proc.stderr
    assert "Traceback" not in proc.stderr
