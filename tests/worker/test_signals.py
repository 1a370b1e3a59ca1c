"""SIGTERM, SIGINT and SIGHUP sent to a worker or the CLI mid-job, as a terminal's Ctrl+C, a
dropped ssh connection or a service manager would: the job ends cancelled with its error.json,
no traceback is printed, nothing half-written is left and the process exits at once.

The signal is sent while the process is frozen (SIGSTOP) mid-decoding, then it goes on (SIGCONT):
it cannot have finished its job before the signal is there, however slow or fast the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shape_e_blender.core import jobdir
from shape_e_blender.core.errors import CANCELLED
from shape_e_blender.core.files import PART_SUFFIX

from .workerproc import WorkerProcess, child_env

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGSTOP, SIGHUP and kill() of a signal are POSIX"
)
LONG = {"steps": 2, "grid_size": 256}  # decoding takes many batches, each a cancel point


def _signalled_while_frozen(pid: int, signum: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    os.kill(pid, signum)  # held until the process goes on
    os.kill(pid, signal.SIGCONT)


def _left_cancelled(folder: Path) -> None:
    """The folder holds error.json (cancelled), no result and no half-written file."""
    record = jobdir.read_job(folder)
    assert record.state == jobdir.CANCELLED, record
    assert not (folder / jobdir.RESULT_FILE).exists()
    assert list(folder.rglob(f"*{PART_SUFFIX}")) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signalled_worker_cancels_its_job_answers_and_exits(tiny_text_model, tmp_path, signum):
    """SIGINT printed a KeyboardInterrupt traceback and aborted ("Fatal Python error" at exit);
    SIGTERM and SIGHUP ended it at once, leaving the folder without error.json."""
    worker = WorkerProcess(tmp_path)
    try:
        folder = tmp_path / "job"
        params = {"prompt": "a cup", "model": str(tiny_text_model), "job_dir": str(folder)}
        rid = worker.send("generate", params | LONG)
        queued = worker.send("generate", params | {"job_dir": str(tmp_path / "next")})
        while worker.next().get("params", {}).get("stage") != "decoding":
            pass
        _signalled_while_frozen(worker.proc.pid, signum)
        answers = {}
        while len(answers) < 2:
            msg = worker.next()
            if "method" not in msg:
                answers[msg["id"]] = msg
        assert answers[rid]["error"]["code"] == CANCELLED
        assert answers[queued]["error"]["code"] == CANCELLED  # the queued job is answered too
        assert worker.proc.wait(60) == 128 + signum
        stderr = "".join(worker.stderr)
        assert "Traceback" not in stderr and "Fatal Python error" not in stderr
        assert f"stopped by {signal.Signals(signum).name}" in stderr
        _left_cancelled(folder)
        assert not (tmp_path / "next").exists()
    finally:
        worker.kill()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_cli_stopped_mid_job_says_interrupted_once_and_leaves_the_folder_cancelled(
    tiny_text_model, tmp_path, signum
):
    """Ctrl+C left no error.json (the folder read as interrupted); SIGTERM ended the CLI with no
    word at all."""
    folder, output = tmp_path / "job", tmp_path / "out.glb"
    command = ["-m", "shape_e_blender", "generate", "--prompt", "a cup"]
    command += ["--model", str(tiny_text_model), "--steps", "2", "--grid-size", "256"]
    command += ["--job-dir", str(folder), "-o", str(output)]
    cli = subprocess.Popen(
        [sys.executable, *command],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
        cwd=tmp_path,
        # A shell's background job ignores SIGINT; a terminal's foreground one takes it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines: list[str] = []
        assert cli.stderr is not None
        for raw in cli.stderr:
            lines.append(raw.decode())
            if raw.startswith(b"decoding"):
                break
        _signalled_while_frozen(cli.pid, signum)
        rest = threading.Thread(target=lambda: lines.extend(r.decode() for r in cli.stderr))
        rest.start()
        assert cli.wait(120) == 130
        rest.join(60)
        assert lines[-1] == "interrupted\n" and "interrupted\n" not in lines[:-1]
        assert not any("Traceback" in line for line in lines)
        _left_cancelled(folder)
        assert not output.exists() and list(tmp_path.glob(f"*{PART_SUFFIX}")) == []
    finally:
        if cli.poll() is None:
            cli.kill()
        cli.wait()
