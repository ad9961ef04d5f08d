"""Decoding uploads safely and shaping them for stage 1; encoding results."""

from __future__ import annotations

import io
import threading
from functools import cache

from PIL import Image, ImageOps, UnidentifiedImageError

from img2img.config.limits import ImageLimits
from img2img.errors import InvalidImage


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode `data` into an upright RGB image, refusing anything outside `limits`.

    The size and pixel checks run on the header, before any pixel is decoded, so a
    decompression bomb costs a few hundred bytes of reading and is refused by the project's
    own rule (`limits.max_pixels`), not by Pillow's. Animated images (GIF, WebP) give their
    first frame; HEIC/HEIF needs pillow-heif, which is registered on first use.
    """
    if not data:
        raise InvalidImage("object is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"object is {len(data)} bytes; the limit is {limits.max_bytes}")
    _register_heif()
    try:
        image = _open_header(data, openable(limits.formats))
    except UnidentifiedImageError as exc:
        raise InvalidImage(
            f"not a readable image: {len(data)} bytes starting {data[:8]!r} match no known "
            f"image format (accepted: {', '.join(limits.formats)})"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # a header cut short or malformed
        raise InvalidImage(f"image data is corrupt: {exc}") from exc
    if image.format not in limits.formats:
        raise InvalidImage(
            f"image format {image.format} is not accepted; expected one of {list(limits.formats)}"
        )
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InvalidImage(
            f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}"
        )
    if min(width, height) < limits.min_side:
        raise InvalidImage(
            f"image is {width}x{height}; each side must be at least {limits.min_side} pixels"
        )
    try:
        image.seek(0)  # the first frame of an animation
        image.load()
        upright = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt pixel data
        raise InvalidImage(f"image data is corrupt: {exc}") from exc
    return to_rgb(upright)


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB. Pillow's own conversion clips 16-bit grey levels at 255 (a 16-bit
    PNG of mid grey would turn white), so 16-bit grey (Pillow's `I;16` modes, and `I`, which
    older Pillows open such PNGs as) is scaled to 8 bits first: 65535 → 255."""
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    if image.mode == "I":
        image = image.point(lambda v: v / 257).convert("L")
    return image.convert("RGB")


_open_lock = threading.Lock()


def openable(formats: tuple[str, ...]) -> list[str]:
    """The accepted formats this Pillow can open (HEIF only with pillow-heif registered)."""
    Image.init()
    return [f for f in formats if f.upper() in Image.OPEN]


def _open_header(data: bytes, formats: list[str]) -> Image.Image:
    """`Image.open` (which reads the header only) trying only the accepted formats' readers
    (an upload never reaches another of Pillow's plugins, such as EPS, which runs
    Ghostscript), with Pillow's own decompression-bomb guard off, so the caller's pixel
    limit is the one that refuses a large image, with its own message. The guard is a
    module global: the lock keeps other decodes in this process from running without it."""
    if not formats:
        raise UnidentifiedImageError("no accepted format can be opened here")
    with _open_lock:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(io.BytesIO(data), formats=formats)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@cache
def _register_heif() -> bool:
    """Teach Pillow HEIC/HEIF (what phones upload), once per process; False without
    pillow-heif, in which case such an upload is refused as an unknown format."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def fit_to_shape(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop `image` to the aspect of width × height, then resize to exactly that.

    Stage 1 runs at one static shape; this is the one explicit place where an upload is
    brought to it, so nothing downstream ever runs at another shape.
    """
    return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)


def encode_png(image: Image.Image) -> bytes:
    """Losslessly encode a result."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
