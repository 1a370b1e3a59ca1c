"""Shap-E objects as assets: marked in this file, and saved into an asset library folder.

An asset gets the prompt (for an image, its file's name) as its description, tags from those
words plus ``shap-e``, the seed and the model as custom properties of its asset metadata, and a
preview that Blender renders. With an asset library folder in the preferences it is also written
there as its own .blend (``<name>.blend``, the name as a slug: the object and what it uses, its
texture packed in, so the file still works once the job folder is gone or on another computer),
in the catalog the preferences name, so that it appears in every file's Asset Browser once the
folder is an asset library (Preferences > File Paths > Asset Libraries). Catalogs live in the
folder's ``blender_assets.cats.txt``, Blender's own format; a catalog's UUID is derived from its
path, so every save into one catalog finds the same one. Another object's file of the same name
is never overwritten: the new one is ``<name>-2.blend``; marking the same object again rewrites
its own file (the object records it).

The folder and the catalog are checked before anything changes (``Asset.checked``): a generation
refuses to start, and Mark as Asset to mark, when the asset could not be saved.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import bpy

from ..core.errors import invalid
from ..core.files import atomic_write
from ..core.jobdir import slug
from ..core.names import object_name_for
from . import importer

TAG = "shap-e"
CATALOG_FILE = "blender_assets.cats.txt"
_CATALOG_HEADER = (
    "# This is an Asset Catalog Definition file for Blender.\n"
    "#\n"
    "# Empty lines and lines starting with `#` will be ignored.\n"
    "# The first non-ignored line should be the version indicator.\n"
    '# Other lines are of the format "UUID:catalog/path/for/assets:simple catalog name"\n'
    "\n"
    "VERSION 1\n"
    "\n"
)
_NAMESPACE = uuid.UUID("5b0c7e02-6a9f-4c55-9a53-2f1f3c9e1a77")  # this add-on's catalog UUIDs
# Words that say nothing about an asset, left out of its tags.
_STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "of",
        "with",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "or",
        "its",
        "is",
    ]
)
METADATA = ("seed", "model", "grid_size", "faces", "texture_size")


ASSET_FILE = "asset_file"  # in obj["shape_e"]: the library file this object was saved as
PREVIEW_WAIT_S = 60.0  # the UI renders previews in a job: the save waits for it this long at most


@dataclass(frozen=True)
class Asset:
    """Where marked assets go: a library folder ("" for this file only) and a catalog path."""

    library: str = ""
    catalog: str = ""

    @classmethod
    def of(cls, preferences: Any) -> Asset:
        return cls(preferences.asset_library.strip(), preferences.asset_catalog.strip())

    @property
    def folder(self) -> Path | None:
        """The library folder, absolute (a "//" path is relative to the saved .blend)."""
        return Path(bpy.path.abspath(self.library)).expanduser() if self.library else None

    def checked(self) -> Asset:
        """This asset place, once saving into it is known to work: raises naming
        ``asset_catalog`` or ``asset_library`` (made where missing) otherwise."""
        catalog_path(self.catalog)
        folder = self.folder
        if folder is None:
            return self
        fix = "choose a writable asset library folder in the add-on's preferences (or none)"
        if not self.library.startswith("//") and not Path(self.library).expanduser().is_absolute():
            # Relative to nothing an artist chose: Blender's working folder, wherever it started.
            raise invalid(
                "asset_library",
                f"{self.library!r} is a relative path",
                "choose an absolute folder, or one starting with // for beside the .blend file",
            )
        if self.library.startswith("//") and not bpy.data.filepath:
            raise invalid(
                "asset_library",
                f"{self.library!r} is relative to the .blend file, which is not saved yet",
                "save the file first, or choose an absolute folder",
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):  # a real write: permissions lie to root
                pass
        except OSError as exc:
            raise invalid(
                "asset_library", f"cannot save assets into {folder}: {exc.strerror or exc}", fix
            ) from None
        return self


def tags_for(text: str) -> list[str]:
    """``shap-e`` and the words of ``text`` (lower case, without the ones that say nothing)."""
    words = re.findall(r"[\w-]+", text.lower())
    tags = [TAG]
    for word in words:
        if word not in _STOP_WORDS and word not in tags and not word.isdigit():
            tags.append(word)
    return tags


def catalog_path(text: str) -> str:
    """A catalog path as Blender writes it ("Shap-E/Props"); refused when it names nothing."""
    parts = [p.strip() for p in text.replace("\\", "/").split("/") if p.strip()]
    if any(":" in p for p in parts):
        raise invalid("asset_catalog", f"{text!r} holds a ':'", "use names and '/' only")
    return "/".join(parts)


def ensure_catalog(folder: Path, path: str) -> str:
    """The UUID of catalog ``path`` in ``folder``'s catalog file, added where it is missing."""
    file = folder / CATALOG_FILE
    text = file.read_text("utf-8") if file.is_file() else _CATALOG_HEADER
    for line in text.splitlines():
        fields = line.split(":", 2)
        if not line.startswith("#") and len(fields) >= 2 and fields[1] == path:
            return fields[0]
    catalog_id = str(uuid.uuid5(_NAMESPACE, path))
    simple = path.replace("/", "-")
    atomic_write(file, (text.rstrip("\n") + f"\n{catalog_id}:{path}:{simple}\n").encode("utf-8"))
    return catalog_id


def description_of(settings: dict[str, Any], fallback: str) -> str:
    """The prompt; for an image, its file's name as a readable phrase."""
    prompt, image = settings.get("prompt"), settings.get("image")
    if isinstance(prompt, str) and prompt:
        return prompt
    return object_name_for(image) if isinstance(image, str) and image else fallback


def mark(obj: bpy.types.Object, settings: dict[str, Any], asset: Asset) -> Path | None:
    """Mark ``obj`` as an asset (see the module docstring); returns the library file it is
    saved as (in the UI, once Blender has rendered its preview). Raises before anything
    changes when the library or catalog cannot take it."""
    asset.checked()
    if obj.asset_data is None:
        obj.asset_mark()
    data = cast(bpy.types.AssetMetaData, obj.asset_data)  # set by asset_mark()
    data.description = description_of(settings, obj.name)
    known = {t.name for t in data.tags}
    for tag in tags_for(data.description):
        if tag not in known:
            data.tags.new(tag)
    for key in METADATA:
        value = settings.get(key)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            data[key] = value
    obj.asset_generate_preview()
    folder = asset.folder
    if folder is None:
        return None
    path = catalog_path(asset.catalog)
    if path:
        data.catalog_id = ensure_catalog(folder, path)
    target = library_file(obj, settings, folder)
    obj[importer.PROPERTY_KEY][ASSET_FILE] = str(target)
    if bpy.app.background or not _rendering_previews():
        save(obj, target)
    else:  # the preview is rendered in a job: saved now, the file would have none
        uid, deadline = obj.session_uid, time.monotonic() + PREVIEW_WAIT_S
        bpy.app.timers.register(lambda: _save_later(uid, target, deadline), first_interval=0.2)
    return target


def library_file(obj: bpy.types.Object, settings: dict[str, Any], folder: Path) -> Path:
    """The file ``obj`` is saved as: the one it was saved as before, in this folder, else
    ``<slug>.blend`` or, where another asset has that name, ``<slug>-2.blend``, ..."""
    recorded = settings.get(ASSET_FILE)
    if isinstance(recorded, str) and recorded and Path(recorded).parent == folder:
        return Path(recorded)
    base = slug(obj.name, 64)
    target, n = folder / f"{base}.blend", 1
    while target.exists():
        n += 1
        target = folder / f"{base}-{n}.blend"
    return target


def save(obj: bpy.types.Object, target: Path) -> None:
    """Write ``obj`` and what it uses into ``target``, its images packed in; this file's
    images stay as they are (linked to their files)."""
    images = {
        node.image
        for slot in obj.material_slots
        if slot.material is not None and slot.material.node_tree is not None
        for node in slot.material.node_tree.nodes
        if isinstance(node, bpy.types.ShaderNodeTexImage) and node.image is not None
    }
    packed = [i for i in images if i.packed_file is None and i.source == "FILE"]
    try:
        for image in packed:
            image.pack()
        bpy.data.libraries.write(str(target), {obj}, fake_user=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: Blender's own write error
        raise invalid(
            "asset_library",
            f"cannot save the asset into {target}: {exc}",
            "choose a writable asset library folder in the add-on's preferences",
        ) from exc
    finally:
        for image in packed:
            image.unpack(method="REMOVE")  # back to the job folder's file


def _rendering_previews() -> bool:
    """Whether Blender renders previews in a job now (the UI does; background mode at once)."""
    # 4.2's stubs say is_job_running returns None.
    return bool(bpy.app.is_job_running("RENDER_PREVIEW"))  # type: ignore[func-returns-value, unused-ignore]


def _save_later(uid: int, target: Path, deadline: float) -> float | None:
    """A timer: save the object once no preview is being rendered (or at the deadline)."""
    obj = next((o for o in bpy.data.objects if o.session_uid == uid), None)
    if obj is None:
        return None
    if _rendering_previews() and time.monotonic() < deadline:
        return 0.2
    try:
        save(obj, target)
    except Exception as exc:  # a timer has no caller to raise to: say it where it is seen
        print(f"shape_e: {exc}", file=sys.stderr)
    return None
