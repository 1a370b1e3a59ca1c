"""Child process of test_extension: install the extension zip into a throw-away Blender user folder.

python -m tests.blender.children.install_job ZIP USER_RESOURCES

The caller points BLENDER_USER_RESOURCES at USER_RESOURCES; this script refuses to install
anywhere else, so the developer's own Blender config is never touched.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import bpy

from tests.support import emit_result

REPO_NAME = "user_default"
EXTENSION_ID = "shape_e_blender"
MODULE = f"bl_ext.{REPO_NAME}.{EXTENSION_ID}"


def main(zip_path: str, user_resources: str) -> None:
    import addon_utils  # Blender's scripts folder is on sys.path only once bpy is imported

    user_root = Path(user_resources).resolve()
    blender_user = Path(bpy.utils.resource_path("USER")).resolve()
    if blender_user != user_root:
        sys.exit(f"refusing to install: Blender's user folder is {blender_user}, not {user_root}")

    install_error = None
    try:
        bpy.ops.extensions.package_install_files(
            filepath=zip_path, repo=REPO_NAME, enable_on_install=True
        )
    except RuntimeError as exc:  # register() failing surfaces here; reported to the test
        install_error = str(exc)
    repos = bpy.context.preferences.extensions.repos
    repo_dir = Path(next(r.directory for r in repos if r.module == REPO_NAME))
    addon_dir = repo_dir / EXTENSION_ID
    enabled = MODULE in bpy.context.preferences.addons
    loaded_default, loaded_state = addon_utils.check(MODULE)

    # The installed copy (not the repository's), with the root package as the add-on sees it.
    root = importlib.import_module(MODULE)
    paths = importlib.import_module(f"{MODULE}.blender.paths")
    user_dir = paths.user_dir(root.__package__)
    jobs_dir = paths.jobs_dir(root.__package__)
    from_submodule = paths.user_dir(paths.__package__)
    try:
        bpy.utils.extension_path_user(paths.__package__)
        raw_submodule_error = None
    except ValueError as exc:
        raw_submodule_error = str(exc)

    disable_error = None
    if enabled:
        try:
            bpy.ops.preferences.addon_disable(module=MODULE)
        except RuntimeError as exc:
            disable_error = str(exc)

    emit_result(
        {
            "install_error": install_error,
            "enabled": enabled,
            "loaded": [loaded_default, loaded_state],
            "disable_error": disable_error,
            "still_enabled": MODULE in bpy.context.preferences.addons,
            "addon_dir": str(addon_dir),
            "addon_files": sorted(
                p.relative_to(addon_dir).as_posix() for p in addon_dir.rglob("*") if p.is_file()
            ),
            "root_package": root.__package__,
            "paths_file": paths.__file__,
            "user_dir": str(user_dir),
            "jobs_dir": str(jobs_dir),
            "jobs_dir_exists": jobs_dir.is_dir(),
            "user_dir_from_submodule": str(from_submodule),
            "raw_submodule_error": raw_submodule_error,
            "blender_user": str(blender_user),
        }
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
