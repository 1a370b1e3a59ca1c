"""core/files.py: whole files, and the .part files a killed writer leaves behind."""

from __future__ import annotations

import pytest

from shape_e_blender.core import jobdir
from shape_e_blender.core.files import (
    FILE,
    FOLDER,
    MISSING,
    OTHER,
    PART_SUFFIX,
    claimed,
    fcntl,
    is_dir,
    is_file,
    probe,
    writing,
)


@pytest.mark.skipif(fcntl is None, reason="folder locks are POSIX (fcntl.flock)")
def test_a_folder_read_without_a_result_loses_the_part_files_no_writer_holds(tmp_path):
    folder = jobdir.ensure_dir(tmp_path / "job", "the job folder")
    jobdir.write_request(folder, {"prompt": "a cup"})
    mesh = jobdir.mesh_path(folder, 0)
    mesh.parent.mkdir()
    half_mesh = mesh.with_name(mesh.name + PART_SUFFIX)
    half_mesh.write_bytes(b"PK\x03\x04" + bytes(100))  # a write cut short
    half_result = folder / (jobdir.RESULT_FILE + PART_SUFFIX)
    half_result.write_bytes(b'{"job_dir": ')
    with writing(folder):  # a live writer: another process, or this one on another descriptor
        assert jobdir.read_job(folder).state == jobdir.INTERRUPTED
        assert half_mesh.exists() and half_result.exists()
    # The caller's own running job is never swept either.
    assert jobdir.read_job(folder, running=True).state == jobdir.RUNNING
    assert half_mesh.exists()
    assert jobdir.read_job(folder).state == jobdir.INTERRUPTED
    assert not half_mesh.exists() and not half_result.exists()
    assert sorted(p.name for p in folder.rglob("*")) == ["0", jobdir.REQUEST_FILE]


def test_probe_tells_what_a_path_names_without_raising(tmp_path):
    """pathlib's is_file() raised OSError for a name too long (Python 3.11-3.13): every check of
    a path a user typed then crashed with a traceback instead of naming the field."""
    import os

    (tmp_path / "file").write_bytes(b"x")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert probe(tmp_path / "file") == (FILE, "")
    assert probe(tmp_path) == (FOLDER, "")
    assert probe(tmp_path / "fifo")[0] == OTHER and "FIFO" in probe(tmp_path / "fifo")[1]
    assert probe(tmp_path / "none") == (MISSING, "does not exist")
    assert probe(tmp_path / "loop") == (MISSING, "is a link that loops")
    assert probe(tmp_path / ("y" * 300))[1] == "cannot be looked up (File name too long)"
    assert probe("a\0b")[0] == MISSING
    assert not is_file(tmp_path / ("y" * 300)) and not is_dir("a\0b") and is_dir(tmp_path)


@pytest.mark.skipif(fcntl is None, reason="file locks are POSIX (fcntl.flock)")
def test_a_claimed_file_cannot_be_claimed_again_until_let_go(tmp_path):
    log = tmp_path / "job.log"
    with claimed(log):
        with pytest.raises(BlockingIOError), claimed(log):
            pass
        assert log.exists()
    with claimed(log):  # let go: claimed again
        pass
