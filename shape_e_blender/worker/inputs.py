"""The input files a job opens: an image for the image model, or a saved latent to decode again.

Images become a centred object on a plain white square. Image300M was trained on renders of a
single object on white. CLIP's processor resizes the short side and centre-crops, so a non-square
picture would lose its sides: every image leaves here square. Images with transparency are cut
out (composited on white, cropped to the object with a margin); opaque images are only padded,
never cropped, because there is no way to know where the object is.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..core.errors import INVALID_PARAMS, ShapEError
from ..core.files import FILE, FOLDER, atomic_write, probe
from ..core.params import SETTINGS

log = logging.getLogger(__name__)

MAX_SIDE = 1024  # the model sees 224 px; this bounds memory and keeps a margin for the crop
ALPHA_THRESHOLD = 8  # of 255: fainter pixels (anti-aliasing haze, shadows) do not count as object
WHITE = (255, 255, 255)
MAX_LATENT_VALUES = 4 << 20  # per latent: four times the released model's 1024 x 1024


def prepare_image(
    path: str | Path,
    *,
    margin: float = 0.1,
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Load ``path`` and return a square RGB image with the object centred on ``background``.

    ``margin`` is the free space on each side of a cut-out object, as a fraction of the object's
    larger side. Raises ShapEError (field ``image``) for a missing, unreadable, oversized or fully
    transparent image.
    """
    if not 0.0 <= margin <= 1.0:
        raise ShapEError(
            INVALID_PARAMS, f"image margin {margin} is outside 0..1", "use e.g. 0.1", "image"
        )
    img = _open(Path(path))
    rgba = _to_rgb_or_rgba(img, Path(path))
    if rgba.mode == "RGBA":
        return _cut_out(rgba, margin, background, Path(path))
    return _pad_square(rgba, background)


def _regular(path: Path, field: str, hint: str) -> None:
    """Refuse what is not a regular file before opening it: opening a FIFO blocks until a
    writer comes (a cancel could not stop the job), and a device never ends (/dev/zero). A path
    the OS cannot look up (a name too long, a link that loops) is refused with its reason."""
    kind, why = probe(path)
    if kind == FOLDER:
        raise ShapEError(INVALID_PARAMS, f"{field}: {path} is a folder", hint, field)
    if kind != FILE:
        raise ShapEError(INVALID_PARAMS, f"{field}: {path} {why}", hint, field)


def _open(path: Path) -> Image.Image:
    _regular(path, "image", "check the path, or pick the image again in the file browser")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(path)
        for w in caught:
            if issubclass(w.category, Image.DecompressionBombWarning):
                log.warning("%s: %s; it will be downscaled to %d px", path, w.message, MAX_SIDE)
        # JPEG can decode at 1/2, 1/4 or 1/8 scale: a 50-megapixel photo never fills memory.
        img.draft(None, (MAX_SIDE, MAX_SIDE))
        img.load()
    except Image.DecompressionBombError as exc:
        raise ShapEError(
            INVALID_PARAMS,
            f"image: {path} is too large to open safely ({exc})",
            f"downscale it below {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels first; "
            f"the model only sees 224 px",
            "image",
        ) from exc
    except UnidentifiedImageError as exc:
        raise ShapEError(
            INVALID_PARAMS,
            f"image: {path} is not an image Pillow can read",
            "use a PNG or JPEG file",
            "image",
        ) from exc
    except OSError as exc:  # truncated file, permission denied, broken decoder
        raise ShapEError(
            INVALID_PARAMS,
            f"image: cannot read {path}: {exc}",
            "check that the file is complete and readable, or re-save it as PNG",
            "image",
        ) from exc
    # Phones store the sensor's orientation in EXIF instead of rotating the pixels.
    return ImageOps.exif_transpose(img)


def _to_rgb_or_rgba(img: Image.Image, path: Path) -> Image.Image:
    """8-bit sRGB, with an alpha channel only where the file has transparency."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _grey_to_8bit(img)
    img = _to_srgb(img, path)
    has_alpha = img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info
    # convert() applies a palette's or tRNS chunk's transparent entry when it makes RGBA.
    img = img.convert("RGBA" if has_alpha else "RGB")
    if img.width > MAX_SIDE or img.height > MAX_SIDE:
        # Pillow resizes RGBA premultiplied, so transparent pixels do not bleed colour.
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    if img.mode == "RGBA" and img.getchannel("A").getextrema()[0] == 255:
        img = img.convert("RGB")  # an opaque alpha channel carries no cut-out
    return img


def _grey_to_8bit(img: Image.Image) -> Image.Image:
    """Scale 16-bit (and 32-bit integer or float) greyscale to 8 bits instead of clipping it.

    Pillow's own convert("L") clips I;16 values at 255, which turns most 16-bit images white.
    """
    a = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        top = 1.0 if float(np.nanmax(a, initial=0.0)) <= 1.0 else 255.0
    elif img.mode.startswith("I;16"):
        top = 65535.0
    else:  # "I": 16-bit PNGs and TIFFs can load as I; 8-bit data stays as it is
        top = 255.0 if float(a.max(initial=0.0)) <= 255.0 else 65535.0
    out = np.rint(np.clip(np.nan_to_num(a / top), 0.0, 1.0) * 255.0).astype(np.uint8)
    grey = Image.fromarray(out, "L")
    grey.info = dict(img.info)
    trns = img.info.get("transparency")
    if isinstance(trns, (int, float)):  # a tRNS grey level is in the file's own scale
        grey.info["transparency"] = round(min(max(trns / top, 0.0), 1.0) * 255.0)
    return grey


def _to_srgb(img: Image.Image, path: Path) -> Image.Image:
    """Honour an embedded ICC profile (CMYK print files, Display P3 photos) where possible."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK", "L") or "transparency" in img.info:
        return img if img.mode != "CMYK" else img.convert("RGB")
    out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(img, src, dst, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        # A broken or unsupported profile: the plain conversion is close enough for the model.
        log.warning("%s: ignoring its colour profile (%s)", path, exc)
        return img if img.mode != "CMYK" else img.convert("RGB")
    assert out is not None  # None only when converting in place
    out.info = {k: v for k, v in img.info.items() if k != "icc_profile"}
    return out


def _cut_out(
    img: Image.Image, margin: float, background: tuple[int, int, int], path: Path
) -> Image.Image:
    alpha = img.getchannel("A")
    box = alpha.point(lambda a: 255 if a > ALPHA_THRESHOLD else 0).getbbox()
    if box is None:
        raise ShapEError(
            INVALID_PARAMS,
            f"image: {path} is fully transparent: there is no object to see",
            "render with the object in view, or use an image whose object is opaque",
            "image",
        )
    flat = Image.new("RGBA", img.size, (*background, 255))
    flat.alpha_composite(img)
    obj = flat.convert("RGB").crop(box)
    side = max(obj.size)
    square = max(1, round(side * (1.0 + 2.0 * margin)))
    canvas = Image.new("RGB", (square, square), background)
    canvas.paste(obj, ((square - obj.width) // 2, (square - obj.height) // 2))
    if square > MAX_SIDE:
        canvas = canvas.resize((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return canvas


def _pad_square(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    side = max(img.size)
    canvas = Image.new("RGB", (side, side), background)
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return canvas


def save_image(path: Path, image: Image.Image) -> None:
    """A prepared image as a PNG file (the job folder's input.png)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())


def load_latents(path: str | os.PathLike[str]) -> np.ndarray:
    """A saved latent as (N, rows, cols) float32; a (rows, cols) file is one variant."""
    p = Path(path).expanduser()
    hint = "pass the latent.npy of an earlier job (in its variant folder)"
    _regular(p, "latent", hint)
    try:
        # Mapped, not read: a header that claims more than the file holds is refused here
        # instead of allocating what it claims (hundreds of GiB for a forged shape).
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # EOFError: an empty file
        raise ShapEError(
            INVALID_PARAMS,
            f"latent: cannot read {p} as a .npy array (cut short, damaged, or another kind of "
            f"file): {exc}",
            hint,
            "latent",
        ) from None
    if not isinstance(arr, np.ndarray):  # np.load opens a .npz archive (a zip) as an NpzFile
        arr.close()
        raise ShapEError(
            INVALID_PARAMS,
            f"latent: {p} is a .npz archive, not one .npy array",
            f"{hint}; to decode an array from the archive, save it alone with numpy.save",
            "latent",
        )
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.floating):
        raise ShapEError(
            INVALID_PARAMS,
            f"latent: {p} holds a {arr.dtype} array of shape {arr.shape}, not latents",
            hint,
            "latent",
        )
    most = SETTINGS["variants"].range[1]  # type: ignore[index]  # variants has a range
    if not 1 <= len(arr) <= most:
        raise ShapEError(
            INVALID_PARAMS,
            f"latent: {p} holds {len(arr)} latents; a job decodes 1 to {most}",
            "pass one variant's latent.npy, or split the array",
            "latent",
        )
    if arr[0].size > MAX_LATENT_VALUES:
        raise ShapEError(
            INVALID_PARAMS,
            f"latent: {p} holds latents of shape {arr.shape[1:]}, far larger than a Shap-E "
            "latent (1024, 1024)",
            hint,
            "latent",
        )
    # A copy, so the mapped file is let go (a file changed under a mapping kills the process).
    return np.array(arr, dtype=np.float32, order="C", copy=True)


def save_inline_image(job_dir: Path, name: str, data: str) -> Path:
    """An image sent inline (base64), written into the job folder under its own file name's
    suffix; ``prepare_image`` then reads it like any other file."""
    hint = "send the image file's bytes as standard base64"
    try:
        raw = base64.b64decode(data, validate=True)
    except (ValueError, binascii.Error):
        raise ShapEError(INVALID_PARAMS, "image_data: is not base64", hint, "image_data") from None
    if not raw:
        raise ShapEError(INVALID_PARAMS, "image_data: is empty", hint, "image_data")
    suffix = Path(name.replace("\\", "/")).suffix.lower()
    return atomic_write(job_dir / f"source{suffix if len(suffix) <= 6 else ''}", raw)
