"""The worker's process: its interpreter, its clean environment, its process group, its end.

Plain standard library, the same on Linux, macOS and Windows (each POSIX call has its Windows
branch). Used for the worker itself and for the environment setup's venv and pip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.files import is_file

# The package folder (shape_e_blender/ in the source tree, the extension's folder once installed).
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The child gets only what a Python program with torch and the Hugging Face hub needs. Blender sets
# PYTHONHOME/PYTHONPATH for its own interpreter (they would break the worker's), and may carry
# other variables meant for itself, so this is an allowlist rather than a blocklist.
KEEP_VARS = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "LD_LIBRARY_PATH",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",  # the lowercase spellings match too (names are compared upper-cased)
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        # Windows: without SYSTEMROOT, Python's socket and random modules fail to start.
        "SYSTEMROOT",
        "SYSTEMDRIVE",
        "WINDIR",
        "COMSPEC",
        "PATHEXT",
        "USERPROFILE",
        "USERNAME",
        "APPDATA",
        "LOCALAPPDATA",
        "PROGRAMDATA",
        "PROGRAMFILES",
        "NUMBER_OF_PROCESSORS",
        "PROCESSOR_ARCHITECTURE",
        "OS",
    }
)
KEEP_PREFIXES = (
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "DIFFUSERS_",
    "TORCH_",
    "PYTORCH_",
    "CUDA_",
    "NVIDIA_",
    "HIP_",
    "ROCM_",
    "OMP_",
    "MKL_",
    "XDG_",  # the Hugging Face cache defaults to $XDG_CACHE_HOME/huggingface
    "LC_",
    "SSL_",
    "SHAPE_E_",
)

KILL_GRACE_S = 3.0


def executable(python: str) -> str:
    """``python`` itself when it is a file, or a bare command name ("python3.11") found on PATH."""
    if is_file(python):
        return python
    return shutil.which(python) or python


def worker_command(
    python: str, jobs_root: str | os.PathLike[str], package_dir: Path = PACKAGE_DIR
) -> list[str]:
    """The command line of a worker that finds this very package (see clean_env)."""
    # The package folder's own name: "shape_e_blender" when installed as the extension.
    return [executable(python), "-m", f"{package_dir.name}.worker", "--jobs-root", str(jobs_root)]


def venv_python(env_dir: str | os.PathLike[str]) -> Path:
    """The interpreter inside a venv, on Windows and elsewhere."""
    env_dir = Path(env_dir)
    if sys.platform == "win32":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


def clean_env(
    package_dir: str | os.PathLike[str] | None = PACKAGE_DIR,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A child Python's environment: an allowlist of ``base`` plus our own PYTHON* settings.

    ``package_dir``'s parent goes on PYTHONPATH so that ``-m shape_e_blender.worker`` finds this
    very package; None leaves PYTHONPATH out (pip, venv).
    """
    base = os.environ if base is None else base
    # Upper-cased for the test: Windows names are case-insensitive (SystemRoot, Path).
    env = {
        k: v
        for k, v in base.items()
        if not k.upper().startswith("PYTHON")
        and (k.upper() in KEEP_VARS or k.upper().startswith(KEEP_PREFIXES))
    }
    if package_dir is not None:
        env["PYTHONPATH"] = str(Path(package_dir).resolve().parent)
    env["PYTHONUNBUFFERED"] = "1"
    # Pipes default to the locale's code page on Windows; the protocol is UTF-8.
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def process_group_kwargs() -> dict[str, Any]:
    """Start the child in its own process group, so that killing it takes its children too."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def kill_tree(popen: subprocess.Popen, grace: float = KILL_GRACE_S) -> None:
    """Stop a process started with process_group_kwargs() and everything it started; waits.

    Waits up to twice ``grace`` for the process to end: for background mode and unregister().
    Blender's UI thread calls kill_now() instead.
    """
    if sys.platform == "win32":
        if popen.poll() is None:
            # taskkill /T takes the children (torch's helpers) along; kill() is the fallback.
            subprocess.run(
                ["taskkill", "/T", "/F", "/PID", str(popen.pid)],
                capture_output=True,
                check=False,
                creationflags=subprocess.CREATE_NO_WINDOW,
            )
            with contextlib.suppress(OSError):
                popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(grace)
        return
    # start_new_session made the child a group leader: its pid is the group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    # Children may outlive the leader; SIGKILL the whole group either way.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(grace)


def kill_now(popen: subprocess.Popen) -> None:
    """Kill a process started with process_group_kwargs() and its children, without waiting.

    For Blender's UI thread: nothing here blocks. Whoever reads the process's pipes sees them
    close and reaps it (WorkerClient's stdout reader, EnvSetup's thread).
    """
    if sys.platform == "win32":
        if popen.poll() is not None:
            return
        try:
            # Started, not waited for: taskkill ends by itself. popen.kill() first would orphan
            # the children, which taskkill /T finds through their parent.
            subprocess.Popen(
                ["taskkill", "/T", "/F", "/PID", str(popen.pid)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                creationflags=subprocess.CREATE_NO_WINDOW,
            )
        except OSError:
            with contextlib.suppress(OSError):
                popen.kill()
        return
    # SIGKILL at once: the group goes whatever it is doing, and its pipes close.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)


def stop_after(popen: subprocess.Popen, timeout: float) -> None:
    """Give a process asked to exit ``timeout`` seconds, then kill it and its children."""
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_tree(popen)
