"""The managed worker environment's setup (client/envsetup.py), without Blender."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from shape_e_blender.client.envsetup import EnvSetup, requirements_for_machine, vendor_dir
from shape_e_blender.client.process import venv_python
from shape_e_blender.core.errors import CANCELLED, JOB_FAILED


def test_requirements_for_this_machine_come_from_vendor_worker():
    folder = vendor_dir()
    assert (folder / "base.txt").is_file()
    chosen = requirements_for_machine(folder)
    assert chosen.parent == folder and chosen.name in {"cpu.txt", "cuda.txt", "mps.txt"}
    assert "-r torch.txt" in chosen.read_text() and "torch==" in (folder / "torch.txt").read_text()


def test_env_setup_creates_a_venv_that_runs(tmp_path):
    # An empty requirements file keeps this offline; the real pins install the same way.
    req = tmp_path / "req.txt"
    req.write_text("# nothing to install\n")
    setup = EnvSetup(tmp_path / "env", req, verify=("json", "sqlite3")).start()
    setup.join(180)
    assert setup.poll() and setup.error is None, setup.error
    assert setup.fraction == 1.0 and setup.stage == "checking"
    assert venv_python(tmp_path / "env").is_file()
    assert setup.last_line == "ok"
    # Made from the Python that runs the add-on (Blender's own): 3.13 under Blender 5.1 and later.
    made = subprocess.run(
        [venv_python(tmp_path / "env"), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert made.stdout.strip() == str(sys.version_info[:2])


def test_env_setup_failure_keeps_the_tail_and_a_hint(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("--no-such-pip-option\n")
    setup = EnvSetup(tmp_path / "env", req, verify=()).start()
    setup.join(180)
    assert setup.poll() and setup.error is not None
    assert setup.error.code == JOB_FAILED and setup.stage == "installing"
    assert "no-such-pip-option" in setup.error.message
    assert "worker_python" in setup.error.hint


def test_env_setup_cancel_stops_the_subprocess_and_its_thread_reaps_it(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("")
    setup = EnvSetup(tmp_path / "env", req).start()
    deadline = time.monotonic() + 60
    while setup._proc is None:  # "python -m venv" is running
        assert time.monotonic() < deadline and setup.is_alive()
        time.sleep(0.01)
    setup.cancel()  # the Cancel button
    setup.join(60)
    assert not setup.is_alive()
    assert setup._proc.poll() is not None  # the setup's thread reaped what it started
    assert setup.poll() and setup.error is not None and setup.error.code == CANCELLED


def test_env_setup_picks_its_requirements_on_its_own_thread(tmp_path):
    # The operator passes requirements_for_machine (it runs nvidia-smi, which can take seconds)
    # as a function, so that the UI thread never runs it.
    req = tmp_path / "req.txt"
    req.write_text("# nothing to install\n")
    picked_on: list[threading.Thread] = []
    chosen: list[Path] = []

    def pick() -> Path:
        picked_on.append(threading.current_thread())
        chosen.append(requirements_for_machine(vendor_dir()))  # the probe
        return req  # an empty file keeps this test offline

    setup = EnvSetup(tmp_path / "env", pick, verify=())
    assert setup.requirements is None  # not known before the thread runs
    setup.start().join(180)
    assert setup.poll() and setup.error is None, setup.error
    assert [t.name for t in picked_on] == ["shape_e-setup"]
    assert chosen[0].name in {"cpu.txt", "cuda.txt", "mps.txt"}
    assert setup.requirements == req
