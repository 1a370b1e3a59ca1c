#!/usr/bin/env python3
"""Task runner for shape_e_blender. Standard library only: it runs before any environment exists.

python build.py setup            create .venv (the development and test environment)
python build.py test [ARGS]      lint, then the whole pytest suite (sets up what is missing)
python build.py lint             ruff check and ruff format --check
python build.py zip              write dist/shape_e_blender-<version>.zip (the extension)
python build.py scene [ARGS]     the main job: a prompt becomes a mesh in a Blender scene
python build.py tiny-model DIR   write a tiny random Shap-E pipeline (for offline runs)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "shape_e_blender"
VENV = ROOT / ".venv"
VENV_BPY42 = ROOT / ".venv-bpy42"
DEV_REQUIREMENTS = ROOT / "vendor" / "requirements-dev.txt"
BPY42_REQUIREMENTS = ROOT / "vendor" / "requirements-bpy42.txt"
VENV_CLIENT = ROOT / ".venv-client"
CLIENT_REQUIREMENTS = ROOT / "vendor" / "requirements-client.txt"
# Tested again in a Python without bpy and torch: they must not need either.
NO_BPY_TESTS = ["tests/core", "tests/client", "tests/test_architecture.py"]
NODE_DIR = ROOT / ".cache" / "node"
GLTF_VALIDATOR = "gltf-validator@2.0.0-dev.3.10"
PYTHON_VERSION = (3, 11)  # bpy 4.2 .. 5.0 wheels exist for CPython 3.11 only


def venv_python(env: Path) -> Path:
    if os.name == "nt":
        return env / "Scripts" / "python.exe"
    return env / "bin" / "python"


def run(cmd: list[str | os.PathLike[str]], **kwargs) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], **kwargs)


def check(cmd: list[str | os.PathLike[str]], **kwargs) -> None:
    rc = run(cmd, **kwargs)
    if rc != 0:
        sys.exit(f"build.py: command failed with exit code {rc}")


def _stamp(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def ensure_env(env: Path, requirements: Path) -> Path:
    """Create or update a venv from a requirements file; a no-op when it is current."""
    if sys.version_info[:2] != PYTHON_VERSION:
        sys.exit(
            f"build.py: Python {'.'.join(map(str, PYTHON_VERSION))} is needed "
            f"(bpy wheels exist for it only); this is {sys.version.split()[0]}. "
            f"Run it as python3.11 build.py ..."
        )
    py = venv_python(env)
    stamp_file = env / ".requirements.sha256"
    stamp = _stamp(requirements)
    if py.exists() and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        return py
    if not py.exists():
        print(f"creating {env.name} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
    check([py, "-m", "pip", "install", "--disable-pip-version-check", "-r", requirements])
    stamp_file.write_text(stamp + "\n")
    return py


def ensure_node_tools() -> None:
    """The Khronos glTF validator (npm) for the GLB export tests; skipped where npm is missing."""
    marker = NODE_DIR / "node_modules" / "gltf-validator" / "package.json"
    npm = shutil.which("npm")  # the full path: on Windows it is npm.cmd, which needs no shell then
    if marker.exists() or npm is None:
        return
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    check([npm, "install", "--no-audit", "--no-fund", "--prefix", NODE_DIR, GLTF_VALIDATOR])


def cmd_setup(args: argparse.Namespace) -> int:
    ensure_env(VENV, DEV_REQUIREMENTS)
    ensure_node_tools()
    if args.bpy42:
        ensure_env(VENV_BPY42, BPY42_REQUIREMENTS)
    ensure_env(VENV_CLIENT, CLIENT_REQUIREMENTS)
    return 0


def cmd_lint(_args: argparse.Namespace | None = None) -> int:
    py = ensure_env(VENV, DEV_REQUIREMENTS)
    targets = ["build.py", "shape_e_blender", "tests", "benchmarks"]
    rc = run([py, "-m", "ruff", "check", *targets], cwd=ROOT)
    rc |= run([py, "-m", "ruff", "format", "--check", *targets], cwd=ROOT)
    return rc


def cmd_test(args: argparse.Namespace) -> int:
    py = ensure_env(VENV, DEV_REQUIREMENTS)
    ensure_node_tools()
    ensure_env(VENV_BPY42, BPY42_REQUIREMENTS)
    ensure_env(VENV_CLIENT, CLIENT_REQUIREMENTS)
    if cmd_lint() != 0:
        print("build.py: lint failed (run `.venv/bin/ruff format` to fix formatting)")
        return 1
    env = dict(os.environ)
    env["SHAPE_E_BPY42_PYTHON"] = str(venv_python(VENV_BPY42))
    env["SHAPE_E_NODE_MODULES"] = str(NODE_DIR / "node_modules")
    # Tests never reach a model hub.
    env["HF_HUB_OFFLINE"] = "1"
    env["SHAPE_E_WORKER_PYTHON"] = str(py)
    rc = _pytest(py, args.pytest_args, env)
    if rc == 0 and not args.pytest_args:
        # The Blender side again on the manifest's minimum version, 4.2 LTS. Its worker is .venv's
        # Python: the 4.2 venv holds Blender and numpy only, like Blender's own Python.
        print("build.py: the Blender tests again on Blender 4.2 LTS", flush=True)
        rc = _pytest(venv_python(VENV_BPY42), ["tests/blender"], env)
    if rc == 0 and not args.pytest_args:
        print("build.py: core and the client again in a Python without bpy and torch", flush=True)
        rc = _pytest(venv_python(VENV_CLIENT), NO_BPY_TESTS, env)
    return rc


def _pytest(py: Path, pytest_args: list[str], env: dict[str, str]) -> int:
    rc = run([py, "-m", "pytest", *pytest_args], cwd=ROOT, env=env)
    if rc == 5:
        print("build.py: pytest collected no tests; that counts as a failure")
        return 1
    return rc


def manifest_version() -> str:
    text = (ROOT / "blender_manifest.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        sys.exit("build.py: blender_manifest.toml has no version")
    return match.group(1)


# What ships beside the package in the extension zip.
ZIP_EXTRA = {
    "blender_manifest.toml": "blender_manifest.toml",
    "vendor/worker": "vendor/worker",
    "docs/protocol.md": "docs/protocol.md",
    "LICENSE": "LICENSE",
}


def build_zip(dest_dir: Path | None = None) -> Path:
    dest_dir = dest_dir or ROOT / "dist"
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"shape_e_blender-{manifest_version()}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(PACKAGE.rglob("*")):
            rel = path.relative_to(PACKAGE)
            if path.is_dir() or "__pycache__" in rel.parts or path.suffix in {".pyc", ".pyo"}:
                continue
            zf.write(path, rel.as_posix())
        for src, arc in ZIP_EXTRA.items():
            src_path = ROOT / src
            if src_path.is_dir():
                for path in sorted(src_path.rglob("*")):
                    if path.is_file():
                        zf.write(path, f"{arc}/{path.relative_to(src_path).as_posix()}")
            elif src_path.exists():
                zf.write(src_path, arc)
    return out


def cmd_zip(_args: argparse.Namespace) -> int:
    print(build_zip())
    return 0


def cmd_scene(args: argparse.Namespace) -> int:
    py = ensure_env(VENV, DEV_REQUIREMENTS)
    return run([py, "-m", "shape_e_blender.blender.scene_cli", *args.rest], cwd=ROOT)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    py = ensure_env(VENV, DEV_REQUIREMENTS)
    return run([py, "-m", "shape_e_blender", "tiny-model", *args.rest], cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="create .venv")
    p.add_argument("--bpy42", action="store_true", help="also create .venv-bpy42 (Blender 4.2)")
    p.set_defaults(func=cmd_setup)
    p = sub.add_parser("test", help="lint and run the tests; extra arguments go to pytest")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_test)
    sub.add_parser("lint", help="ruff check and format check").set_defaults(func=cmd_lint)
    sub.add_parser("zip", help="build the extension zip").set_defaults(func=cmd_zip)
    p = sub.add_parser("scene", help="generate a mesh into a Blender scene (see --help)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_scene)
    p = sub.add_parser("tiny-model", help="write a tiny random pipeline")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_tiny_model)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASS_THROUGH:
        # Everything after the command belongs to the program it runs (argparse's REMAINDER
        # would stop at a leading --option).
        return PASS_THROUGH[argv[0]](argparse.Namespace(rest=argv[1:]))
    args = parser.parse_args(argv)
    return args.func(args)


PASS_THROUGH = {"scene": cmd_scene, "tiny-model": cmd_tiny_model}


if __name__ == "__main__":
    sys.exit(main())
