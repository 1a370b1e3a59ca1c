"""Out of memory for real: a worker subprocess whose address space is capped (RLIMIT_AS, set on
the running process with prlimit) is asked for a mesh, or a model, that needs far more than the
room left."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shape_e_blender.core import jobdir
from shape_e_blender.core.errors import OUT_OF_MEMORY
from shape_e_blender.core.files import PART_SUFFIX
from shape_e_blender.worker.tiny.pipeline import write_tiny_pipeline
from shape_e_blender.worker.tiny.sizes import TinySizes

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


@contextmanager
def _capped_worker(tmp_path: Path, model: Path, room: int) -> Iterator[tuple[WorkerProcess, dict]]:
    """A worker warmed by one small job (the imports, the model and torch's threads take their
    memory before the cap), then capped at the address space it holds plus ``room`` bytes.
    Yields it and the small job's request."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    small = {"prompt": "a cup", "model": str(model), "steps": 2, "grid_size": 32}
    w = WorkerProcess(jobs)
    try:
        msg, _ = w.call("generate", small | {"job_dir": str(tmp_path / "warm")}, timeout=300)
        assert msg["result"]["meshes"][0]["faces"] > 0
        pid = w.proc.pid
        _, hard = resource.prlimit(pid, resource.RLIMIT_AS)
        resource.prlimit(pid, resource.RLIMIT_AS, (_address_space(pid) + room, hard))
        yield w, small
    finally:
        w.kill()


def _failed_cleanly_and_the_next_job_runs(
    w: WorkerProcess, small: dict, error: dict, folder: Path, stage: str
) -> None:
    assert error["code"] == OUT_OF_MEMORY and error["data"]["kind"] == "out_of_memory"
    assert error["message"].startswith(f"out of memory while {stage}: ")
    assert "bug" not in error["data"]["hint"]
    assert (folder / jobdir.ERROR_FILE).is_file() and not (folder / jobdir.RESULT_FILE).exists()
    assert list(folder.rglob(f"*{PART_SUFFIX}")) == []
    assert jobdir.read_job(folder).state == jobdir.FAILED
    # The same worker, still capped: what the failed job held was given back.
    msg, _ = w.call("generate", small | {"job_dir": str(folder.with_name("after"))}, timeout=300)
    assert msg["result"]["meshes"][0]["faces"] > 0
    assert w.proc.poll() is None


def test_a_worker_out_of_memory_while_decoding_answers_the_hint_then_runs_the_next_job(
    tiny_text_model, tmp_path
):
    with _capped_worker(tmp_path, tiny_text_model, ROOM) as (w, small):
        big = tmp_path / "big"
        msg, _ = w.call("generate", small | {"grid_size": 512, "job_dir": str(big)}, timeout=300)
        assert "grid_size" in msg["error"]["data"]["hint"]
        _failed_cleanly_and_the_next_job_runs(w, small, msg["error"], big, "decoding")


def test_a_worker_out_of_memory_while_loading_a_model_answers_the_hint_then_runs_the_next_job(
    tiny_text_model, tmp_path
):
    """A model whose weights (62 MiB, memory-mapped) exceed the room left: the load fails as out
    of memory with the machine's hint (not the GPU's "choose device cpu", which the CPU job runs
    on already), and the warm model still serves the next job."""
    sizes = TinySizes(clip_intermediate=250_000)
    big_model = write_tiny_pipeline(tmp_path / "big-model", "text", sizes=sizes)
    with _capped_worker(tmp_path, tiny_text_model, 32 << 20) as (w, small):
        big = tmp_path / "big"
        job = small | {"model": str(big_model), "job_dir": str(big)}
        msg, _ = w.call("generate", job, timeout=300)
        hint = msg["error"]["data"]["hint"]
        assert "free memory" in hint and "device cpu" not in hint
        _failed_cleanly_and_the_next_job_runs(w, small, msg["error"], big, "loading")
