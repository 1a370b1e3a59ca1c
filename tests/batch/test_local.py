"""``python -m shape_e_blender scene``: a spec's jobs on N local worker subprocesses (real ones,
the tiny random model), and a worker killed mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shape_e_blender.batch.jobs import plan
from shape_e_blender.batch.local import devices_for, run_local
from shape_e_blender.client.client import WorkerClient
from shape_e_blender.core import jobdir, jobkey
from shape_e_blender.core.spec import load_spec
from tests.support import interrupt, until_no_worker_serves
from tests.worker.workerproc import child_env, run_python


def _spec(folder: Path, model: Path, extra: str = "") -> Path:
    path = folder / "props.toml"
    objects = "".join(
        f'\n[[object]]\nname = "{name}"\nprompt = "{prompt}"\nseed = {seed}\n'
        for name, prompt, seed in (("Chair", "a red chair", 1), ("Lamp", "a lamp", 2),
                                   ("Vase", "a vase", 3))
    )  # fmt: skip
    path.write_text(
        f'[defaults]\nsteps = 2\ngrid_size = 32\ntext_model = "{model}"\n{objects}{extra}',
        encoding="utf-8",
    )
    return path


def _scene(spec: Path, jobs: Path, *args: str, **env: str):
    return run_python(
        "-m", "shape_e_blender", "scene", str(spec), "--jobs-dir", str(jobs), "--no-download",
        *args, env=child_env(**env), cwd=spec.parent,
    )  # fmt: skip


def _meshes(jobs: Path) -> dict[str, list[np.ndarray]]:
    """Each finished folder's mesh arrays, by its key."""
    out = {}
    for folder in jobs.iterdir():
        if folder.is_dir() and (folder / jobdir.RESULT_FILE).is_file():
            data = np.load(jobdir.mesh_path(folder, 0))
            out[jobkey.read_key(folder)] = [data[k] for k in sorted(data.files)]
    return out


def assert_as_one_worker_makes(spec: Path, jobs: Path, elsewhere: Path, **env: str) -> None:
    """The meshes in ``jobs`` are bit for bit those one local worker makes of ``spec``, run
    with ``env`` (the thread count: torch's CPU reductions sum in an order that depends on it,
    so colours can differ in their last bit between 1 and 2 threads)."""
    one = _scene(spec, elsewhere, "--device", "cpu", **env)
    assert one.returncode == 0, one.stderr[-3000:]
    made, single = _meshes(jobs), _meshes(elsewhere)
    assert len(made) == len(single) == 3 and set(made) == set(single)
    for key, arrays in made.items():
        assert all(np.array_equal(a, b) for a, b in zip(arrays, single[key], strict=True))


def test_two_workers_make_the_meshes_one_makes_and_a_second_run_reuses_them(
    tmp_path, tiny_text_model
):
    spec = _spec(tmp_path, tiny_text_model)
    proc = _scene(spec, tmp_path / "two", "--workers", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 generated, 0 reused, 0 failed" in proc.stdout
    assert "on worker 0 (cpu)" in proc.stdout and "on worker 1 (cpu)" in proc.stdout
    assert "[2/3] Lamp: sampling on worker" in proc.stderr  # per-object progress
    assert_as_one_worker_makes(spec, tmp_path / "two", tmp_path / "one")
    folders = sorted(p.name for p in (tmp_path / "two").iterdir())
    again = _scene(spec, tmp_path / "two", "--workers", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 generated, 3 reused, 0 failed" in again.stdout
    assert "worker" not in again.stderr  # no worker was started
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == folders


def test_a_failing_object_fails_alone_and_the_status_says_so(tmp_path, tiny_text_model):
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    spec = _spec(tmp_path, tiny_text_model, '\n[[object]]\nname = "Statue"\nimage = "broken.png"\n')
    proc = _scene(spec, tmp_path / "jobs", "--workers", "2", "--device", "cpu")
    assert proc.returncode == 1
    assert "3 generated, 0 reused, 1 failed" in proc.stdout
    assert "[4/4] Statue: failed: image:" in proc.stdout


def test_a_bad_spec_or_worker_count_is_refused_before_any_worker_starts(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('[[object]]\nprompt = "a cup"\nsteps = 0\n', encoding="utf-8")
    proc = _scene(spec, tmp_path / "jobs")
    assert proc.returncode == 2 and "object 1 ('Cup'), steps: 0 is outside" in proc.stderr
    assert not (tmp_path / "jobs").exists()
    proc = _scene(spec, tmp_path / "jobs", "--workers", "0")
    assert proc.returncode == 2 and "--workers" in proc.stderr


def test_a_job_whose_worker_is_killed_is_retried_on_another(tmp_path, tiny_text_model):
    path = _spec(tmp_path, tiny_text_model)
    # Sampling long enough that the kill lands while the job runs, not after it finished.
    path.write_text(path.read_text().replace("steps = 2", "steps = 60"))
    spec = load_spec(path, common={"device": "cpu"})
    root = tmp_path / "jobs"
    jobs = plan(spec, root)
    env = child_env()
    clients = [WorkerClient(sys.executable, root, env=env) for _ in range(2)]
    killed: list[str] = []

    def on_progress(job, progress):
        if progress.stage == "sampling" and not killed:
            victim = clients[int(job.where.split()[1])]
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(job.obj.name)

    run_local(jobs, devices_for(2, "cpu"), root, python=sys.executable,
              on_progress=on_progress, clients=clients)  # fmt: skip
    assert len(killed) == 1
    victim = next(j for j in jobs if j.obj.name == killed[0])
    assert victim.ok and victim.tries == 2, victim.error
    assert all(j.ok for j in jobs)
    assert jobdir.read_job(victim.folder).state == jobdir.DONE
    assert all(c.pid is None for c in clients)  # shut down at the end


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGSTOP and /proc")
def test_a_scene_run_sent_sigterm_cancels_its_jobs_and_stops_its_workers(tmp_path, tiny_text_model):
    """SIGTERM ended the command at once: its workers finished their jobs unseen."""
    spec, jobs = _spec(tmp_path, tiny_text_model), tmp_path / "jobs"
    spec.write_text(spec.read_text().replace("grid_size = 32", "grid_size = 256"))
    scene = subprocess.Popen(
        [sys.executable, "-m", "shape_e_blender", "scene", str(spec), "--jobs-dir", str(jobs),
         "--no-download", "--device", "cpu"],
        env=child_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert scene.stderr is not None
        for raw in scene.stderr:
            if b": decoding on" in raw:
                break
        _, stderr = interrupt(scene, signal.SIGTERM)
    finally:
        if scene.poll() is None:
            scene.kill()
            scene.wait()
    assert scene.returncode == 130 and b"interrupted" in stderr and b"Traceback" not in stderr
    (folder,) = jobs.glob("2*")  # the first object's; the others never started
    assert jobdir.read_job(folder).state == jobdir.CANCELLED
    assert until_no_worker_serves(jobs) == []
