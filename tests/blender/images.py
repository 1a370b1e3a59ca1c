"""Reading rendered PNGs in the tests: the header with the standard library, pixels through bpy."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOR_TYPES = {0: "GRAY", 2: "RGB", 3: "PALETTE", 4: "GRAY_ALPHA", 6: "RGBA"}


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    color_type: str


def png_header(path: str | Path) -> PngHeader:
    data = Path(path).read_bytes()[:33]
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise AssertionError(f"{path} is not a PNG file")
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    return PngHeader(width, height, depth, PNG_COLOR_TYPES.get(color_type, str(color_type)))


def read_pixels(path: str | Path) -> np.ndarray:
    """(height, width, 4) floats in [0, 1], top row first, as stored (sRGB-encoded bytes / 255)."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = image.size
        pixels = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels.reshape(height, width, 4)[::-1]


def disc_png(path: Path, radius: int = 10) -> Path:
    """An orange disc on transparency, written by Blender itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = bpy.data.images.new("disc", 32, 32, alpha=True)
    pixels = []
    for y in range(32):
        for x in range(32):
            inside = (x - 16) ** 2 + (y - 16) ** 2 < radius**2
            pixels += [1.0, 0.5, 0.1, 1.0] if inside else [0.0, 0.0, 0.0, 0.0]
    image.pixels = pixels
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    return path
