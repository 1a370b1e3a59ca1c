#!/usr/bin/env python3
"""Task runner for shape_e_blender. Standard library only: it runs before any environment exists.

python build.py setup            create the environments the tests need (.venv and .venv-*)
python build.py test [ARGS]      lint, then the whole suite: the worker in .venv, the Blender side
                                 on Blender 4.2, 4.5, 5.2 and 5.3 (main_blender tests on 5.2
                                 only), core and client on Python 3.13
                                 (ARGS go to pytest in .venv; --blender V runs tests on one Blender)
python build.py lint             ruff, and mypy against the bpy stubs of Blender 4.2 and 5.2
python build.py zip              write dist/shape_e_blender-<version>.zip (the extension)
python build.py lock [NAME ...]  write vendor/worker/NAME.lock.txt, the worker environment's hash
                                 locks (needs uv on PATH; default: all of LOCKS)
python build.py scene [ARGS]     the main job: a prompt becomes a mesh in a Blender scene
python build.py tiny-model DIR   write a tiny random Shap-E pipeline (for offline runs)

Every command runs in the folder it was typed in: relative paths resolve there.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "shape_e_blender"
VENDOR = ROOT / "vendor"
NODE_DIR = ROOT / ".cache" / "node"
GLTF_VALIDATOR = "gltf-validator@2.0.0-dev.3.10"


@dataclass(frozen=True)
class Env:
    """A venv of this repository: its folder, its pinned requirements and its Python version."""

    name: str
    requirements: Path
    python: tuple[int, int]
    what: str

    @property
    def path(self) -> Path:
        return ROOT / self.name


# The worker's stack (torch, diffusers) and the development tools. Python 3.11: the only torch
# wheel these machines carry is the 3.11 CPU build (vendor/requirements-dev.txt).
WORKER = Env(".venv", VENDOR / "requirements-dev.txt", (3, 11), "the worker and the tools")
# Blender as a module, one venv per tested version, each with the Python and numpy that Blender
# bundles (bpy 4.2 to 5.0 exist for CPython 3.11, 5.1 onwards for 3.13). They hold bpy, numpy
# and pytest only, like Blender's own Python: their worker is WORKER's Python.
BLENDERS = {
    version: Env(f".venv-blender-{version}", VENDOR / "blender" / f"{version}.txt", py, what)
    for version, py, what in [
        ("4.2", (3, 11), "Blender 4.2 LTS, the manifest's minimum"),
        ("4.5", (3, 11), "Blender 4.5 LTS"),
        ("5.2", (3, 13), "Blender 5.2 LTS"),
        ("5.3", (3, 13), "Blender 5.3, the newest release"),
    ]
}
MAIN_BLENDER = "5.2"  # the scene command's Blender: the LTS most artists run
# Python 3.13 without bpy and torch, as a worker environment made from Blender 5.1+'s Python is
# before torch is installed: what needs neither is tested there.
NO_TORCH = Env(
    ".venv-py313", VENDOR / "requirements-py313.txt", (3, 13), "Python 3.13 without bpy or torch"
)
NO_TORCH_TESTS = [
    "tests/core",
    "tests/client",
    "tests/test_architecture.py",
    "tests/worker/test_inputs.py",
    "tests/worker/mesh/test_export.py",
]
# fake-bpy-module's stubs, for type-checking the Blender side against each API (build.py lint).
STUBS = {
    version: Env(f".venv-stubs-{version}", VENDOR / "stubs" / f"{version}.txt", py, "stubs")
    for version, py in [("4.2", (3, 11)), ("5.2", (3, 13))]
}
TYPED = ["shape_e_blender/blender", "shape_e_blender/client", "shape_e_blender/core"]


def venv_python(env: Path) -> Path:
    if sys.platform == "win32":
        return env / "Scripts" / "python.exe"
    return env / "bin" / "python"


def run(cmd: list[str | os.PathLike[str]], **kwargs) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    with subprocess.Popen([str(c) for c in cmd], **kwargs) as proc:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # A terminal's Ctrl+C reached the command too: let it end its own way (the scene
            # build cancels its job and says "interrupted") instead of a traceback here.
            return proc.wait()


def check(cmd: list[str | os.PathLike[str]], **kwargs) -> None:
    rc = run(cmd, **kwargs)
    if rc != 0:
        sys.exit(f"build.py: command failed with exit code {rc}")


def _stamp(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def find_python(version: tuple[int, int]) -> Path:
    """An interpreter of this version: this one, pythonX.Y on PATH, or one that pyenv installed."""
    if sys.version_info[:2] == version:
        return Path(sys.executable)
    dotted = "{}.{}".format(*version)
    name = f"python{dotted}"
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(name), *sorted(pyenv_root.glob(f"versions/{dotted}*/bin/{name}"))]
    for candidate in filter(None, candidates):
        # pyenv's shim is on PATH even where that version is not selected: it must really run.
        probe = subprocess.run([candidate, "-c", ""], capture_output=True, check=False)
        if probe.returncode == 0:
            return Path(candidate)
    sys.exit(
        f"build.py: {name} is needed (bpy wheels for this Blender exist for it only) and was "
        f"not found on PATH or in {pyenv_root}/versions: install it (for instance "
        f"`pyenv install {dotted}`) and run this again"
    )


def ensure_env(env: Env) -> Path:
    """Create or update a venv from its requirements file; a no-op when it is current."""
    py = venv_python(env.path)
    stamp_file = env.path / ".requirements.sha256"
    stamp = _stamp(env.requirements)
    if py.exists() and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        return py
    if not py.exists():
        print(f"creating {env.name} ({env.what}) ...", flush=True)
        check([find_python(env.python), "-m", "venv", "--clear", env.path])
    check([py, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", env.requirements])
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


def ensure_test_envs() -> None:
    ensure_env(WORKER)
    ensure_node_tools()
    for env in [*BLENDERS.values(), NO_TORCH, *STUBS.values()]:
        ensure_env(env)


def cmd_setup(_args: argparse.Namespace) -> int:
    ensure_test_envs()
    return 0


def cmd_lint(_args: argparse.Namespace | None = None) -> int:
    py = ensure_env(WORKER)
    targets = ["build.py", "shape_e_blender", "tests", "benchmarks"]
    rc = run([py, "-m", "ruff", "check", *targets], cwd=ROOT)
    rc |= run([py, "-m", "ruff", "format", "--check", *targets], cwd=ROOT)
    # The bpy-facing code against each Blender's API (fake-bpy-module), so an attribute that one
    # version lacks fails here even where no test reaches it.
    for version, stubs in STUBS.items():
        stubs_py = ensure_env(stubs)
        python_version = "{}.{}".format(*stubs.python)
        print(f"build.py: type-checking against Blender {version}'s API", flush=True)
        rc |= run(
            [py, "-m", "mypy", "--python-executable", stubs_py, "--python-version",
             python_version, *TYPED],
            cwd=ROOT,
        )  # fmt: skip
    return rc


def cmd_test(args: argparse.Namespace) -> int:
    ensure_test_envs()
    if not args.pytest_args and cmd_lint() != 0:
        print("build.py: lint failed (run `.venv/bin/ruff format` to fix formatting)")
        return 1
    env = dict(os.environ)
    env["SHAPE_E_NODE_MODULES"] = str(NODE_DIR / "node_modules")
    env["HF_HUB_OFFLINE"] = "1"  # tests never reach a model hub
    # Whatever Python runs the tests, the worker runs in the worker environment.
    env["SHAPE_E_WORKER_PYTHON"] = str(venv_python(WORKER.path))
    env["SHAPE_E_NO_TORCH_PYTHON"] = str(venv_python(NO_TORCH.path))
    if args.blender:
        return _pytest(BLENDERS[args.blender], args.pytest_args or ["tests/blender"], env)
    if args.pytest_args:
        return _pytest(WORKER, args.pytest_args, env)
    runs = [(WORKER, ["tests"])]  # everything but tests/blender, which needs bpy
    runs += [(BLENDERS[MAIN_BLENDER], ["tests/blender"])]
    # The other Blenders skip the tests about the worker, the client and the commands, whose
    # Blender calls other tests make on each of them: a third of the Blender suite's time.
    others = ["tests/blender", "-m", "not main_blender"]
    runs += [(b, others) for v, b in BLENDERS.items() if v != MAIN_BLENDER]
    runs += [(NO_TORCH, NO_TORCH_TESTS)]
    timings: list[tuple[str, float, int]] = []
    for target, paths in runs:
        print(f"build.py: {' '.join(paths)} on {target.what} ({target.name})", flush=True)
        started = time.perf_counter()
        rc = _pytest(target, paths, env)
        timings.append((target.what, time.perf_counter() - started, rc))
        if rc != 0:
            break
    print("build.py: test runs")
    for what, seconds, rc in timings:
        print(f"  {what:<42} {seconds / 60:5.1f} min  {'ok' if rc == 0 else 'FAILED'}")
    return rc


def _pytest(target: Env, pytest_args: list[str], env: dict[str, str]) -> int:
    rc = run([venv_python(target.path), "-m", "pytest", *pytest_args], cwd=ROOT, env=env)
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


# The managed worker environment's hash locks: vendor/worker/NAME.lock.txt from NAME.txt. cpu and
# cuda take torch from PyTorch's index, so only a machine that reaches it can write theirs.
LOCKS = ("pypi", "cpu", "cuda")
LOCK_PYTHON = "3.11"  # the oldest Python of a supported Blender; the lock holds for newer ones


def source_lines(path: Path) -> list[str]:
    """A requirements file's requirement and option lines, its -r files inlined, comments out."""
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line.startswith("-r "):
            lines += source_lines(path.parent / line[3:].strip())
        elif line and not line.startswith("#"):
            lines.append(line)
    return lines


def sources_digest(path: Path) -> str:
    """What a lock was written from: the test suite compares it with the lock's stamp."""
    return hashlib.sha256("\n".join(source_lines(path)).encode()).hexdigest()


def cmd_lock(args: argparse.Namespace) -> int:
    unknown = set(args.names) - set(LOCKS)
    if unknown:
        sys.exit(
            f"build.py: no lock named {', '.join(sorted(unknown))} (locks: {', '.join(LOCKS)})"
        )
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("build.py: lock needs uv on PATH (for instance `pip install uv` in a venv)")
    folder = VENDOR / "worker"
    failed = []
    for name in args.names or LOCKS:
        source = folder / f"{name}.txt"
        # --index-strategy unsafe-best-match: a version on any index, as pip itself picks.
        cmd = [uv, "pip", "compile", "--quiet", "--universal", "--generate-hashes",
               "--python-version", LOCK_PYTHON, "--only-binary", ":all:", "--no-header",
               "--index-strategy", "unsafe-best-match", source.name]  # fmt: skip
        print("+", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            failed.append(name)
            continue
        indexes = [line for line in source_lines(source) if line.startswith("--extra-index-url")]
        header = [
            f"# Hash lock of {source.name}, written by `python build.py lock {name}` (uv pip",
            "# compile --universal --generate-hashes). The managed worker environment installs",
            "# it with pip install --require-hashes --only-binary :all: (client/envsetup.py).",
            f"# sources sha256: {sources_digest(source)}",
            *indexes,
        ]
        (folder / f"{name}.lock.txt").write_text("\n".join(header) + "\n" + proc.stdout)
        print(f"build.py: wrote vendor/worker/{name}.lock.txt", flush=True)
    if failed:
        print(f"build.py: no lock written for {', '.join(failed)} (see above)", file=sys.stderr)
    return 1 if failed else 0


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


def _from_here() -> dict[str, str]:
    """The environment for a command run where the user typed it: the repository importable, so
    that relative paths (-o, --model, --image) resolve in the caller's folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def cmd_scene(args: argparse.Namespace) -> int:
    worker = ensure_env(WORKER)
    blender = ensure_env(BLENDERS[MAIN_BLENDER])
    command = [blender, "-m", "shape_e_blender.blender.scene_cli", "--worker-python", worker]
    return run([*command, *args.rest], cwd=Path.cwd(), env=_from_here())


def cmd_tiny_model(args: argparse.Namespace) -> int:
    py = ensure_env(WORKER)
    command = [py, "-m", "shape_e_blender", "tiny-model", *args.rest]
    return run(command, cwd=Path.cwd(), env=_from_here())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="create the test environments").set_defaults(func=cmd_setup)
    p = sub.add_parser("test", help="lint and run the tests; extra arguments go to pytest")
    p.add_argument(
        "--blender",
        choices=sorted(BLENDERS),
        help="run the given tests (default tests/blender) on this Blender only",
    )
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_test)
    sub.add_parser("lint", help="ruff and mypy against the bpy stubs").set_defaults(func=cmd_lint)
    sub.add_parser("zip", help="build the extension zip").set_defaults(func=cmd_zip)
    p = sub.add_parser("lock", help="write the worker environment's hash locks (needs uv)")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(LOCKS)} (default: all)")
    p.set_defaults(func=cmd_lock)
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
