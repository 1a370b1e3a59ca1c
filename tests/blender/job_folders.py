"""Job folders on disk for the recent-jobs tests: real worker runs, and folders that are not jobs.

The worker's CLI (``python -m shape_e_blender generate --job-dir``) writes a job folder exactly as
the worker behind Blender does (the same Engine.generate), with no Blender attached to it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import WORKER_PYTHON, run_child

TINY = ("--steps", "2", "--grid-size", "32")


def cli_generate(job_dir: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the worker's CLI into ``job_dir``; ``out`` is the CLI's own export (-o)."""
    return run_child(
        WORKER_PYTHON,
        "-m",
        "shape_e_blender",
        "generate",
        "--job-dir",
        str(job_dir),
        "-o",
        str(out),
        *args,
        timeout=300,
    )


def finished_job(job_dir: Path, model: Path, *args: str) -> Path:
    """A finished text job made by the worker's CLI."""
    proc = cli_generate(
        job_dir, job_dir.parent / f"{job_dir.name}.npz", "--model", str(model), *args
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (job_dir / "result.json").is_file()
    return job_dir


def failed_job(job_dir: Path, model: Path) -> tuple[Path, str]:
    """A job the worker failed: it decodes a latent file that is not a .npy. Returns the folder
    and the error message the CLI printed (the worker's own)."""
    bad = job_dir.parent / f"{job_dir.name}-bad-latent.npy"
    bad.write_bytes(b"this is not a numpy file")
    proc = cli_generate(
        job_dir, job_dir.parent / f"{job_dir.name}.npz", "--latent", str(bad), "--model", str(model)
    )
    assert proc.returncode != 0 and not (job_dir / "result.json").exists(), proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    return job_dir, line[len("error: ") :]


def foreign_folders(root: Path) -> list[str]:
    """Folders in ``root`` that are not job folders (or are damaged ones); returns their names."""
    folders = {
        "20250101-000001-empty": {},
        "20250101-000002-notes": {"README.txt": b"my notes"},
        "20250101-000003-garbage-result": {"request.json": b"{}", "result.json": b"\x00\xffjunk"},
        "20250101-000004-result-a-list": {"result.json": b"[1, 2]"},
        "20250101-000005-request-a-string": {"request.json": b'"hello"'},
        "20250101-000006-half-written": {"request.json": b'{"request": {"prompt": "a c'},
    }
    for name, files in folders.items():
        (root / name).mkdir(parents=True)
        for file, data in files.items():
            (root / name / file).write_bytes(data)
    (root / "worker.log").write_text("not a folder\n")  # the client's log lives here too
    return sorted(folders)
