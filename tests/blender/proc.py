"""Blender subprocesses for the tests: rendering and extension installs run outside pytest.

Rendering can abort the whole process where OpenGL is missing, and an extension install must
not touch the developer's real Blender config, so both run in a child with its own environment.
Standard library only (the child imports this module too).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULT_PREFIX = "RESULT_JSON:"
HAS_EGL = ctypes.util.find_library("EGL") is not None
NO_EGL_REASON = "rendering with bpy needs an EGL library (Mesa's libEGL); without it Blender aborts"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PYTHON* variables, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_blender_script(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> dict[str, Any]:
    """Run ``python -m <module> args`` with this interpreter (so the same bpy) in a subprocess.

    The script prints one line ``RESULT_JSON:{...}`` (see emit_result); that dict is returned.
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"{module} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def emit_result(result: dict[str, Any]) -> None:
    """The child's side of run_blender_script."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)
