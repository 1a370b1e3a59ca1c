"""A job's folder taken from under it: given to a second job at the same time, or removed while
the job runs. Real worker subprocesses; each is frozen (SIGSTOP) where the test needs it to be,
so nothing depends on how fast the machine is."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys

import pytest

from shape_e_blender.core import jobdir
from shape_e_blender.core.errors import JOB_FAILED

from .workerproc import WorkerProcess

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGSTOP; and Windows has no folder locks (core/files.py)"
)
FAST = {"steps": 2, "grid_size": 32}
LONG = {"steps": 50, "grid_size": 32}  # 99 prior calls: frozen at the first, far from done


def _until_stage(worker: WorkerProcess, stage: str) -> None:
    while worker.next().get("params", {}).get("stage") != stage:
        pass


def test_a_folder_another_job_is_running_in_is_refused_and_left_to_that_job(
    tiny_text_model, tmp_path
):
    """Two workers sent the same job_dir mixed their files: one's result.json beside the other's
    request.json, and the meshes of whichever wrote last."""
    folder = tmp_path / "shared"
    first, second = WorkerProcess(tmp_path), WorkerProcess(tmp_path)
    try:
        params = {"prompt": "a cup", "model": str(tiny_text_model), "job_dir": str(folder)}
        rid = first.send("generate", params | LONG | {"seed": 1})
        _until_stage(first, "sampling")
        os.kill(first.proc.pid, signal.SIGSTOP)
        msg, _ = second.call("generate", params | FAST | {"seed": 2})
        err = msg["error"]
        assert (err["code"], err["data"]["field"]) == (JOB_FAILED, "job_dir")
        assert "another job that is running now" in err["message"]
        assert not (folder / jobdir.ERROR_FILE).exists()  # nothing of the second's written
        os.kill(first.proc.pid, signal.SIGCONT)
        done, _ = first.response(rid)
        assert done["result"]["meshes"][0]["seed"] == 1
        request = json.loads((folder / jobdir.REQUEST_FILE).read_text())
        assert request["request"]["seed"] == 1
        assert jobdir.load_result(folder)[1].meshes[0].seed == 1
        # Once the first job is over, the folder takes a new job.
        again, _ = second.call("generate", params | FAST | {"seed": 2})
        assert again["result"]["meshes"][0]["seed"] == 2
    finally:
        first.kill()
        second.kill()


def test_a_folder_removed_mid_job_fails_the_job_and_is_not_made_again(tiny_text_model, tmp_path):
    """The job wrote on: a new folder held its mesh and result.json, but no request.json and no
    latent, reading as no job at all, while the answer said done and named files that were
    gone."""
    worker = WorkerProcess(tmp_path)
    try:
        folder = tmp_path / "job"
        params = {"prompt": "a cup", "model": str(tiny_text_model), "job_dir": str(folder)}
        rid = worker.send("generate", params | LONG)
        _until_stage(worker, "sampling")
        os.kill(worker.proc.pid, signal.SIGSTOP)
        shutil.rmtree(folder)
        os.kill(worker.proc.pid, signal.SIGCONT)
        msg, _ = worker.response(rid)
        err = msg["error"]
        assert (err["code"], err["data"]["field"]) == (JOB_FAILED, "job_dir")
        assert "was removed while the job ran" in err["message"]
        assert not folder.exists()
        again, _ = worker.call("generate", params | FAST)
        assert again["result"]["meshes"][0]["faces"] > 0
    finally:
        worker.kill()
