"""Object names: what a generated object is called, from its prompt or its image's file name."""

from __future__ import annotations

import re

from .jobdir import file_name

DEFAULT_NAME = "Shap-E"
NAME_MAX_CHARS = 40
_FILE_SUFFIX = re.compile(r"\.(png|jpe?g|webp|bmp|tiff?|exr|npz|npy|glb|gltf|ply|obj)$", re.I)
_LEADING_ARTICLE = re.compile(r"^(a|an|the)\s+", re.I)


def object_name_for(prompt_or_path: str) -> str:
    """A short readable object name: "a red chair" -> "Red chair", "/x/my_lamp.png" -> "My lamp"."""
    text = prompt_or_path.strip()
    if _FILE_SUFFIX.search(text):  # an image (or mesh) file: its name, not its folder
        text = file_name(text)
        text = _FILE_SUFFIX.sub("", text).replace("_", " ").replace("-", " ")
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    text = _LEADING_ARTICLE.sub("", text).strip(" .,;:!?\"'")
    if len(text) > NAME_MAX_CHARS:
        cut = text[:NAME_MAX_CHARS].rsplit(" ", 1)[0]
        text = cut if len(cut) >= NAME_MAX_CHARS // 2 else text[:NAME_MAX_CHARS]
    # Blender 4.2 holds names up to 63 bytes of UTF-8; longer ones are cut mid-character.
    while len(text.encode("utf-8")) > 63:
        text = text[:-1]
    return text[:1].upper() + text[1:] if text else DEFAULT_NAME
