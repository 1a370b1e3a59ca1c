"""prepare_image on real PNG and JPEG files written in tmp_path."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shape_e_blender.core.errors import INVALID_PARAMS, ShapEError
from shape_e_blender.worker import inputs
from shape_e_blender.worker.inputs import prepare_image

RED = (255, 0, 0)
TRANSPARENT_GREEN = (0, 255, 0, 0)


def _px(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(int)


def _write_png16(path: Path, arr: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG written by hand: Pillow has no 16-bit RGB(A) mode to save one from."""
    h, w = arr.shape[:2]
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _object_png(
    path: Path,
    size: tuple[int, int],
    box: tuple[int, int],
    colour: tuple[int, int, int, int],
    at: tuple[int, int],
    background: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> Path:
    """An RGBA PNG: a ``box``-sized rectangle of ``colour`` at ``at`` on a transparent image."""
    img = Image.new("RGBA", size, background)
    img.paste(Image.new("RGBA", box, colour), at)
    img.save(path)
    return path


def test_rgba_object_is_cut_out_centred_with_margin(tmp_path):
    # off-centre, top right, on green that is fully transparent
    path = _object_png(
        tmp_path / "cutout.png", (200, 100), (40, 40), (*RED, 255), (130, 10), TRANSPARENT_GREEN
    )

    out = prepare_image(path, margin=0.1)

    assert out.mode == "RGB"
    assert out.size == (48, 48)  # 40 px object + 10 % of 40 on each side
    a = _px(out)
    assert (a[4:44, 4:44] == RED).all()
    border = np.ones((48, 48), bool)
    border[4:44, 4:44] = False
    assert (a[border] == 255).all()  # white margin; the transparent green left no trace


def test_margin_zero_and_larger_margin(tmp_path):
    path = _object_png(tmp_path / "wide_object.png", (64, 64), (20, 10), (0, 0, 255, 255), (3, 40))

    tight = _px(prepare_image(path, margin=0.0))
    assert tight.shape[:2] == (20, 20)
    assert (tight[5:15] == (0, 0, 255)).all() and (tight[:5] == 255).all()

    loose = prepare_image(path, margin=0.5)
    assert loose.size == (40, 40)
    assert (_px(loose)[15:25, 10:30] == (0, 0, 255)).all()


def test_semi_transparent_edge_is_composited_on_white(tmp_path):
    path = _object_png(tmp_path / "half.png", (10, 10), (4, 4), (0, 0, 0, 128), (3, 3))
    a = _px(prepare_image(path, margin=0.0))
    assert a.shape[:2] == (4, 4)
    assert np.abs(a - 127).max() <= 1  # black at 50 % over white is mid grey


def test_rgb_wide_image_is_padded_not_cropped(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 120, 3), dtype=np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels, "RGB").save(path)

    a = _px(prepare_image(path))

    assert a.shape == (120, 120, 3)
    np.testing.assert_array_equal(a[40:80], pixels)  # every original pixel, unmoved
    assert (a[:40] == 255).all() and (a[80:] == 255).all()


def test_opaque_rgba_is_treated_like_rgb(tmp_path):
    pixels = np.zeros((30, 10, 4), np.uint8)
    pixels[..., 1] = 200
    pixels[..., 3] = 255
    path = tmp_path / "opaque.png"
    Image.fromarray(pixels, "RGBA").save(path)
    a = _px(prepare_image(path, margin=0.3))
    assert a.shape == (30, 30, 3)  # padded only: no margin added around an opaque picture
    assert (a[:, 10:20] == (0, 200, 0)).all()


def test_greyscale_8bit(tmp_path):
    g = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))  # 8 x 16
    path = tmp_path / "grey.png"
    Image.fromarray(g, "L").save(path)
    a = _px(prepare_image(path))
    assert a.shape == (16, 16, 3)
    np.testing.assert_array_equal(a[4:12, :, 0], g)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


def test_greyscale_16bit_is_scaled_not_clipped(tmp_path):
    levels = np.array([0, 1, 100, 128, 200, 255])
    g16 = np.tile((levels * 257).astype(np.uint16), (6, 1))
    g16[5, :] = 65535
    path = tmp_path / "grey16.png"
    Image.fromarray(g16).save(path)
    assert Image.open(path).mode == "I;16"  # what Pillow opens a 16-bit grey PNG as

    a = _px(prepare_image(path))

    np.testing.assert_array_equal(a[0, :, 0], levels)
    assert (a[5, :, 0] == 255).all()


def test_rgba_16bit_png(tmp_path):
    # Pillow 13 opens 16-bit RGBA PNGs as 8-bit RGBA (most significant byte): check the levels.
    arr = np.zeros((20, 20, 4), np.uint16)
    arr[5:15, 5:15] = (65535, 100 * 257, 0x80FF, 65535)
    path = tmp_path / "rgba16.png"
    _write_png16(path, arr, color_type=6)
    assert Image.open(path).mode == "RGBA"

    a = _px(prepare_image(path, margin=0.0))

    assert a.shape == (10, 10, 3)
    assert (a == (255, 100, 128)).all()


def test_rgb_16bit_png(tmp_path):
    arr = np.full((4, 8, 3), 65535, np.uint16)
    arr[:, :4] = (0, 30 * 257, 250 * 257)
    path = tmp_path / "rgb16.png"
    _write_png16(path, arr, color_type=2)
    a = _px(prepare_image(path))
    assert a.shape == (8, 8, 3)
    assert (a[2:6, :4] == (0, 30, 250)).all()


def test_palette_with_transparency(tmp_path):
    pal = Image.new("P", (30, 30), 0)
    pal.putpalette([0, 255, 0] + [0, 0, 255] + [0, 0, 0] * 254)
    pal.paste(1, (20, 5, 26, 17))  # a 6 x 12 blue bar; index 0 (green) is transparent
    path = tmp_path / "palette.png"
    pal.save(path, transparency=0)
    assert Image.open(path).mode == "P"

    a = _px(prepare_image(path, margin=0.0))

    assert a.shape == (12, 12, 3)
    assert (a[:, 3:9] == (0, 0, 255)).all()
    assert (a[:, :3] == 255).all() and (a[:, 9:] == 255).all()


def test_rgb_with_trns_colour_key(tmp_path):
    img = Image.new("RGB", (16, 16), (10, 20, 30))
    img.paste((200, 0, 0), (2, 2, 6, 10))
    path = tmp_path / "keyed.png"
    img.save(path, transparency=(10, 20, 30))
    a = _px(prepare_image(path, margin=0.0))
    assert a.shape == (8, 8, 3)
    assert (a[:, 2:6] == (200, 0, 0)).all() and (a[:, :2] == 255).all()


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (16, 16), (255, 0, 0, 0))  # pure cyan ink
    path = tmp_path / "cmyk.jpg"
    img.save(path, quality=100)
    assert Image.open(path).mode == "CMYK"
    a = _px(prepare_image(path))
    assert np.abs(a - (0, 255, 255)).max() <= 3


def test_exif_orientation_is_applied(tmp_path):
    # Stored 80 wide x 40 high with red on the left; orientation 6 means "rotate 90 clockwise
    # to display", so the picture is 40 wide x 80 high with red at the top.
    img = Image.new("RGB", (80, 40), (255, 255, 255))
    img.paste(RED, (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)

    a = _px(prepare_image(path))

    assert a.shape == (80, 80, 3)
    top, bottom = a[5:35, 25:55], a[45:75, 25:55]  # the picture spans columns 20..60
    assert np.abs(top - RED).max() < 20
    assert np.abs(bottom - 255).max() < 20


def test_large_image_is_downscaled(tmp_path):
    path = _object_png(tmp_path / "big.png", (3000, 1000), (1500, 900), (*RED, 255), (100, 50))
    out = prepare_image(path, margin=0.0)
    assert max(out.size) <= inputs.MAX_SIDE
    assert out.size[0] == out.size[1]
    a = _px(out)
    assert (a[a.shape[0] // 2, 5 : a.shape[1] - 5] == RED).all()


def test_decompression_bomb_is_refused_clearly(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100), RED).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10 000 px is over twice the limit
    with pytest.raises(ShapEError) as err:
        prepare_image(path)
    assert err.value.field == "image" and err.value.code == INVALID_PARAMS
    assert "too large" in err.value.message and "megapixels" in err.value.hint


def test_decompression_bomb_warning_still_loads(tmp_path, monkeypatch, caplog):
    path = tmp_path / "warn.png"
    Image.new("RGB", (40, 40), RED).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 px: a warning, not an error
    out = prepare_image(path)
    assert out.size == (40, 40)
    assert any("downscaled" in r.getMessage() for r in caplog.records)


def test_fully_transparent_image_is_an_error(tmp_path):
    path = tmp_path / "empty.png"
    Image.new("RGBA", (32, 32), (255, 0, 0, 3)).save(path)  # alpha below the threshold
    with pytest.raises(ShapEError) as err:
        prepare_image(path)
    assert err.value.field == "image" and err.value.code == INVALID_PARAMS
    assert "fully transparent" in err.value.message and err.value.hint


def test_missing_file_names_the_field_and_path(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ShapEError) as err:
        prepare_image(path)
    assert err.value.field == "image"
    assert str(path) in err.value.message and err.value.hint


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is text")
    with pytest.raises(ShapEError) as err:
        prepare_image(path)
    assert err.value.field == "image" and "not an image" in err.value.message


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ShapEError) as err:
        prepare_image(tmp_path)
    assert err.value.field == "image" and "folder" in err.value.message


@pytest.mark.parametrize("rows", [0, 17])
def test_a_latent_file_with_no_latent_or_more_than_a_job_decodes_is_refused(tmp_path, rows):
    """Zero rows used to crash the engine (IndexError); 17 decoded with no cap."""
    path = tmp_path / "latent.npy"
    np.save(path, np.zeros((rows, 4, 8), np.float32))
    with pytest.raises(ShapEError) as info:
        inputs.load_latents(path)
    assert info.value.field == "latent" and f"holds {rows} latents" in info.value.message


def test_a_latent_file_of_one_to_sixteen_rows_loads(tmp_path):
    path = tmp_path / "latent.npy"
    np.save(path, np.zeros((16, 4, 8), np.float64))
    assert inputs.load_latents(path).shape == (16, 4, 8)
    np.save(path, np.zeros((4, 8), np.float32))
    assert inputs.load_latents(path).shape == (1, 4, 8)


def test_a_fifo_or_a_device_is_refused_before_it_is_opened(tmp_path):
    """Opening a FIFO blocked the job (and the queue behind it); /dev/zero read as "not found"."""
    import os

    fifo = tmp_path / "chair.png"
    os.mkfifo(fifo)
    for call, field in ((inputs.prepare_image, "image"), (inputs.load_latents, "latent")):
        with pytest.raises(ShapEError) as info:
            call(fifo)  # returns at once: nothing opens the FIFO
        assert info.value.field == field and "not a regular file" in info.value.message
    with pytest.raises(ShapEError) as info:
        inputs.load_latents("/dev/zero")
    assert "not a regular file" in info.value.message and "not found" not in info.value.message


def _archive(path: Path) -> None:
    with path.open("wb") as f:  # a file object: savez would add .npz to a name
        np.savez(f, latent=np.zeros((4, 8), np.float32))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _forged_header(path: Path) -> None:
    """A .npy header that promises 596 GiB in a 100-byte file."""
    with path.open("wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (16, 100_000, 100_000)}
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(64))


def _too_large(path: Path) -> None:
    np.save(path, np.zeros((1, 4096, 2048), np.float16))


@pytest.mark.parametrize(
    ("write", "says"),
    [
        (_archive, "is a .npz archive, not one .npy array"),
        (_empty, "cannot read"),
        (_forged_header, "cannot read"),
        (_too_large, "far larger than a Shap-E latent"),
    ],
)
def test_a_latent_that_is_an_archive_empty_forged_or_far_too_large_is_refused(
    tmp_path, write, says
):
    """An .npz reached the engine as an NpzFile (AttributeError), an empty file raised EOFError,
    and a forged header made numpy allocate what it claimed (MemoryError): internal errors."""
    path = tmp_path / "latent.npy"
    write(path)
    with pytest.raises(ShapEError) as info:
        inputs.load_latents(path)
    assert info.value.field == "latent" and info.value.code == INVALID_PARAMS
    assert info.value.message.startswith("latent: ") and says in info.value.message


def test_a_loaded_latent_is_a_copy_the_file_can_change_under(tmp_path):
    """The file is read mapped (so a forged size is found before allocating); what the job
    decodes must not stay mapped: a file truncated under a mapping kills the process."""
    path = tmp_path / "latent.npy"
    np.save(path, np.asfortranarray(np.arange(32, dtype=np.float64).reshape(4, 8)))
    latents = inputs.load_latents(path)
    path.write_bytes(b"")
    assert latents.dtype == np.float32 and latents.flags.c_contiguous and latents.base is None
    assert latents[0, 3, 7] == 31.0


@pytest.mark.parametrize("call", [inputs.prepare_image, inputs.load_latents])
def test_input_paths_the_os_cannot_look_up_are_refused_with_the_reason(tmp_path, call):
    """A name too long for the file system raised OSError from exists(): an internal error."""
    field = "image" if call is inputs.prepare_image else "latent"
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for path, reason in ((tmp_path / ("y" * 300), "File name too long"), (loop, "loops")):
        with pytest.raises(ShapEError) as info:
            call(path)
        assert info.value.field == field and reason in info.value.message
