"""Fixtures of the client tests."""

from __future__ import annotations

import pytest

from shape_e_blender.client.client import WorkerClient
from tests.support import WORKER_PYTHON


@pytest.fixture
def client(tmp_path):
    """A client of its own, for tests that stop or kill its worker."""
    c = WorkerClient(WORKER_PYTHON, tmp_path / "jobs")
    yield c
    c.kill()
    assert c.threads_alive() == []
