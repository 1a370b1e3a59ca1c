"""core/files.py: whole files, and the .part files a killed writer leaves behind."""

from __future__ import annotations

import pytest

from shape_e_blender.core import jobdir
from shape_e_blender.core.files import PART_SUFFIX, fcntl, writing


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
