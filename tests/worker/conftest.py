"""Fixtures of the worker tests."""

from __future__ import annotations

import pytest

from .workerproc import WorkerProcess


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """One real worker subprocess for a test module (test_server.py makes one per test)."""
    w = WorkerProcess(tmp_path_factory.mktemp("jobs"))
    yield w
    w.kill()
