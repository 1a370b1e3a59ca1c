"""Child Pythons for tests: the environment they get, one-shot runs, and a real worker subprocess
(with a reader thread, so that reads can time out)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a child Python that runs the package of this checkout, offline.

    No inherited PYTHON* variables, as the add-on starts its worker.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return env | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"} | extra


def run_python(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python ARGS`` to its end, with its output as text; the caller checks the status."""
    command = [sys.executable, *args]
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


class WorkerProcess:
    def __init__(
        self,
        jobs_root: Path,
        *extra: str,
        python: str = sys.executable,
        env_extra: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        """``code``, if given, runs instead of ``-m shape_e_blender.worker`` and calls its main."""
        env = child_env(**(env_extra or {}))
        entry = ["-c", code] if code else ["-m", "shape_e_blender.worker"]
        self.proc = subprocess.Popen(
            [python, *entry, "--jobs-root", str(jobs_root), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(jobs_root),
        )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []
        self.not_json: list[bytes] = []  # stdout lines that are not protocol messages
        self._next_id = 0
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.messages.put(json.loads(line))
            except ValueError:
                self.not_json.append(line)
        self.messages.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.decode("utf-8", "replace"))

    def send_raw(self, line: str | bytes) -> None:
        assert self.proc.stdin is not None
        data = line.encode() if isinstance(line, str) else line
        self.proc.stdin.write(data if data.endswith(b"\n") else data + b"\n")
        self.proc.stdin.flush()

    def send(self, method: str, params: dict[str, Any] | None = None, id: Any = "auto") -> Any:
        if id == "auto":
            self._next_id += 1
            id = self._next_id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or {}}
        if id is not None:
            msg["id"] = id
        self.send_raw(json.dumps(msg))
        return id

    def next(self, timeout: float = 120.0) -> dict[str, Any]:
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no message from the worker in {timeout} s; stderr:\n{''.join(self.stderr[-30:])}"
            ) from None
        if msg is None:
            raise AssertionError(f"worker closed stdout; stderr:\n{''.join(self.stderr[-30:])}")
        return msg

    def response(self, id: Any, timeout: float = 120.0) -> tuple[dict[str, Any], list[dict]]:
        """Read until the response to `id`; returns it and the notifications seen meanwhile."""
        notes = []
        while True:
            msg = self.next(timeout)
            if msg.get("id") == id and "method" not in msg:
                return msg, notes
            notes.append(msg)

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 120.0):
        rid = self.send(method, params)
        return self.response(rid, timeout)

    def close(self, timeout: float = 60.0) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
