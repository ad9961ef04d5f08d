from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from img2img.config.limits import ImageLimits
from img2img.errors import InvalidImage
from img2img.intake.images import decode_image, encode_png, fit_to_shape


def encoded(
    size: tuple[int, int],
    fmt: str = "PNG",
    color: tuple[int, int, int] = (200, 10, 10),
    **save: Any,
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt, **save)
    return buffer.getvalue()


LIMITS = ImageLimits()


def test_png_and_jpeg_decode_to_rgb() -> None:
    for fmt in ("PNG", "JPEG", "WEBP"):
        image = decode_image(encoded((40, 30), fmt), LIMITS)
        assert image.mode == "RGB" and image.size == (40, 30)


def _png_of(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _grey16(level: int) -> Image.Image:
    image = Image.new("I;16", (20, 20))
    image.putdata([level] * 400)
    return image


@pytest.mark.parametrize(
    ("mode", "image", "fmt", "pixel"),
    [
        ("L", Image.new("L", (20, 20), 100), "PNG", (100, 100, 100)),
        ("LA", Image.new("LA", (20, 20), (100, 30)), "PNG", (100, 100, 100)),
        ("P", Image.new("RGB", (20, 20), (0, 204, 51)).convert("P"), "PNG", (0, 204, 51)),
        ("RGBA", Image.new("RGBA", (20, 20), (1, 2, 3, 100)), "PNG", (1, 2, 3)),
        ("CMYK", Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG", (255, 0, 0)),
        # 16-bit grey scaled to 8 bits: 40000 / 65535 of white is 155 / 255, not clipped.
        ("I;16", _grey16(40000), "PNG", (155, 155, 155)),
        ("I;16 dark", _grey16(1285), "PNG", (5, 5, 5)),
    ],
)
def test_every_accepted_mode_becomes_rgb_with_its_colours(
    mode: str, image: Image.Image, fmt: str, pixel: tuple[int, int, int]
) -> None:
    data = _png_of(image, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode.split()[0]  # the file really is that mode
    decoded = decode_image(data, LIMITS)
    assert decoded.mode == "RGB" and decoded.size == (20, 20)
    got = decoded.getpixel((10, 10))
    assert isinstance(got, tuple)
    assert all(abs(a - b) <= 2 for a, b in zip(got, pixel, strict=True)), (mode, got)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), LIMITS).size == (20, 40)


def test_empty_object_is_refused() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"", LIMITS)


def test_non_image_is_refused_naming_the_accepted_formats() -> None:
    with pytest.raises(InvalidImage, match=r"match no known image format.*JPEG"):
        decode_image(b"%PDF-1.7 hello", LIMITS)


def test_truncated_image_is_refused_as_corrupt() -> None:
    data = encoded((64, 64), "JPEG", quality=95)
    with pytest.raises(InvalidImage, match="corrupt"):
        decode_image(data[: len(data) // 2], LIMITS)


def test_too_many_pixels_is_refused_before_decoding() -> None:
    limits = ImageLimits(max_pixels=100 * 100)
    with pytest.raises(InvalidImage, match="101x100 = 10100 pixels; the limit is 10000"):
        decode_image(encoded((101, 100)), limits)


def test_too_many_bytes_is_refused() -> None:
    data = encoded((50, 50))
    with pytest.raises(InvalidImage, match=f"{len(data)} bytes; the limit is 10"):
        decode_image(data, ImageLimits(max_bytes=10))


def test_tiny_and_unaccepted_formats_are_refused() -> None:
    with pytest.raises(InvalidImage, match="at least 8 pixels"):
        decode_image(encoded((4, 40)), LIMITS)
    # Only the accepted formats' readers are tried: a BMP (or an EPS, whose reader runs
    # Ghostscript) is never opened by its own plugin.
    with pytest.raises(InvalidImage, match=r"match no known image format \(accepted: JPEG"):
        decode_image(encoded((20, 20), "BMP"), LIMITS)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
    with pytest.raises(InvalidImage, match="match no known image format"):
        decode_image(eps, LIMITS)
    with pytest.raises(InvalidImage, match=r"match no known image format \(accepted: PNG\)"):
        decode_image(encoded((20, 20), "JPEG"), LIMITS.model_copy(update={"formats": ("PNG",)}))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with no pixel data at all."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_by_the_projects_rule_from_the_header() -> None:
    # 30000 x 30000 = 900 MP: over Pillow's own guard (179 MP), which must not be the one
    # that answers; the 40 MP rule names the figures.
    with pytest.raises(InvalidImage, match="30000x30000 = 900000000 pixels; the limit is 40000000"):
        decode_image(png_header_only(30000, 30000), LIMITS)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_heic_and_avif_are_accepted(fmt: str) -> None:
    from img2img.intake.images import _register_heif

    assert _register_heif()
    image = decode_image(encoded((48, 32), fmt), LIMITS)
    assert image.mode == "RGB" and image.size == (48, 32)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_an_animation_gives_its_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (24, 16), c) for c in ((250, 0, 0), (0, 0, 250))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=100)
    image = decode_image(buffer.getvalue(), LIMITS)
    red, _green, blue = image.getpixel((12, 8))  # type: ignore[misc]
    assert image.size == (24, 16) and red > 200 and blue < 50


def test_fit_to_shape_gives_exactly_the_stage_shape_and_keeps_the_centre() -> None:
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 200, 100))  # a white centre square
    fitted = fit_to_shape(image, 64, 64)
    assert fitted.size == (64, 64)
    assert fitted.getpixel((32, 32)) == (255, 255, 255)
    left = fitted.getpixel((1, 32))
    assert isinstance(left, tuple) and left[0] > 200  # the crop took the centre, not the sides


def test_encode_png_round_trips() -> None:
    image = Image.new("RGB", (16, 8), (9, 8, 7))
    assert Image.open(io.BytesIO(encode_png(image))).getpixel((3, 3)) == (9, 8, 7)
