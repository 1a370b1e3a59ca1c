"""The extension zip: its layout, Blender's own validator, and an install into real Blender.

The install runs in a child process whose Blender user folder (BLENDER_USER_RESOURCES) is a
temporary folder: the developer's real Blender config is never read or written.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import bpy
import pytest

from tests.support import REPO, child_env, run_blender_script, run_child

VALIDATOR = Path(bpy.utils.system_resource("SCRIPTS"), "addons_core", "bl_pkg", "cli")
VALIDATOR /= "blender_ext.py"


def _build_module():
    spec = importlib.util.spec_from_file_location("shape_e_build", REPO / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # build.py's dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    return _build_module().build_zip(tmp_path_factory.mktemp("dist"))


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(VALIDATOR), "validate", str(path)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
        check=False,
    )


def test_zip_layout_is_the_package_at_the_root(extension_zip):
    names = zipfile.ZipFile(extension_zip).namelist()
    manifest = tomllib.loads(zipfile.ZipFile(extension_zip).read("blender_manifest.toml").decode())
    assert extension_zip.name == f"shape_e_blender-{manifest['version']}.zip"
    # Blender wants the manifest and the package's __init__.py together at the top.
    assert "blender_manifest.toml" in names and "__init__.py" in names
    package = REPO / "shape_e_blender"
    sources = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert sources <= set(names)
    assert {"blender/importer.py", "blender/camera.py", "blender/paths.py"} <= set(names)
    assert {"LICENSE", "docs/protocol.md", "vendor/worker/base.txt"} <= set(names)
    assert not [n for n in names if n.startswith(("shape_e_blender/", "tests/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]


def test_manifest_says_what_blender_needs():
    manifest = tomllib.loads((REPO / "blender_manifest.toml").read_text(encoding="utf-8"))
    assert manifest["id"] == "shape_e_blender" and manifest["type"] == "add-on"
    assert manifest["blender_version_min"] == "4.2.0"
    assert set(manifest["permissions"]) == {"files", "network"}


def test_blenders_validator_accepts_the_zip(extension_zip):
    result = _validate(extension_zip)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_blenders_validator_rejects_a_broken_manifest(extension_zip, tmp_path):
    """The validator call above can fail: the same zip with a too-long tagline does."""
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(extension_zip) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "blender_manifest.toml":
                data = data.replace(b'tagline = "', b'tagline = "' + b"x" * 70)
            dst.writestr(item, data)
    result = _validate(broken)
    assert result.returncode != 0 and "tagline" in result.stdout


@pytest.fixture(scope="module")
def installed(extension_zip, tmp_path_factory) -> dict:
    user = tmp_path_factory.mktemp("blender_user")
    env = child_env(BLENDER_USER_RESOURCES=str(user), HOME=str(user))
    # A developer's own overrides would win over BLENDER_USER_RESOURCES: drop them.
    for key in list(env):
        if key.startswith(("BLENDER_USER_", "BLENDER_SYSTEM_")) and key != "BLENDER_USER_RESOURCES":
            del env[key]
    return run_blender_script(
        "tests.blender.children.install_job", str(extension_zip), str(user), env=env, timeout=300
    )


def test_install_puts_the_package_in_the_user_repository(installed):
    addon_dir = Path(installed["addon_dir"])
    assert addon_dir.parts[-2:] == ("user_default", "shape_e_blender")
    assert Path(installed["blender_user"]) in addon_dir.parents
    assert {"__init__.py", "blender_manifest.toml", "blender/paths.py", "core/mesh.py"} <= set(
        installed["addon_files"]
    )
    assert installed["root_package"] == "bl_ext.user_default.shape_e_blender"
    # The code that ran is the installed copy, not the repository's.
    assert Path(installed["paths_file"]).parent.parent == addon_dir


def test_user_dir_resolves_outside_the_addon_folder(installed):
    addon_dir = Path(installed["addon_dir"])
    user_dir = Path(installed["user_dir"])
    assert user_dir.is_absolute() and user_dir.is_dir()
    assert addon_dir not in user_dir.parents and user_dir != addon_dir
    assert user_dir.parts[-3:] == (".user", "user_default", "shape_e_blender")
    assert Path(installed["blender_user"]) in user_dir.parents
    assert Path(installed["jobs_dir"]) == user_dir / "jobs" and installed["jobs_dir_exists"]
    # A submodule's __package__ reaches the same folder through paths.user_dir, where Blender's
    # own call refuses it.
    assert installed["user_dir_from_submodule"] == installed["user_dir"]
    assert installed["raw_submodule_error"]


def test_extension_is_enabled_and_disabled_without_error(installed):
    assert installed["install_error"] is None
    assert installed["enabled"] and installed["loaded"] == [True, True]
    assert installed["disable_error"] is None and not installed["still_enabled"]


def test_install_job_refuses_a_user_folder_it_was_not_given(tmp_path):
    """The guard that keeps the developer's Blender config out of reach of the install."""
    proc = run_child(
        sys.executable,
        "-m",
        "tests.blender.children.install_job",
        "x.zip",
        str(tmp_path / "given"),
        timeout=120,
        env_extra={"BLENDER_USER_RESOURCES": str(tmp_path / "used")},
    )
    assert proc.returncode != 0 and "refusing to install" in proc.stderr
