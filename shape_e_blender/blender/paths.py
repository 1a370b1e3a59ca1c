"""Where the add-on keeps user data: never inside the add-on folder, which an update replaces.

Blender gives each extension a user folder, ``extension_path_user(ROOT)``, where ROOT is the
extension's root package, e.g. ``bl_ext.user_default.shape_e_blender``. Blender deletes that
folder when the extension is uninstalled, so the jobs (and the worker environment) can be moved
elsewhere through a preference: ``jobs_dir(root, override)``.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from ..core import jobdir
from ..core.errors import INTERNAL_ERROR, ShapEError

_EXTENSION_PREFIX = "bl_ext."


def root_package(package: str) -> str:
    """The extension's root package, also when given a submodule's ``__package__``.

    ``extension_path_user`` takes exactly ``bl_ext.<repo>.<id>``; a submodule's ``__package__``
    (four or more parts) makes it raise.
    """
    if package.startswith(_EXTENSION_PREFIX):
        return ".".join(package.split(".")[:3])
    return package.split(".")[0]


def user_dir(root_package_name: str, *parts: str, create: bool = True) -> Path:
    """The extension's user folder, or a folder under it (created unless ``create`` is False).

    Outside an extension install (the package loaded from a source checkout, or as a legacy
    add-on) Blender has no extension folder for it: its user ``datafiles/<package>`` is used.
    """
    root = root_package(root_package_name)
    sub = str(Path(*parts)) if parts else ""
    if root_package_name.startswith(_EXTENSION_PREFIX):
        path = bpy.utils.extension_path_user(root, path=sub, create=create)
    else:
        path = bpy.utils.user_resource("DATAFILES", path=str(Path(root, sub)), create=create)
    if not path:
        # Blender prints the OSError itself and returns "" when it cannot create the folder.
        raise ShapEError(
            INTERNAL_ERROR,
            f"Blender could not create the user folder for {root} ({sub or 'root'})",
            "check that Blender's user folder is writable (see the console for the OS error)",
        )
    return Path(path)


def jobs_dir(root_package_name: str, override: str = "") -> Path:
    """The folder holding one sub-folder per generation job; ``override`` comes from a preference.

    ``override`` may start with ``~`` or with ``//`` (relative to the saved .blend file).
    """
    override = override.strip()
    if override:
        if override.startswith("//") and not bpy.data.filepath:
            raise ShapEError(
                INTERNAL_ERROR,
                f"the jobs folder {override} is relative to the .blend file, which is not saved",
                "save the .blend file, or give an absolute jobs folder in the add-on preferences",
            )
        return jobdir.ensure_dir(
            Path(bpy.path.abspath(override)).expanduser(),
            "the jobs folder",
            "choose a writable folder in the add-on preferences, or clear the setting",
            field="jobs_dir",
        )
    return user_dir(root_package_name, "jobs")
