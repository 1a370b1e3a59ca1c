"""The worker's OpenMP threads sleep while they wait (benchmarks/bench_threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = "import os, shape_e_blender.worker; print(os.environ.get('OMP_WAIT_POLICY'))"


@pytest.mark.parametrize(("given", "wanted"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_a_worker_process_asks_openmp_for_sleeping_threads_unless_told_otherwise(given, wanted):
    """Set before torch loads OpenMP, in every worker process (the server, the CLI, a batch
    worker import the worker package first); a value the user set is kept."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == wanted
