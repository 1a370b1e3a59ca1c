"""Out of memory for real: a worker subprocess whose address space is capped (RLIMIT_AS, set on
the running process with prlimit) is asked for a mesh that needs far more than the room left."""

from __future__ import annotations

from pathlib import Path

import pytest

from shape_e_blender.core import jobdir
from shape_e_blender.core.errors import OUT_OF_MEMORY
from shape_e_blender.core.files import PART_SUFFIX

from .workerproc import WorkerProcess

resource = pytest.importorskip("resource")
pytestmark = pytest.mark.skipif(
    not hasattr(resource, "prlimit") or not Path("/proc/self/status").is_file(),
    reason="capping another process's memory needs Linux (prlimit, /proc)",
)

ROOM = 256 << 20  # bytes left to the capped worker: a grid-32 job fits, grid 512 (543 MB) not


def _address_space(pid: int) -> int:
    """The bytes of address space ``pid`` holds now (what RLIMIT_AS counts)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmSize in /proc/{pid}/status")


def test_a_worker_out_of_memory_while_decoding_answers_the_hint_then_runs_the_next_job(
    tiny_text_model, tmp_path
):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    small = {"prompt": "a cup", "model": str(tiny_text_model), "steps": 2, "grid_size": 32}
    w = WorkerProcess(jobs)
    try:
        # Warm first: the imports, the model and torch's threads take their memory before the cap.
        msg, _ = w.call("generate", small | {"job_dir": str(tmp_path / "warm")}, timeout=300)
        assert msg["result"]["meshes"][0]["faces"] > 0
        pid = w.proc.pid
        _, hard = resource.prlimit(pid, resource.RLIMIT_AS)
        resource.prlimit(pid, resource.RLIMIT_AS, (_address_space(pid) + ROOM, hard))

        big = tmp_path / "big"
        msg, _ = w.call("generate", small | {"grid_size": 512, "job_dir": str(big)}, timeout=300)
        error = msg["error"]
        assert error["code"] == OUT_OF_MEMORY and error["data"]["kind"] == "out_of_memory"
        assert error["message"].startswith("out of memory while decoding: ")
        assert "grid_size" in error["data"]["hint"] and "bug" not in error["data"]["hint"]
        assert (big / jobdir.ERROR_FILE).is_file() and not (big / jobdir.RESULT_FILE).exists()
        assert list(big.rglob(f"*{PART_SUFFIX}")) == []
        assert jobdir.read_job(big).state == jobdir.FAILED

        # The same worker, still capped: what the failed job held was given back.
        msg, _ = w.call("generate", small | {"job_dir": str(tmp_path / "after")}, timeout=300)
        assert msg["result"]["meshes"][0]["faces"] > 0
        assert w.proc.poll() is None
    finally:
        w.kill()


def test_a_worker_out_of_memory_while_loading_a_model_answers_the_hint_then_runs_the_next_job(
    tiny_text_model, tmp_path
):
    """A model whose weights (62 MiB, memory-mapped) exceed the room left: the load fails as out
    of memory with the machine's hint (not the GPU's "choose device cpu", which the CPU job runs
    on already), and the warm model still serves the next job."""
    from shape_e_blender.worker.tiny.pipeline import write_tiny_pipeline
    from shape_e_blender.worker.tiny.sizes import TinySizes

    big_model = write_tiny_pipeline(
        tmp_path / "big-model", "text", sizes=TinySizes(clip_intermediate=250_000)
    )
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    small = {"prompt": "a cup", "model": str(tiny_text_model), "steps": 2, "grid_size": 32}
    w = WorkerProcess(jobs)
    try:
        msg, _ = w.call("generate", small | {"job_dir": str(tmp_path / "warm")}, timeout=300)
        assert msg["result"]["meshes"][0]["faces"] > 0
        pid = w.proc.pid
        _, hard = resource.prlimit(pid, resource.RLIMIT_AS)
        resource.prlimit(pid, resource.RLIMIT_AS, (_address_space(pid) + (32 << 20), hard))

        big = tmp_path / "big"
        job = small | {"model": str(big_model), "job_dir": str(big)}
        msg, _ = w.call("generate", job, timeout=300)
        error = msg["error"]
        assert error["code"] == OUT_OF_MEMORY and error["data"]["kind"] == "out_of_memory"
        assert error["message"].startswith("out of memory while loading: ")
        assert "free memory" in error["data"]["hint"] and "device cpu" not in error["data"]["hint"]
        assert (big / jobdir.ERROR_FILE).is_file() and not (big / jobdir.RESULT_FILE).exists()
        assert list(big.rglob(f"*{PART_SUFFIX}")) == []

        msg, _ = w.call("generate", small | {"job_dir": str(tmp_path / "after")}, timeout=300)
        assert msg["result"]["meshes"][0]["faces"] > 0
        assert w.proc.poll() is None
    finally:
        w.kill()
