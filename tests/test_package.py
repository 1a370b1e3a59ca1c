"""The repository is an installable package for machines that only run the worker:
``pip install ".[worker]"`` (README, "A worker on another machine")."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.support import REPO, run_child


def test_the_wheel_carries_the_package_and_the_worker_extras_with_their_pins(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "vendor" / "worker", src / "vendor" / "worker")
    shutil.copytree(REPO / "shape_e_blender", src / "shape_e_blender",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    proc = run_child(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--disable-pip-version-check", "-q", str(src), "-w", str(tmp_path / "dist"),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "shape_e_blender/worker/server.py" in names and "shape_e_blender/batch/cli.py" in names
    manifest = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    assert f"Version: {manifest['version']}\n" in meta  # the package is the extension's version
    pins = (REPO / "vendor" / "worker" / "base.txt").read_text().splitlines()
    for pin in [p for p in pins if p and not p.startswith("#")] + ["torch==2.13.0"]:
        assert f'Requires-Dist: {pin}; extra == "worker"' in meta, pin
    assert 'Requires-Dist: ray==2.60.0; extra == "ray"' in meta

    # Installed elsewhere (its dependencies are this environment's), it runs the worker.
    target = tmp_path / "site"
    proc = run_child(
        sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q",
        "--target", str(target), str(wheel), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    hello = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "hello"}) + "\n"
    worker = subprocess.run(
        [sys.executable, "-m", "shape_e_blender.worker", "--jobs-root", str(tmp_path / "jobs")],
        input=hello, capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    answer = json.loads(worker.stdout.splitlines()[0])
    assert answer["id"] == 1 and answer["result"]["protocol"] == 1, worker.stderr[-3000:]
    where = subprocess.run(
        [sys.executable, "-c", "import shape_e_blender; print(shape_e_blender.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(target)},
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(target)  # the installed copy ran


def test_the_extension_zip_carries_the_worker_locks_and_their_sources(tmp_path):
    # The managed worker environment installs vendor/worker/*.lock.txt from the installed
    # extension (client/envsetup.py's vendor_dir), so build.py zip must ship them as they are.
    spec = importlib.util.spec_from_file_location("build_py", REPO / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_py", build)  # dataclasses look the module up
    spec.loader.exec_module(build)
    zip_path = build.build_zip(tmp_path)
    folder = REPO / "vendor" / "worker"
    locks = sorted(folder.glob("*.lock.txt"))
    assert folder / "pypi.lock.txt" in locks
    with zipfile.ZipFile(zip_path) as z:
        for path in [*locks, *folder.glob("*.txt")]:
            assert z.read(f"vendor/worker/{path.name}") == path.read_bytes(), path.name
