"""Shap-E objects as assets: marked in this file, and saved into an asset library folder.

An asset gets the prompt (or the image's name) as its description, tags from the prompt's words
plus ``shap-e``, the seed and the model as custom properties of its asset metadata, and a preview
that Blender renders. With an asset library folder in the preferences it is also written there
as its own .blend (``<name>.blend``, the name as a slug: the object and what it uses), in the
catalog the preferences name, so that it appears in every file's Asset Browser once the folder
is an asset library (Preferences > File Paths > Asset Libraries). Catalogs live in the folder's
``blender_assets.cats.txt``, Blender's own format; a catalog's UUID is derived from its path, so
every save into one catalog finds the same one.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import bpy

from ..core.errors import invalid
from ..core.files import atomic_write
from ..core.jobdir import slug

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


@dataclass(frozen=True)
class Asset:
    """Where marked assets go: a library folder ("" for this file only) and a catalog path."""

    library: str = ""
    catalog: str = ""

    @classmethod
    def of(cls, preferences: Any) -> Asset:
        return cls(
            bpy.path.abspath(preferences.asset_library.strip()),
            preferences.asset_catalog.strip(),
        )


def tags_for(settings: dict[str, Any]) -> list[str]:
    """``shap-e`` and the prompt's words (lower case, without the ones that say nothing)."""
    prompt = settings.get("prompt")
    words = re.findall(r"[\w-]+", prompt.lower()) if isinstance(prompt, str) else []
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


def mark(obj: bpy.types.Object, settings: dict[str, Any], asset: Asset) -> Path | None:
    """Mark ``obj`` as an asset (see the module docstring); returns the library file written."""
    if obj.asset_data is None:
        obj.asset_mark()
    data = cast(bpy.types.AssetMetaData, obj.asset_data)  # set by asset_mark()
    source = settings.get("prompt") or settings.get("image") or obj.name
    data.description = f"{source} (Shap-E)"
    known = {t.name for t in data.tags}
    for tag in tags_for(settings):
        if tag not in known:
            data.tags.new(tag)
    for key in METADATA:
        value = settings.get(key)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            data[key] = value
    obj.asset_generate_preview()
    if not asset.library:
        return None
    folder = Path(asset.library)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if asset.catalog:
            path = catalog_path(asset.catalog)
            if path:
                data.catalog_id = ensure_catalog(folder, path)
        target = folder / f"{slug(obj.name, 64)}.blend"
        bpy.data.libraries.write(str(target), {obj}, fake_user=True)
    except OSError as exc:
        raise invalid(
            "asset_library",
            f"cannot save the asset into {folder}: {exc.strerror or exc}",
            "choose a writable asset library folder in the add-on's preferences",
        ) from exc
    return target
